"""Per-example activations and backprop signals of `eqx.nn.Linear` layers, and the sums
Σ_b log(1 − β s δ_b a_bᵀ) computed from them without any B×N tensor:

- the series −Σ_m (βs)^m/m ⊙ (D^{∘m})ᵀ(A^{∘m}), odd and even orders one matmul each;
- the exact sum, scanning over groups of examples (one log per parameter and group where the
  factors are close to 1).

For a dense layer y = W a + b the per-example weight gradient is the outer product
g_b = δ_b a_bᵀ (δ_b = ∂ℓ_b/∂y). The taps are read by replacing every `eqx.nn.Linear` by a
wrapper that records its input and adds a zero perturbation to its output; the gradient of the
loss with respect to that perturbation is δ_b.
"""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array

from ._loglik_core import count_true, leaf_stats, log1m
from ._split import merge

MAX_TERMS = 64
GROUP = 16
"""Examples per group of [`exact_sum`][] (one log per parameter per group when small)."""


def is_linear(node: Any) -> bool:
    return isinstance(node, eqx.nn.Linear)


def linear_nodes(tree: Any) -> list:
    """Every `eqx.nn.Linear` in `tree`, in flattening order."""
    return [n for n in jtu.tree_leaves(tree, is_leaf=is_linear) if is_linear(n)]


class _Sink:
    """Collects the inputs seen by the taps during one trace (hashed by identity)."""

    def __init__(self):
        self.inputs: dict[int, list] = {}


class _Tap(eqx.Module):
    linear: eqx.nn.Linear
    perturbation: Array
    index: int = eqx.field(static=True)
    sink: _Sink = eqx.field(static=True)

    def __call__(self, x, *, key=None):
        self.sink.inputs.setdefault(self.index, []).append(x)
        return self.linear(x, key=key) + self.perturbation


def _tapped_loss(loss_fn, static, indices, sinks):
    def single(perturbations, params, x, y):
        sink = _Sink()
        sinks.append(sink)
        model = merge(params, static)
        nodes = linear_nodes(model)
        taps = [_Tap(nodes[i], q, i, sink) for i, q in zip(indices, perturbations)]
        model = eqx.tree_at(lambda m: [linear_nodes(m)[i] for i in indices], model, taps)
        loss = loss_fn(model, x, y)
        inputs = [sink.inputs.get(i, [None])[0] for i in indices]
        return loss, inputs

    return single


def tappable_layers(loss_fn, params, static, x, y) -> list[int]:
    """Indices of the Linear layers (with a 2-D weight parameter) that are called exactly once
    per example on a vector; found by tracing one example (no FLOPs)."""
    nodes = linear_nodes(merge(params, static))
    pnodes = linear_nodes(params)
    if len(pnodes) != len(nodes):
        return []
    candidates = [
        i for i, n in enumerate(pnodes) if n.weight is not None and jnp.ndim(n.weight) == 2
    ]
    if not candidates:
        return []
    sinks: list = []
    zeros = [jnp.zeros(nodes[i].weight.shape[0], nodes[i].weight.dtype) for i in candidates]
    x0, y0 = jtu.tree_map(lambda a: a[0], x), jtu.tree_map(lambda a: a[0], y)
    jax.eval_shape(_tapped_loss(loss_fn, static, candidates, sinks), zeros, params, x0, y0)
    seen = sinks[0].inputs
    return [
        i
        for i in candidates
        if len(seen.get(i, [])) == 1
        and seen[i][0].shape == (nodes[i].weight.shape[1],)
        and seen[i][0].dtype == nodes[i].weight.dtype
    ]


def taps(loss_fn, params, static, x, y, indices: list[int]):
    """Per-example `(D, A)` for each tapped layer: D (batch, out) = δ_b, A (batch, in) = a_b."""
    nodes = linear_nodes(params)
    zeros = [jnp.zeros(nodes[i].weight.shape[0], nodes[i].weight.dtype) for i in indices]
    single = _tapped_loss(loss_fn, static, indices, [])
    grad = jax.grad(single, has_aux=True)
    deltas, inputs = jax.vmap(grad, in_axes=(None, None, 0, 0))(zeros, params, x, y)
    return list(zip(deltas, inputs))


def series_bound(beta, D: Array, A: Array) -> Array:
    """U = β·max_b ‖δ_b‖∞‖a_b‖∞ ≥ max |β s g| over the layer's weights."""
    return beta * jnp.max(jnp.max(jnp.abs(D), axis=1) * jnp.max(jnp.abs(A), axis=1))


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


_BLOCK = 8
"""Orders per matmul block; more than `_BLOCK` orders are added in a loop over blocks."""


def _fixed_series(D, A, terms: int):
    """(P_odd, P_even) for exactly `terms` orders (static), unrolled in blocks."""
    P_odd = P_even = jnp.zeros((D.shape[1], A.shape[1]), D.dtype)
    Dm, Am = jnp.ones_like(D), jnp.ones_like(A)
    for first in range(0, terms, _BLOCK):
        o, e, Dm, Am = _orders(D, A, Dm, Am, first, min(_BLOCK, terms - first))
        P_odd, P_even = P_odd + o, P_even + e
    return P_odd, P_even


def _looped_series(D, A, terms: Array):
    """(P_odd, P_even) for a traced number of orders: whole blocks of `_BLOCK` orders in a
    `fori_loop` (at most `_BLOCK` − 1 orders more than `terms`)."""

    def block(i, carry):
        P_odd, P_even, Dm, Am = carry
        o, e, Dm, Am = _orders(D, A, Dm, Am, i * _BLOCK, _BLOCK)
        return P_odd + o, P_even + e, Dm, Am

    zeros = jnp.zeros((D.shape[1], A.shape[1]), D.dtype)
    init = (zeros, zeros, jnp.ones_like(D), jnp.ones_like(A))
    blocks = (terms + _BLOCK - 1) // _BLOCK
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
    [`series_order`][], at most `_BLOCK`) picks one of `_BLOCK` unrolled branches
    (`lax.switch`). Only valid where U = [`series_bound`][] < 1.
    """
    D, A = _rescaled(D, A, beta)
    if isinstance(terms, int):
        return _signed(s, *_fixed_series(D, A, terms))
    branches = [lambda D, A, t=t: _fixed_series(D, A, t) for t in range(1, _BLOCK + 1)]
    index = jnp.clip(terms, 1, _BLOCK) - 1
    return _signed(s, *jax.lax.switch(index, branches, D, A))


def looped_series_sum(D: Array, A: Array, s: Array, beta, terms: Array) -> Array:
    """[`series_sum`][] for a traced number of orders beyond `_BLOCK`: whole blocks of
    `_BLOCK` orders in a `fori_loop` (at most `_BLOCK` − 1 orders more than `terms`)."""
    D, A = _rescaled(D, A, beta)
    return _signed(s, *_looped_series(D, A, terms))


def _groups(D: Array, A: Array, beta):
    """The taps in groups of `GROUP` examples (zero rows pad the last group: u = 0 there) and
    each group's bound U_g = β max_b ‖δ_b‖∞‖a_b‖∞."""
    n = D.shape[0]
    num = -(-n // GROUP)
    pad = ((0, num * GROUP - n), (0, 0))
    D = jnp.pad(D, pad).reshape(num, GROUP, -1)
    A = jnp.pad(A, pad).reshape(num, GROUP, -1)
    U = beta * jnp.max(jnp.max(jnp.abs(D), axis=2) * jnp.max(jnp.abs(A), axis=2), axis=1)
    return D, A, U


def _u(beta, s, d, a):
    """u = β s g for one example, rounded like β·s·g with g = δ aᵀ (the per-example
    gradient), so that the methods agree to the last bit where it matters."""
    return (beta * s.astype(d.dtype)) * (d[:, None] * a[None, :])


def _per_example(beta, s, D, A, carry):
    """Add log(1 − u_b) to `sums` and fold u_b into the running elementwise max `top`, one
    example at a time (a `lax.scan` over the rows of D, A: memory O(N))."""

    def body(carry, da):
        sums, top = carry
        u = _u(beta, s, *da)
        return (sums + log1m(u), jnp.maximum(top, u)), None

    return jax.lax.scan(body, carry, (D, A))[0]


def exact_sum(D: Array, A: Array, s: Array, beta):
    """Exact Σ_b log(1 − β s_{kj} δ_{bk} a_{bj}) with the max of u and the invalid mask,
    scanning over groups of `GROUP` examples (extra memory O(N); no truncation).

    A group whose bound U_g = β max_b ‖δ_b‖∞‖a_b‖∞ satisfies `GROUP`·U_g ≤ 1/4 takes ONE log
    per parameter: the product Π_b (1 − u_b) = 1 + v is accumulated as
    v ← v − u_b (1 + v), which keeps the small terms exact, then log1p(v). Every factor is in
    [1 − 1/64, 1 + 1/64], so no expert can be pruned or invalid there and the rounding error
    is at most ≈ 2·`GROUP`·ε·Σ_b|u_b| (about the error of summing the per-example logs).
    Any other group takes the log of every factor ([`log1m`][]: exact pruning at u = 1, the
    floor at ε) and tracks the elementwise max of u (u > 1: an invalid expert).

    **Returns:** `(sums, max_u, bad)`; `max_u` is exact over the per-factor groups and the
    bound U_g (< 1) over the others.
    """
    dtype = D.dtype
    beta = jnp.asarray(beta, dtype)
    D, A, U = _groups(D, A, beta)
    fast = U * GROUP <= 0.25

    def product(carry, d, a):
        sums, top = carry
        v = -_u(beta, s, d[0], a[0])
        for b in range(1, GROUP):
            v = v - _u(beta, s, d[b], a[b]) * (1 + v)
        return sums + jnp.log1p(v), top

    def body(carry, inputs):
        d, a, f = inputs
        per_factor = lambda carry, d, a: _per_example(beta, s, d, a, carry)
        return jax.lax.cond(f, product, per_factor, carry, d, a), None

    zeros = jnp.zeros(s.shape, dtype)
    sums, top = jax.lax.scan(body, (zeros, zeros), (D, A, fast))[0]
    max_u = jnp.maximum(jnp.max(top, initial=0.0), jnp.max(jnp.where(fast, U, 0)))
    return sums, max_u, top > 1


def exact_max(D: Array, A: Array, s: Array, beta):
    """The exact max of u = β s_{kj} δ_{bk} a_{bj} (at least 0) and how many weights have
    some u > 1 (invalid experts), one example at a time, without logs."""
    dtype = D.dtype
    beta = jnp.asarray(beta, dtype)

    def body(top, da):
        return jnp.maximum(top, _u(beta, s, *da)), None

    top = jax.lax.scan(body, jnp.zeros(s.shape, dtype), (D, A))[0]
    return jnp.max(top, initial=0.0), count_true(top > 1)


def bias_stats(D: Array, s: Array, beta):
    """Exact Σ_b log(1 − β s δ_b) for a bias (its gradient is δ_b)."""
    return leaf_stats(D, s, beta)
