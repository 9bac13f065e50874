"""The reference multilayer perceptron."""

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from .._errors import check_choice

_PARAMETERIZATIONS = ("standard", "ntk")

#: The activations `nte.nn.MLP` accepts by name: exactly those `nte.kernels` has closed forms for.
ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "relu": jax.nn.relu,
    "leaky_relu": jax.nn.leaky_relu,  # negative slope 0.01, jax's default
    "erf": jax.scipy.special.erf,
    "abs": jnp.abs,
    "identity": jax.nn.identity,
}


def _resolve_activation(activation: Callable[[Array], Array] | str) -> Callable[[Array], Array]:
    if isinstance(activation, str):
        check_choice(activation, tuple(ACTIVATIONS), "activation")
        return ACTIVATIONS[activation]
    if not callable(activation):
        raise TypeError(
            f"`activation` must be callable or one of {tuple(ACTIVATIONS)}, "
            f"got {type(activation).__name__}."
        )
    return activation


def _check_size(value: int, name: str, *, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {value!r}.")


def _layer(fan_in, fan_out, gain, output_scale, key, ntk, use_bias, zero_bias, bias_std):
    """One initialized `eqx.nn.Linear` and the scale applied to its input."""
    wkey, bkey = jr.split(key)
    w = jr.normal(wkey, (fan_out, fan_in))
    if ntk:
        scale = gain / math.sqrt(fan_in) / output_scale
    else:
        w, scale = w * (gain / math.sqrt(fan_in)), 1.0
    layer = eqx.nn.Linear(fan_in, fan_out, use_bias=use_bias, key=wkey)
    layer = eqx.tree_at(lambda lin: lin.weight, layer, w)
    if use_bias:
        b = (
            jnp.zeros(fan_out)
            if zero_bias
            else jr.normal(bkey, (fan_out,)) * (1.0 if ntk else bias_std)
        )
        layer = eqx.tree_at(lambda lin: lin.bias, layer, b)
    return layer, scale


class MLP(eqx.Module):
    """A fully connected network `in_size -> width x depth -> out_size` of `eqx.nn.Linear` layers.

    Its `__call__` takes ONE example (Equinox convention); use `jax.vmap` for batches. An
    example of any shape with `in_size` entries is flattened first. `depth` counts hidden
    layers, so the network has `depth + 1` weight layers, and a bias-free ReLU MLP is
    positively homogeneous of degree `depth + 1` in its parameters.

    Every layer has a weight gain `σ_w = √2` if an activation follows it and `σ_w = 1` for the
    output layer (`weight_gains`), and a bias scale `σ_b = bias_std`.

    **Parameterizations:**

    - `"standard"`: `W ~ N(0, σ_w²/fan_in)`, `b ~ N(0, σ_b²)`; the layer computes `W x + b`.
    - `"ntk"` (Jacot et al. 2018, the neural-tangents convention): `W, b ~ N(0, 1)` and the
      layer computes `σ_w/√fan_in · W x + σ_b · b`. It is evaluated as
      `σ_b · Linear(σ_w/(σ_b √fan_in) · x)` (without bias: `Linear(σ_w/√fan_in · x)`), so every
      `eqx.nn.Linear` is still called directly on its (scaled) input, which the
      layer-structured NTK relies on. Its NTK has a finite infinite-width limit,
      [`nte.kernels.ntk`][].

    Both give the same distribution of functions at initialization (the same NNGP,
    [`nte.kernels.nngp`][]). Biases are never exactly zero unless `zero_bias=True`. Every layer
    gets its own key, and within a layer the weight and bias keys are distinct.

    **Arguments:**

    - `in_size`, `width`, `depth`, `out_size`: the layer sizes; `depth >= 0`.
    - `use_bias`: whether the layers have biases.
    - `activation`: the elementwise nonlinearity between layers: a callable (default
      `jax.nn.relu`) or one of the names `"relu"`, `"leaky_relu"` (negative slope 0.01),
      `"erf"`, `"abs"`, `"identity"`, whose infinite-width kernels `nte.kernels` knows.
    - `parameterization`: `"standard"` or `"ntk"`.
    - `zero_bias`: initialize biases to exactly zero.
    - `bias_std`: `σ_b` (default `0.01`); `> 0` under `"ntk"` with biases (use
      `use_bias=False` for no bias).
    - `key`: a `jax.random` key (keyword-only).
    """

    layers: tuple[eqx.nn.Linear, ...]
    activation: Callable[[Array], Array]
    in_size: int = eqx.field(static=True)
    width: int = eqx.field(static=True)
    depth: int = eqx.field(static=True)
    out_size: int = eqx.field(static=True)
    use_bias: bool = eqx.field(static=True)
    parameterization: str = eqx.field(static=True)
    zero_bias: bool = eqx.field(static=True)
    bias_std: float = eqx.field(static=True)
    weight_gains: tuple[float, ...] = eqx.field(static=True)
    input_scales: tuple[float, ...] = eqx.field(static=True)
    output_scale: float = eqx.field(static=True)

    def __init__(
        self,
        in_size: int,
        width: int,
        depth: int,
        out_size: int,
        *,
        use_bias: bool = True,
        activation: Callable[[Array], Array] | str = jax.nn.relu,
        parameterization: str = "standard",
        zero_bias: bool = False,
        bias_std: float = 0.01,
        key: PRNGKeyArray,
    ):
        _check_size(in_size, "in_size", minimum=1)
        _check_size(width, "width", minimum=1)
        _check_size(depth, "depth", minimum=0)
        _check_size(out_size, "out_size", minimum=1)
        check_choice(parameterization, _PARAMETERIZATIONS, "parameterization")
        activation = _resolve_activation(activation)
        bias_std = float(bias_std)
        ntk = parameterization == "ntk"
        if ntk and use_bias and not bias_std > 0:
            raise ValueError(
                "`bias_std` must be > 0 under parameterization='ntk' with biases (pass "
                f"use_bias=False for none), got {bias_std!r}."
            )
        if not bias_std >= 0:
            raise ValueError(f"`bias_std` must be >= 0, got {bias_std!r}.")
        sizes = [in_size] + [width] * depth + [out_size]
        gains = tuple(1.0 if i == depth else math.sqrt(2.0) for i in range(depth + 1))
        output_scale = bias_std if ntk and use_bias else 1.0
        keys = jr.split(key, depth + 1)
        layers, scales = zip(
            *(
                _layer(fan_in, fan_out, gain, output_scale, k, ntk, use_bias, zero_bias, bias_std)
                for fan_in, fan_out, gain, k in zip(sizes[:-1], sizes[1:], gains, keys)
            )
        )
        self.layers = tuple(layers)
        self.activation = activation
        self.in_size, self.width, self.depth, self.out_size = in_size, width, depth, out_size
        self.use_bias, self.parameterization = use_bias, parameterization
        self.zero_bias, self.bias_std, self.weight_gains = zero_bias, bias_std, gains
        self.input_scales, self.output_scale = tuple(scales), output_scale

    def __call__(self, x: Float[Array, " ..."]) -> Float[Array, " out_size"]:
        x = jnp.reshape(x, (-1,))
        for i, (layer, scale) in enumerate(zip(self.layers, self.input_scales)):
            x = layer(x * scale if scale != 1.0 else x)
            x = x * self.output_scale if self.output_scale != 1.0 else x
            if i < len(self.layers) - 1:
                x = self.activation(x)
        return x
