"""Introspection of the tangent ensemble: pruned experts, effective size, mass per layer."""

from typing import NamedTuple

import equinox as eqx
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, Float, Int, PyTree, Scalar


class EnsembleStats(NamedTuple):
    """What [`nte.ensemble_stats`][] returns (a pytree: jit- and vmap-friendly).

    **Fields:**

    - `num_pruned`: int32 scalar, the number of experts with `Δ_i == 0` exactly.
    - `effective_size`: `exp(H(w))`, the perplexity of the expert weights `w_i = |Δ_i| / Z`:
      `N` for uniform weights, `1` when one expert holds all the mass.
    - `mass`: the weight `Σ_{i ∈ leaf} w_i` of each parameter leaf, a params-shaped tree of
      scalars (`None` where the tree has no parameter); the scalars sum to 1.
    """

    num_pruned: Int[Scalar, ""]
    effective_size: Float[Scalar, ""]
    mass: PyTree[Float[Scalar, ""]]


def _x_log_x(a: Array) -> Array:
    """`a · log a` with `0 · log 0 = 0` (and a finite gradient at 0)."""
    positive = a > 0
    return jnp.where(positive, a * jnp.log(jnp.where(positive, a, 1)), 0)


def _deltas(params: PyTree, center: PyTree | None) -> PyTree:
    params = eqx.filter(params, eqx.is_inexact_array)
    if center is None:
        return params
    center = eqx.filter(center, eqx.is_inexact_array)
    if jtu.tree_structure(center) != jtu.tree_structure(params):
        raise ValueError("`center` must have the same tree structure as `params`.")
    shapes = [(jnp.shape(a), jnp.shape(b)) for a, b in zip(*map(jtu.tree_leaves, (params, center)))]
    for i, (a, b) in enumerate(shapes):
        if a != b:
            raise ValueError(f"`center` leaf {i} has shape {b}, but `params` leaf {i} has {a}.")
    return jtu.tree_map(jnp.subtract, params, center)


def ensemble_stats(params: PyTree, *, center: PyTree | None = None) -> EnsembleStats:
    """Summary of the tangent ensemble held by `params`: pruned experts, effective size, mass.

    Each parameter `i` is an expert with weight `w_i = |Δ_i| / Z`, where `Δ = params − center`
    and `Z = Σ_i |Δ_i|` ([maths: neural tangent experts](../math.md#neural-tangent-experts));
    with `center=None` (the origin variant) `Δ = params`. This returns

    - the number of experts pruned exactly (`Δ_i == 0`, [maths: pruning](../math.md#pruning)),
    - the effective ensemble size `exp(H(w))` with the Shannon entropy
      `H(w) = −Σ_i w_i log w_i` (`0 · log 0 = 0`), computed as
      `log Z − Σ_i |Δ_i| log |Δ_i| / Z`, leaf by leaf without concatenating the parameters,
    - the mass of each leaf, `Σ_{i ∈ leaf} w_i`.

    If every `Δ_i` is zero (`Z = 0`) the weights are undefined: `effective_size` and every
    mass are then `0`. Jit-compatible (the structure checks run at trace time).

    **Arguments:**

    - `params`: a pytree of parameters (e.g. from [`nte.split`][]) or a whole model; only its
      floating-point arrays count.
    - `center`: the expansion point `θ₀`, a pytree of the same structure (e.g. the initial
      parameters), or `None` for the origin.

    **Returns:**

    An [`nte.EnsembleStats`][].

    !!! example

        ```python
        params, _ = nte.split(model)
        params0, _ = nte.split(model0)
        stats = nte.ensemble_stats(params, center=params0)
        stats.num_pruned, stats.effective_size
        ```
    """
    delta = _deltas(params, center)
    magnitudes = jtu.tree_map(jnp.abs, delta)
    leaves = jtu.tree_leaves(magnitudes)
    if not leaves:
        raise ValueError("`params` holds no floating-point arrays.")
    num_pruned = sum(jnp.sum(a == 0, dtype=jnp.int32) for a in leaves)
    z = sum(jnp.sum(a) for a in leaves)
    alive = z > 0
    safe_z = jnp.where(alive, z, 1)
    entropy = jnp.log(safe_z) - sum(jnp.sum(_x_log_x(a)) for a in leaves) / safe_z
    effective = jnp.where(alive, jnp.exp(entropy), 0)
    mass = jtu.tree_map(lambda a: jnp.sum(a) / safe_z, magnitudes)
    return EnsembleStats(jnp.asarray(num_pruned, jnp.int32), effective, mass)
