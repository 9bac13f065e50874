"""`Series`: the sums of a dense layer's weights as a power series, one matmul per parity."""

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array

from ._chunked import check_chunk_size
from ._kernels import exact_sum, layer_bound
from ._layers import AbstractTappedMethod

MAX_TERMS = 64
"""The most orders of the adaptive series."""

BLOCK = 8
"""Orders per matmul block; more than `BLOCK` orders are added in a loop over blocks."""


def series_order(bound: Array, dtype) -> Array:
    """The fewest orders M ≤ `MAX_TERMS` whose truncation bound U^M/((M+1)(1−U)) (relative to
    Σ_b|u_b|) is below the dtype's epsilon (`MAX_TERMS` if none is)."""
    U = jnp.minimum(jnp.asarray(bound, dtype), jnp.asarray(0.999, dtype))
    m = jnp.arange(1, MAX_TERMS + 1, dtype=dtype)
    ok = U**m / ((m + 1) * (1 - U)) <= jnp.finfo(dtype).eps
    return jnp.where(jnp.any(ok), jnp.argmax(ok) + 1, MAX_TERMS)


def _orders(D, A, Dm, Am, first, count: int):
    """Orders m = first+1 … first+count (`first` even, possibly traced), given
    Dm = D^{∘first}, Am = A^{∘first}: `(P_odd, P_even, Dm', Am')` with
    P = Σ_m (D^{∘m}/m)ᵀ A^{∘m} over the odd / even orders. Each is ONE matmul over the powers
    stacked along the batch axis (same FLOPs as one matmul per order, fewer passes over N)."""
    dtype = D.dtype
    odd, even = [], []
    for i in range(1, count + 1):
        Dm, Am = Dm * D, Am * A
        (odd if i % 2 else even).append((Dm / jnp.asarray(first + i, dtype), Am))

    def contract(pairs):
        if not pairs:
            return jnp.zeros((D.shape[1], A.shape[1]), dtype)
        Ds = jnp.concatenate([d for d, _ in pairs])
        As = jnp.concatenate([a for _, a in pairs])
        return jnp.matmul(Ds.T, As, precision=jax.lax.Precision.HIGHEST)

    return contract(odd), contract(even), Dm, Am


def _fixed_series(D, A, terms: int):
    """(P_odd, P_even) for exactly `terms` orders (static), unrolled in blocks."""
    P_odd = P_even = jnp.zeros((D.shape[1], A.shape[1]), D.dtype)
    Dm, Am = jnp.ones_like(D), jnp.ones_like(A)
    for first in range(0, terms, BLOCK):
        o, e, Dm, Am = _orders(D, A, Dm, Am, first, min(BLOCK, terms - first))
        P_odd, P_even = P_odd + o, P_even + e
    return P_odd, P_even


def _looped_series(D, A, terms: Array):
    """(P_odd, P_even) for a traced number of orders: whole blocks of `BLOCK` orders in a
    `fori_loop` (at most `BLOCK` − 1 orders more than `terms`)."""

    def block(i, carry):
        P_odd, P_even, Dm, Am = carry
        o, e, Dm, Am = _orders(D, A, Dm, Am, i * BLOCK, BLOCK)
        return P_odd + o, P_even + e, Dm, Am

    zeros = jnp.zeros((D.shape[1], A.shape[1]), D.dtype)
    init = (zeros, zeros, jnp.ones_like(D), jnp.ones_like(A))
    blocks = (terms + BLOCK - 1) // BLOCK
    return jax.lax.fori_loop(0, blocks, block, init)[:2]


def _rescaled(D: Array, A: Array, beta):
    """Per example, u_b = s ⊙ D̂_b Â_bᵀ with D̂_b = c_b δ_b/‖δ_b‖∞, Â_b = a_b/‖a_b‖∞ and
    c_b = β‖δ_b‖∞‖a_b‖∞ ≤ U: every factor is ≤ 1 in magnitude, so no power overflows."""
    d_norm = jnp.max(jnp.abs(D), axis=1, keepdims=True)
    a_norm = jnp.max(jnp.abs(A), axis=1, keepdims=True)
    d_norm, a_norm = jnp.where(d_norm > 0, d_norm, 1), jnp.where(a_norm > 0, a_norm, 1)
    return D / d_norm * (jnp.asarray(beta, D.dtype) * d_norm * a_norm), A / a_norm


def _signed(s: Array, P_odd: Array, P_even: Array) -> Array:
    sb = s.astype(P_odd.dtype)
    return -(sb * P_odd + jnp.abs(sb) * P_even)


def series_sum(D: Array, A: Array, s: Array, beta, terms: int | Array) -> Array:
    """Σ_b log(1 − β s_{kj} δ_{bk} a_{bj}) = −Σ_m (βs)^m/m ⊙ (D^{∘m})ᵀ A^{∘m}.

    As s ∈ {−1, 0, 1}, s^m is s for odd m and |s| for even m, so the sum is
    −(s ⊙ P_odd + |s| ⊙ P_even) with one matmul per parity (powers stacked along the batch).
    `terms`: an int uses exactly that many orders (unrolled); a traced count (from
    [`series_order`][], at most `BLOCK`) picks one of `BLOCK` unrolled branches
    (`lax.switch`). Only valid where U = [`layer_bound`][] < 1.
    """
    D, A = _rescaled(D, A, beta)
    if isinstance(terms, int):
        return _signed(s, *_fixed_series(D, A, terms))
    branches = [lambda D, A, t=t: _fixed_series(D, A, t) for t in range(1, BLOCK + 1)]
    index = jnp.clip(terms, 1, BLOCK) - 1
    return _signed(s, *jax.lax.switch(index, branches, D, A))


def looped_series_sum(D: Array, A: Array, s: Array, beta, terms: Array) -> Array:
    """[`series_sum`][] for a traced number of orders beyond `BLOCK`: whole blocks of
    `BLOCK` orders in a `fori_loop` (at most `BLOCK` − 1 orders more than `terms`)."""
    D, A = _rescaled(D, A, beta)
    return _signed(s, *_looped_series(D, A, terms))


def series_or_exact(D: Array, A: Array, s: Array, beta, terms: int | None, max_bound: float):
    """`(sums, max_u, bad)` of a tapped weight: the series where U < `max_bound` (adaptive
    orders, `terms=None`: only where `MAX_TERMS` orders reach the dtype's epsilon), else the
    exact [`exact_sum`][].

    One `lax.switch` on scalars picks the branch: the unrolled series (at most `BLOCK`
    orders, itself a switch over the order count), the looped series (more orders) or the
    exact pass."""
    U = layer_bound(beta, D, A)
    exact = lambda: exact_sum(D, A, s, beta)

    def by(fn, terms):
        return lambda: (fn(D, A, s, beta, terms), U.astype(D.dtype), jnp.zeros(s.shape, bool))

    if terms is not None:
        return jax.lax.cond(U < max_bound, by(series_sum, terms), exact)
    M = series_order(U, D.dtype)
    tail = U**MAX_TERMS / ((MAX_TERMS + 1) * (1 - jnp.minimum(U, 0.999)))
    ok = (U < max_bound) & (tail <= jnp.finfo(D.dtype).eps)
    branches = [by(series_sum, M), by(looped_series_sum, M), exact]
    index = jnp.where(ok, jnp.where(M <= BLOCK, 0, 1), 2)
    return jax.lax.switch(index, branches)


class Series(AbstractTappedMethod):
    """The weights of dense layers by a power series, one matmul per parity of the orders.

    For the same Linear layers as [`nte.likelihood.Chunked`][],
    Σ_b log(1 − u_b) = −Σ_m (βs)^m/m ⊙ (D^{∘m})ᵀ A^{∘m}; as s ∈ {−1, 0, 1}, s^m is s or |s|, so
    all odd orders are ONE matmul over the stacked powers, and all even orders another (memory
    O(B·width·orders)). `terms` orders, or (default) the fewest whose truncation bound
    U^M/((M+1)(1−U)) is below the dtype's epsilon, at most 64, where
    U = β max_b ‖δ_b‖∞‖a_b‖∞ ≥ |β s g|. A layer's weight falls back to the exact
    [`nte.likelihood.Chunked`][] pass (decided at run time) where U ≥ `max_bound` = 1 (the
    series diverges; pruned or invalid experts are possible) or, with adaptive orders, where 64
    orders cannot reach the dtype's epsilon (U ≳ 0.75 in float32). Biases use their exact
    per-example gradient δ_b; every other leaf uses per-example gradients in chunks. Powers
    are taken of per-example rescaled factors (all ≤ 1 in magnitude), so they never overflow.
    With U close to 1 and a small fixed `terms` the truncation error (about U^M/((M+1)(1−U))
    relative) is visible.

    See [maths: the likelihood methods](../math.md#likelihood-methods).

    **Arguments:**

    - `terms`: the number of series orders (`None`: adaptive).
    - `chunk_size`: as for [`nte.likelihood.Chunked`][].
    """

    terms: int | None = eqx.field(default=None, static=True)
    chunk_size: int | None = eqx.field(default=None, static=True)
    max_bound: ClassVar[float] = 1.0
    """The series is used where U < `max_bound` (it converges for U < 1)."""

    def __check_init__(self):
        if self.terms is not None and (
            not isinstance(self.terms, int) or isinstance(self.terms, bool) or self.terms < 1
        ):
            raise ValueError(f"`terms` must be a positive int or None, got {self.terms!r}.")
        check_chunk_size(self.chunk_size)

    def weight_stats(self, D: Array, A: Array, s: Array, beta):
        return series_or_exact(D, A, s, beta, self.terms, self.max_bound)
