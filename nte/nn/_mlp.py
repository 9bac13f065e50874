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


def _check_size(value: int, name: str, *, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {value!r}.")


class MLP(eqx.Module):
    """A fully connected network `in_size -> width x depth -> out_size` of `eqx.nn.Linear` layers.

    Its `__call__` takes ONE example (Equinox convention); use `jax.vmap` for batches.
    `depth` counts hidden layers, so the network has `depth + 1` weight layers, and a bias-free
    ReLU MLP is positively homogeneous of degree `depth + 1` in its parameters.

    **Parameterizations:**

    - `"standard"`: `W ~ N(0, gain²/fan_in)` with `gain = √2` for layers followed by the
      activation and `1` for the output layer; the forward pass is plain `W x + b`.
    - `"ntk"`: `W ~ N(0, 1)`; the forward pass is `W (gain/√fan_in · x) + b` (the scale is
      applied to each layer's input, so every `eqx.nn.Linear` still sees its true input, which
      the layer-structured NTK relies on).

    Biases are drawn from `N(0, bias_std²)` (never exactly zero) unless `zero_bias=True`. Every
    layer gets its own key, and within a layer the weight and bias keys are distinct.

    **Arguments:**

    - `in_size`, `width`, `depth`, `out_size`: the layer sizes; `depth >= 0`.
    - `use_bias`: whether the layers have biases.
    - `activation`: the elementwise nonlinearity between layers (default `jax.nn.relu`).
    - `parameterization`: `"standard"` or `"ntk"`.
    - `zero_bias`: initialize biases to exactly zero.
    - `bias_std`: standard deviation of the bias initialization (default `0.01`).
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
    input_scales: tuple[float, ...] = eqx.field(static=True)

    def __init__(
        self,
        in_size: int,
        width: int,
        depth: int,
        out_size: int,
        *,
        use_bias: bool = True,
        activation: Callable[[Array], Array] = jax.nn.relu,
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
        if not callable(activation):
            raise TypeError(f"`activation` must be callable, got {type(activation).__name__}.")
        sizes = [in_size] + [width] * depth + [out_size]
        keys = jr.split(key, len(sizes) - 1)
        layers, scales = [], []
        for i, (fan_in, fan_out, k) in enumerate(zip(sizes[:-1], sizes[1:], keys)):
            gain = 1.0 if i == len(sizes) - 2 else math.sqrt(2.0)
            wkey, bkey = jr.split(k)
            w = jr.normal(wkey, (fan_out, fan_in))
            if parameterization == "standard":
                w = w * (gain / math.sqrt(fan_in))
                scales.append(1.0)
            else:
                scales.append(gain / math.sqrt(fan_in))
            layer = eqx.nn.Linear(fan_in, fan_out, use_bias=use_bias, key=wkey)
            layer = eqx.tree_at(lambda lin: lin.weight, layer, w)
            if use_bias:
                b = jnp.zeros(fan_out) if zero_bias else bias_std * jr.normal(bkey, (fan_out,))
                layer = eqx.tree_at(lambda lin: lin.bias, layer, b)
            layers.append(layer)
        self.layers = tuple(layers)
        self.activation = activation
        self.in_size, self.width, self.depth, self.out_size = in_size, width, depth, out_size
        self.use_bias = use_bias
        self.parameterization = parameterization
        self.input_scales = tuple(scales)

    def __call__(self, x: Float[Array, " in_size"]) -> Float[Array, " out_size"]:
        x = jnp.reshape(x, (-1,))
        for i, (layer, scale) in enumerate(zip(self.layers, self.input_scales)):
            x = layer(x * scale if scale != 1.0 else x)
            if i < len(self.layers) - 1:
                x = self.activation(x)
        return x
