"""Positive homogeneity of the reference MLP and its Euler identity."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PyTree, Shaped

from ._errors import check_module
from ._function import check_batch
from ._split import merge, split
from .nn import MLP

_PROBE = np.array([-2.0, -0.7, -0.1, 0.0, 0.3, 1.1, 2.5], dtype=np.float32)


def _check_homogeneous_mlp(model: MLP) -> None:
    check_module(model)
    if not isinstance(model, MLP):
        raise TypeError(
            f"`model` must be an `nte.nn.MLP` (the homogeneity degree is only known for the "
            f"reference MLP), got {type(model).__name__}."
        )
    probe = jnp.asarray(_PROBE)
    if not np.allclose(model.activation(2.5 * probe), 2.5 * model.activation(probe), atol=1e-6):
        raise ValueError(
            "`model` must have a positively homogeneous activation (act(c·x) = c·act(x) for "
            "c > 0, e.g. ReLU, leaky ReLU, identity)."
        )


def homogeneity_degree(model: MLP) -> int:
    """The degree L of positive homogeneity of a reference MLP in its parameters.

    A bias-free [`nte.nn.MLP`][] with a positively homogeneous activation (ReLU) and `depth`
    hidden layers has L = `depth + 1` weight layers and f(x; cθ) = c^L f(x; θ) for c > 0.
    With biases, the bias of weight layer l (l = 1..L) has degree l: f is homogeneous of degree
    L under W_l → c W_l, b_l → c^l b_l.

    **Arguments:**

    - `model`: an [`nte.nn.MLP`][] with a positively homogeneous activation.

    **Returns:**

    `L`, a Python int.
    """
    _check_homogeneous_mlp(model)
    return len(model.layers)


def parameter_degrees(model: MLP) -> MLP:
    """The model with each parameter replaced by its degree (1 for weights, l for b_l)."""
    layers = tuple(
        eqx.tree_at(
            lambda lin: (lin.weight, lin.bias),
            layer,
            (jnp.ones_like(layer.weight), jnp.full_like(layer.bias, float(level))),
        )
        if layer.bias is not None
        else eqx.tree_at(lambda lin: lin.weight, layer, jnp.ones_like(layer.weight))
        for level, layer in enumerate(model.layers, start=1)
    )
    return eqx.tree_at(lambda m: m.layers, model, layers)


def degree_weighted_params(model: MLP) -> PyTree:
    """The parameters scaled by their degrees, d ⊙ θ (all floating-point leaves)."""
    params, _ = split(model)
    degrees, _ = split(parameter_degrees(model))
    return jax.tree_util.tree_map(jnp.multiply, degrees, params)


@eqx.filter_jit
def _residual(model: MLP, x: Array) -> Array:
    params, static = split(model)
    direction = degree_weighted_params(model)
    L = len(model.layers)

    def one(xi):
        out, tangent = jax.jvp(lambda p: merge(p, static)(xi), (params,), (direction,))
        return tangent - L * out

    return jax.vmap(one)(x)


def euler_residual(
    model: MLP, x: Shaped[Array | np.ndarray, "n ..."]
) -> Float[Array, "n out_size"]:
    """The residual of Euler's identity for a homogeneous MLP, per example and output.

    Computes Σ_l [⟨W_l, ∂f/∂W_l⟩ + l·⟨b_l, ∂f/∂b_l⟩] − L·f(x) with one `jax.jvp` per example
    (in the direction d ⊙ θ of the parameters scaled by their degrees). It is zero (up to
    rounding) for ReLU MLPs, with or without biases; see [`nte.homogeneity_degree`][].

    **Arguments:**

    - `model`: an [`nte.nn.MLP`][] with a positively homogeneous activation.
    - `x`: a batch of inputs `[N, in_size]`.

    **Returns:**

    The residual, shape `[N, out_size]`.
    """
    _check_homogeneous_mlp(model)
    x = check_batch(model, x, "x")
    return _residual(model, x)
