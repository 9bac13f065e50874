"""Neural tangent experts: a network as an ensemble of per-parameter experts."""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, Float, PyTree, Shaped

from ._errors import check_module, check_stateless
from ._euler import analyse, check_input, degree_arrays
from ._function import check_batch, tree_sub
from ._linearize import _split_pair
from ._split import merge, split


def _l1(tree: PyTree) -> Array:
    return sum((jnp.sum(jnp.abs(leaf)) for leaf in jtu.tree_leaves(tree)), jnp.zeros(()))


def _check_nonzero(z: Array, what: str) -> None:
    try:
        value = float(z)
    except (TypeError, jax.errors.ConcretizationTypeError):  # traced: cannot check eagerly
        return
    if value == 0.0:
        raise ValueError(f"{what} is zero, so the ensemble weights |Δ|/‖Δ‖₁ are undefined.")


def _jacobian(fn, params: PyTree, x: Array) -> PyTree:
    """Per-example Jacobians of `fn(params, x) -> [K]`, leaves `[N, K, *leaf.shape]`."""
    return jax.vmap(jax.jacrev(fn), in_axes=(None, 0))(params, x)


def _scale_experts(jac: PyTree, coef: PyTree) -> PyTree:
    return jtu.tree_map(lambda j, c: j * c, jac, coef)


@eqx.filter_jit
def _experts_origin(params, static, degrees, L, x):
    z = _l1(params)
    weights = jtu.tree_map(lambda p: jnp.abs(p) / z, params)
    coef = jtu.tree_map(lambda p, d: z * d / L * jnp.sign(p), params, degrees)
    jac = _jacobian(lambda p, xi: jnp.ravel(merge(p, static)(xi)), params, x)
    return _scale_experts(jac, coef), weights


@eqx.filter_jit
def _experts_seed(params, params0, static, x):
    delta = tree_sub(params, params0)
    z = _l1(delta)
    weights = jtu.tree_map(lambda d: jnp.abs(d) / z, delta)
    coef = jtu.tree_map(lambda d: z * jnp.sign(d), delta)
    jac = _jacobian(lambda p, xi: jnp.ravel(merge(p, static)(xi)), params0, x)
    return _scale_experts(jac, coef), weights


def tangent_experts(
    model: eqx.Module,
    x: Shaped[Array | np.ndarray, "n ..."],
    *,
    model0: eqx.Module | None = None,
    filter_spec: Any = eqx.is_inexact_array,
) -> tuple[PyTree[Float[Array, "n k ..."]], PyTree[Float[Array, "..."]]]:
    """The per-parameter neural tangent experts (logits) of a model at a batch `x`.

    Every scalar parameter i is an expert with ensemble weight w_i = |Δ_i| / Z, Z = ‖Δ‖₁
    (the weights lie on the simplex):

    - around a seed `model0` (Δ = θ − θ0):
      expert_i(x) = Z · sign(Δ_i) · ∂f/∂θ_i(x; θ0), so that
      f(x; θ0) + Σ_i w_i expert_i(x) = [`nte.linearize`][]`(model, model0)(x)`;
    - around the origin (`model0=None`, Δ = θ), for any positively homogeneous network of
      degree L ([`nte.homogeneity_degree`][]; ReLU MLPs and CNNs, `eqx.nn.MLP`,
      `eqx.nn.Sequential` of linear, conv and pooling layers, modules built from those):
      expert_i(x) = (Z · d_i / L) · sign(θ_i) · ∂f/∂θ_i(x; θ), with d_i the degree of the
      parameter ([`nte.parameter_degrees`][]: 1 for weights, l for the bias of weight layer l),
      so that Σ_i w_i expert_i(x) = f(x; θ) exactly (Euler; for a bias-free net d_i = 1 and the
      factor is Z/L). The degrees are found from the network and checked numerically; a
      network that is not homogeneous raises a `ValueError` naming the first offending
      sub-module. The identity needs every parameter: with a `filter_spec` subset the sum
      covers only the selected experts. See
      [maths: neural tangent experts](../math.md#neural-tangent-experts).

    **Arguments:**

    - `model`: an `eqx.Module` (θ).
    - `x`: a batch of inputs `[N, ...]`.
    - `model0`: the seed point θ0, or `None` for the expansion around the origin.
    - `filter_spec`: which parameters are experts (see [`nte.split`][]).

    **Returns:**

    `(experts, weights)`: `experts` is params-shaped with leaves `[N, K, *leaf.shape]` (K the
    number of outputs); `weights` is params-shaped (`[*leaf.shape]`) and sums to 1.
    """
    check_module(model)
    check_stateless(model)
    if model0 is None:
        L, leaf_degrees = analyse(model, x)
        x = check_input(model, x)
        all_params, all_static = split(model)
        degrees, _ = split(merge(degree_arrays(all_params, leaf_degrees), all_static), filter_spec)
        params, static = split(model, filter_spec)
        _check_nonzero(_l1(params), "‖θ‖₁ of the selected parameters")
        return _experts_origin(params, static, degrees, L, x)
    params, params0, static = _split_pair(model, model0, filter_spec)
    x = check_batch(model0, x, "x")
    _check_nonzero(_l1(tree_sub(params, params0)), "‖θ − θ0‖₁ (`model` equals `model0`)")
    return _experts_seed(params, params0, static, x)


def _log_probs(static):
    return lambda p, xi: jax.nn.log_softmax(jnp.ravel(merge(p, static)(xi)))


@eqx.filter_jit
def _expert_probs(params, params0, static, x):
    delta = tree_sub(params, params0)
    z = _l1(delta)
    logp = _log_probs(static)
    p0 = jnp.exp(jax.vmap(logp, in_axes=(None, 0))(params0, x))  # [N, K]
    jac = _jacobian(logp, params0, x)  # ∂ log p0(y|x) / ∂θ_i, leaves [N, K, *shape]

    def expert(j, d):
        p0_b = jnp.reshape(p0, p0.shape + (1,) * d.ndim)
        return p0_b * (1 + z * jnp.sign(d) * j)

    return jtu.tree_map(expert, jac, delta)


@eqx.filter_jit
def _mixture(params, params0, static, x):
    delta = tree_sub(params, params0)
    logp = _log_probs(static)

    def one(xi):
        lp0, dlp = jax.jvp(lambda p: logp(p, xi), (params0,), (delta,))
        return jnp.exp(lp0) * (1 + dlp)

    return jax.vmap(one)(x)


def expert_probabilities(
    model: eqx.Module,
    model0: eqx.Module,
    x: Shaped[Array | np.ndarray, "n ..."],
    *,
    filter_spec: Any = eqx.is_inexact_array,
) -> PyTree[Float[Array, "n k ..."]]:
    """The predictive distribution of every tangent expert around a seed `model0`.

    With Δ = θ − θ0, Z = ‖Δ‖₁ and p0 = softmax f(x; θ0):

        p_i(y|x) = p0(y|x) · [1 + Z · sign(Δ_i) · ∂ log p0(y|x) / ∂θ_i].

    Each expert sums to exactly 1 over labels y; it is non-negative only while
    Z·|∂ log p0/∂θ_i| ≤ 1 (the lazy regime), otherwise the expert is invalid.

    **Arguments:**

    - `model`, `model0`: `eqx.Module`s of the same structure (θ and θ0).
    - `x`: a batch of inputs `[N, ...]`.
    - `filter_spec`: which parameters are experts (see [`nte.split`][]).

    **Returns:**

    A params-shaped pytree with leaves `[N, K, *leaf.shape]`: `p_i(y|x)` for every example,
    label and parameter. Memory is that of the full Jacobian.
    """
    params, params0, static = _split_pair(model, model0, filter_spec)
    x = check_batch(model0, x, "x")
    return _expert_probs(params, params0, static, x)


def ensemble_probabilities(
    model: eqx.Module,
    model0: eqx.Module,
    x: Shaped[Array | np.ndarray, "n ..."],
    *,
    filter_spec: Any = eqx.is_inexact_array,
) -> Float[Array, "n k"]:
    """The ensemble's mixture Σ_i w_i p_i(y|x) of the tangent experts, w_i = |Δ_i| / ‖Δ‖₁.

    It equals the first-order Taylor expansion of the predictive distribution in θ,
    p0 + ∇_θ p0 · Δ = p0 ⊙ (1 + ∇_θ log p0 · Δ), computed with one `jax.jvp` per example (no
    Jacobian is formed). See [`nte.expert_probabilities`][] for the experts.

    **Arguments:**

    - `model`, `model0`: `eqx.Module`s of the same structure (θ and θ0).
    - `x`: a batch of inputs `[N, ...]`.
    - `filter_spec`: which parameters are experts (see [`nte.split`][]).

    **Returns:**

    The mixture, shape `[N, K]`; each row sums to 1 (entries may be negative outside the lazy
    regime).
    """
    params, params0, static = _split_pair(model, model0, filter_spec)
    x = check_batch(model0, x, "x")
    return _mixture(params, params0, static, x)
