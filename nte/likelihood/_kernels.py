"""The elementwise maths of the likelihood: Σ_b log(1 − u_b), u = β s g, with exact pruning.

Shared by every method: on materialized per-example gradients ([`tree_stats`][]) and on the
taps (δ_b, a_b) of a dense layer, whose per-example weight gradient is δ_b a_bᵀ
([`exact_sum`][], [`exact_max`][]). See
[maths: the likelihood methods](../math.md#likelihood-methods).
"""

import contextlib
import contextvars
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, Bool, PyTree

EPS = 1e-6
"""The ε of the invalid-expert policies: arguments of the log are floored at ε, and
`invalid="cap"` caps β so that the largest β·s·g of the step is 1 − ε."""

GROUP = 16
"""Examples per group of [`exact_sum`][] (one log per parameter per group when small)."""


class Stats(NamedTuple):
    """Sums over examples of one pass: `sums` is Σ_b log(1 − u_b), `max_u` the largest
    u = β s g seen, `bad` marks elements with some u > 1 (invalid expert). `sums` and `bad`
    are lists of arrays, one per parameter leaf of the pass."""

    sums: list
    max_u: Array
    bad: list


_FLOOR = contextvars.ContextVar("nte_likelihood_floor", default=False)
"""Whether [`log1m`][] floors its argument at ε (the `invalid="floor"` policy); read when the
sums are traced, set by [`flooring`][]."""


@contextlib.contextmanager
def flooring(floor: bool):
    """Trace the sums under `invalid="floor"` (`floor=True`) or any other policy: every
    [`log1m`][] traced inside the block floors, or not. The sums are traced synchronously
    (`lax.cond`, `lax.scan` and `lax.switch` trace their bodies when called), so the choice is
    static and needs no argument through the methods' parts."""
    token = _FLOOR.set(bool(floor))
    try:
        yield
    finally:
        _FLOOR.reset(token)


def log1m(u: Array) -> Array:
    """log(1 − u) elementwise, the factor of one example in the likelihood.

    - u < 1: the exact `log1p(−u)` (also for 1 − u < ε: no floor unless flooring);
    - u = 1 exactly: −inf (pruning, under every policy);
    - u > 1 (an invalid expert, 1 − u < 0): −inf, the expert is pruned (`invalid="prune"`;
      `"cap"` never lets u exceed 1, `"raise"` raises);
    - under [`flooring`][] (`invalid="floor"`): log ε wherever 1 − u < ε except u = 1 exactly;
    - u not finite (a NaN or infinite gradient): NaN, whatever the policy, so the caller sees it.
    """
    if _FLOOR.get():
        value = jnp.where(u == 1, -jnp.inf, jnp.log1p(-jnp.minimum(u, 1 - EPS)))
    else:
        value = jnp.where(u >= 1, -jnp.inf, jnp.log1p(-jnp.minimum(u, 1)))
    return jnp.where(jnp.isfinite(u), value, jnp.nan)


def leaf_stats(g: Array, s: Array, beta, weight: Array | None = None):
    """Sum over the leading (batch) axis of `log1m(β s g)`, the max of u and the invalid mask.

    `weight` (a bool per example) drops padded examples.
    """
    u = jnp.asarray(beta, g.dtype) * s.astype(g.dtype) * g
    terms = log1m(u)
    if weight is not None:
        w = jnp.reshape(weight, (-1,) + (1,) * (g.ndim - 1))
        terms = jnp.where(w, terms, 0)
        u = jnp.where(w, u, 0)
    return jnp.sum(terms, axis=0), jnp.max(u, initial=0.0), jnp.any(u > 1, axis=0)


def tree_stats(grads: list, signs: list, beta, weight: Array | None = None) -> Stats:
    """[`leaf_stats`][] on every per-example gradient of a list (`signs` alike)."""
    out = [leaf_stats(g, s, beta, weight) for g, s in zip(grads, signs)]
    return Stats([o[0] for o in out], max_of([o[1] for o in out]), [o[2] for o in out])


def max_of(values: list) -> Array:
    """The largest of a list of scalars (0.0 for an empty list)."""
    out = jnp.asarray(0.0)
    for v in values:
        out = jnp.maximum(out, v)
    return out


def merge_stats(a: Stats, b: Stats) -> Stats:
    """Combine the stats of two disjoint batches."""
    return Stats(
        jtu.tree_map(jnp.add, a.sums, b.sums),
        jnp.maximum(a.max_u, b.max_u),
        jtu.tree_map(jnp.logical_or, a.bad, b.bad),
    )


def capped_beta(beta, max_u: Array) -> Array:
    """β for this step under `invalid="cap"`: β(1 − ε)/max_u when max_u = max β s g > 1 is
    finite (an infinite or NaN max comes from a non-finite gradient: β is left as is and the
    sums come out NaN, see [`log1m`][])."""
    beta = jnp.asarray(beta, jnp.result_type(max_u, float))
    cap = jnp.isfinite(max_u) & (max_u > 1)  # a non-finite gradient never caps: it is reported
    return jnp.where(cap, beta * (1 - EPS) / jnp.where(cap, max_u, 1), beta)


def count_true(mask: Array) -> Array:
    """Number of True elements of a bool array, as an int32 scalar.

    Counted in float32 along the last axis (exact below 2^24 elements per row), then in int32
    over the rows: XLA's CPU backend fuses a float reduction with the comparison that makes
    `mask`, while an int32 sum first writes an int32 copy of the whole array."""
    mask = jnp.asarray(mask)
    rows = mask.reshape(-1, mask.shape[-1]) if mask.ndim else mask.reshape(1, 1)
    if rows.shape[-1] >= 2**24:
        return jnp.sum(rows, dtype=jnp.int32)
    return jnp.sum(jnp.sum(rows, axis=-1, dtype=jnp.float32).astype(jnp.int32), dtype=jnp.int32)


def count(bad: PyTree[Bool[Array, "..."]]) -> Array:
    """Number of True elements in a tree of bools, as an int32 scalar."""
    leaves = jtu.tree_leaves(bad)
    return jnp.asarray(sum((count_true(b) for b in leaves), jnp.int32(0)), jnp.int32)


# --- a dense layer from its taps: D (batch, out) = δ_b, A (batch, in) = a_b -------------------


def layer_bound(beta, D: Array, A: Array) -> Array:
    """U = β·max_b ‖δ_b‖∞‖a_b‖∞ ≥ max |β s g| over the layer's weights."""
    return beta * jnp.max(jnp.max(jnp.abs(D), axis=1) * jnp.max(jnp.abs(A), axis=1))


def _u(beta, s, d, a):
    """u = β s g for one example, rounded like β·s·g with g = δ aᵀ (the per-example
    gradient), so that the methods agree to the last bit where it matters."""
    return (beta * s.astype(d.dtype)) * (d[:, None] * a[None, :])


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
