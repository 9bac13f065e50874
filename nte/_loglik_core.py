"""Elementwise core of the NTE likelihood: log(1 − β s g) with pruning and the invalid policy.

Shared by [`nte.scale_by_nte`][] (per-example gradients given) and
[`nte.expert_log_likelihoods`][] (gradients computed here, possibly in chunks or by series).
"""

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, Bool, PyTree

from ._errors import check_choice

EPS = 1e-6
"""The ε of the invalid-expert policies: arguments of the log are floored at ε, and
`invalid="cap"` caps β so that the largest β·s·g of the step is 1 − ε."""

INVALID_POLICIES = ("cap", "floor", "raise")


class Stats(NamedTuple):
    """Sums over examples of one pass: `sums` is Σ_b log(1 − u_b) (params-shaped), `max_u` the
    largest u = β s g seen, `bad` marks elements with some u > 1 (invalid expert)."""

    sums: PyTree
    max_u: Array
    bad: PyTree


def log1m(u: Array) -> Array:
    """log(1 − u) elementwise: −inf at u = 1 exactly (pruning), log ε wherever 1 − u < ε."""
    safe = jnp.minimum(u, 1 - EPS)
    return jnp.where(u == 1, -jnp.inf, jnp.log1p(-safe))


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


def tree_stats(grads: PyTree, signs: PyTree, beta, weight: Array | None = None) -> Stats:
    """[`leaf_stats`][] on every leaf of a per-example gradient tree (`None` leaves kept)."""
    g_leaves, treedef = jtu.tree_flatten(grads)
    s_leaves = treedef.flatten_up_to(signs)
    out = [leaf_stats(g, s, beta, weight) for g, s in zip(g_leaves, s_leaves)]
    sums = treedef.unflatten([o[0] for o in out])
    bad = treedef.unflatten([o[2] for o in out])
    max_u = max_of([o[1] for o in out])
    return Stats(sums, max_u, bad)


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
    """β for this step under `invalid="cap"`: β(1 − ε)/max_u when max_u = max β s g > 1."""
    beta = jnp.asarray(beta, jnp.result_type(max_u, float))
    return jnp.where(max_u > 1, beta * (1 - EPS) / jnp.maximum(max_u, 1), beta)


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


def maybe_raise(tree: PyTree, num_invalid: Array, invalid: str) -> PyTree:
    """Under `invalid="raise"`, raise (also under jit, via `eqx.error_if`) if any expert is
    invalid."""
    if invalid != "raise":
        return tree
    return eqx.error_if(
        tree,
        num_invalid > 0,
        "invalid experts: 1 − β·s·g < 0 for some parameter; `inv_temperature` (β) is too large "
        "for this batch (use invalid='cap' or 'floor', or a smaller β).",
    )


def check_invalid(invalid) -> None:
    check_choice(invalid, INVALID_POLICIES, "invalid")


def likelihood_from_grads(grads: PyTree, signs: PyTree, beta, eta, invalid: str):
    """L = η Σ_b log(1 − β s g_b) from materialized per-example gradients.

    **Returns:** `(L, num_invalid, beta_used)`.
    """
    stats = tree_stats(grads, signs, beta)
    beta_used = jnp.asarray(beta, stats.max_u.dtype)
    sums = stats.sums
    if invalid == "cap":
        beta_used = capped_beta(beta, stats.max_u)
        sums = jax.lax.cond(
            stats.max_u > 1,
            lambda: tree_stats(grads, signs, beta_used).sums,
            lambda: stats.sums,
        )
    num_invalid = count(stats.bad)
    loglik = jtu.tree_map(lambda t: (jnp.asarray(eta, t.dtype) * t).astype(t.dtype), sums)
    return maybe_raise(loglik, num_invalid, invalid), num_invalid, beta_used
