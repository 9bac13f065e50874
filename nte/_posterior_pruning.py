"""The pruning steps of the NTE posterior update: which experts are removed, by which cause, and
increments that land the parameters exactly where λ says.

An expert is **pruned** when λ = log|Δ| = −inf: its parameter is exactly 0 (θ0 in the init
variant) and stays there. Three causes ([maths: pruning](../math.md#pruning)):

- `likelihood`: L_i = −inf, its likelihood factor 1 − β s g is 0 exactly (or ≤ 0 under
  `invalid="prune"`) on some example, so its posterior is exactly 0;
- `threshold`: its posterior weight |Δ_i|/‖Δ‖₁ fell below `prune_below`;
- `zero`: its parameter reads exactly 0 (θ0): a dead expert at init, a parameter set to 0 from
  outside, or one whose θ0 + s·exp(λ) cannot survive `optax.apply_updates` (exp(λ) underflows,
  or rounds away against θ0 or against the old parameter).
"""

from typing import NamedTuple

import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, Int, PyTree

from .likelihood._kernels import count_true


class PrunedBy(NamedTuple):
    """How many experts are pruned (λ = −inf), by the cause that pruned them; the three add up
    to `num_pruned` of [`nte.ScaleByNTEState`][]. `int32` scalars.

    **Fields:**

    - `likelihood`: the likelihood factor 1 − β s g was 0 exactly (or ≤ 0 under
      `invalid="prune"`) on some example: the posterior is exactly 0.
    - `threshold`: the posterior weight |Δ_i|/‖Δ‖₁ fell below `prune_below`.
    - `zero`: the parameter read exactly 0 (θ0 in the init variant): dead at init, set to it
      from outside, or θ0 + s·exp(λ) would not survive `optax.apply_updates` (underflow, rounding).
    """

    likelihood: Int[Array, ""]
    threshold: Int[Array, ""]
    zero: Int[Array, ""]


def count_pruned(lam: PyTree) -> Array:
    """The number of λ = −inf entries, int32."""
    leaves = jtu.tree_leaves(lam)
    return jnp.asarray(sum((count_true(v == -jnp.inf) for v in leaves), jnp.int32(0)), jnp.int32)


def _targets(params: PyTree, origin: PyTree | None) -> PyTree:
    """Where a pruned parameter sits: 0, or θ0 in the init variant."""
    return jtu.tree_map(jnp.zeros_like, params) if origin is None else origin


def _prune_where(lam: PyTree, masks: PyTree) -> tuple[PyTree, Array]:
    """λ = −inf where `masks`; the number of experts newly pruned (λ was finite)."""
    new = jtu.tree_map(lambda v, m: jnp.where(m, jnp.asarray(-jnp.inf, v.dtype), v), lam, masks)
    return new, count_pruned(new) - count_pruned(lam)


def prune_read_zero(lam: PyTree, params: PyTree, origin: PyTree | None):
    """Cause `zero`: every parameter that reads exactly θ0 (0 in the origin variant) gets
    λ = −inf. Returns `(λ, newly pruned)`."""
    masks = jtu.tree_map(lambda p, t: p == t, params, _targets(params, origin))
    return _prune_where(lam, masks)


def add_likelihood(lam: PyTree, loglik: PyTree):
    """λ + L; cause `likelihood`: the experts whose L is −inf. Returns `(λ, newly pruned)`."""
    new = jtu.tree_map(lambda v, L: (v + L).astype(v.dtype), lam, loglik)
    return new, count_pruned(new) - count_pruned(lam)


def prune_threshold(lam: PyTree, log_weight_sum: Array, prune_below):
    """Cause `threshold`: λ = −inf where |Δ_i|/‖Δ‖₁ < τ, i.e. λ_i − log‖Δ‖₁ < log τ.
    Returns `(λ, newly pruned)`."""

    def below(v):
        log_tau = jnp.log(jnp.asarray(prune_below, v.dtype))
        return (v - log_weight_sum.astype(v.dtype)) < log_tau

    return _prune_where(lam, jtu.tree_map(below, lam))


def _land_leaf(v, s, target, p):
    """(λ, increment) of one leaf: the increment d with p + d = θ0 + s·exp(λ) exactly where
    possible (one correction of the rounding), and λ = −inf where p + d reads θ0."""
    new = (target + s.astype(v.dtype) * jnp.exp(v)).astype(p.dtype)
    d = (new - p).astype(p.dtype)
    landed = (p + d).astype(p.dtype)
    d = jnp.where(landed == new, d, (d + (new - landed)).astype(p.dtype))
    zero = ((p + d).astype(p.dtype) == target) & (v > -jnp.inf)
    # a pruned target is θ0 itself: θ0 − p, and p + (θ0 − p) = θ0 (exact for θ0 = 0).
    v = jnp.where(zero, jnp.asarray(-jnp.inf, v.dtype), v)
    return v, d


def land(lam: PyTree, signs: PyTree, params: PyTree, origin: PyTree | None):
    """Increments for `optax.apply_updates(params, increments)` = θ0 + s·exp(λ); cause `zero`:
    every expert whose parameter would read exactly θ0 afterwards (exp(λ) underflows to 0, or
    is lost in the rounding of θ0 + s·exp(λ) or of p + (new − p)) gets λ = −inf, so what it
    reads and what λ says agree. Returns `(λ, increments, newly pruned)`."""
    flat, treedef = jtu.tree_flatten(lam)
    pairs = [
        _land_leaf(v, s, t, p)
        for v, s, t, p in zip(
            flat,
            treedef.flatten_up_to(signs),
            treedef.flatten_up_to(_targets(params, origin)),
            treedef.flatten_up_to(params),
        )
    ]
    new = treedef.unflatten([v for v, _ in pairs])
    increments = treedef.unflatten([d for _, d in pairs])
    return new, increments, count_pruned(new) - count_pruned(lam)


def finite_likelihood(loglik: PyTree) -> Array:
    """True when no log-likelihood comes from a non-finite gradient (NaN or +inf)."""
    ok = jnp.asarray(True)
    for v in jtu.tree_leaves(loglik):
        ok = ok & ~jnp.any(jnp.isnan(v) | (v == jnp.inf))
    return ok
