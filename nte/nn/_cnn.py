"""A small convolutional network."""

import math
from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from ._mlp import _check_size


def _no_exact_zeros(w: Array) -> Array:
    """Replace (astronomically rare) exact zeros of a random draw by the smallest normal."""
    return jnp.where(w == 0, jnp.finfo(w.dtype).tiny, w)


class CNN(eqx.Module):
    """A small convolutional network: `len(channels)` stride-2 3×3 convolutions, then a linear head.

    Each convolution (`eqx.nn.Conv2d`, padding 1, stride 2) is followed by the activation; the
    feature map is flattened and fed to an `eqx.nn.Linear` head with `out_size` outputs. Its
    `__call__` takes ONE example of shape `in_shape = (channels, height, width)` (or its
    flattening, e.g. a 784-vector for a `(1, 28, 28)` image); use `jax.vmap` for batches.

    Weights are drawn from `N(0, gain²/fan_in)` (He, `gain = √2` before the activation, `1` for
    the head) and biases from `N(0, bias_std²)`, never exactly zero unless `zero_bias=True`.
    Every layer gets its own key, and the weight and bias keys of a layer are distinct.

    **Arguments:**

    - `in_shape`: `(channels, height, width)` of one example.
    - `channels`: output channels of each convolution (default `(8, 16)`).
    - `out_size`: number of outputs.
    - `activation`: the elementwise nonlinearity (default `jax.nn.relu`).
    - `zero_bias`: initialize biases to exactly zero.
    - `bias_std`: standard deviation of the bias initialization (default `0.01`).
    - `key`: a `jax.random` key (keyword-only).
    """

    convs: tuple[eqx.nn.Conv2d, ...]
    head: eqx.nn.Linear
    activation: Callable[[Array], Array]
    in_shape: tuple[int, int, int] = eqx.field(static=True)
    out_size: int = eqx.field(static=True)

    def __init__(
        self,
        in_shape: Sequence[int],
        out_size: int,
        *,
        channels: Sequence[int] = (8, 16),
        activation: Callable[[Array], Array] = jax.nn.relu,
        zero_bias: bool = False,
        bias_std: float = 0.01,
        key: PRNGKeyArray,
    ):
        in_shape = tuple(in_shape)
        if len(in_shape) != 3:
            raise ValueError(f"`in_shape` must be (channels, height, width), got {in_shape!r}.")
        for i, size in enumerate(in_shape):
            _check_size(size, f"in_shape[{i}]", minimum=1)
        _check_size(out_size, "out_size", minimum=1)
        if len(channels) < 1:
            raise ValueError("`channels` must list at least one convolution.")
        for i, size in enumerate(channels):
            _check_size(size, f"channels[{i}]", minimum=1)
        if not callable(activation):
            raise TypeError(f"`activation` must be callable, got {type(activation).__name__}.")
        keys = jr.split(key, len(channels) + 1)
        convs, (c, h, w) = [], in_shape
        for c_out, k in zip(channels, keys[:-1]):
            conv = eqx.nn.Conv2d(c, c_out, 3, stride=2, padding=1, key=k)
            convs.append(_init(conv, math.sqrt(2.0), zero_bias, bias_std, k))
            c, h, w = c_out, (h - 1) // 2 + 1, (w - 1) // 2 + 1
        head = eqx.nn.Linear(c * h * w, out_size, key=keys[-1])
        self.head = _init(head, 1.0, zero_bias, bias_std, keys[-1])
        self.convs = tuple(convs)
        self.activation = activation
        self.in_shape = in_shape
        self.out_size = out_size

    @property
    def in_size(self) -> int:
        """The number of input features, `prod(in_shape)`."""
        return math.prod(self.in_shape)

    def __call__(self, x: Float[Array, "..."]) -> Float[Array, " out_size"]:
        x = jnp.reshape(x, self.in_shape)
        for conv in self.convs:
            x = self.activation(conv(x))
        return self.head(jnp.ravel(x))


def _init(layer, gain: float, zero_bias: bool, bias_std: float, key: PRNGKeyArray):
    wkey, bkey = jr.split(jr.fold_in(key, 1))
    fan_in = math.prod(layer.weight.shape[1:])
    w = _no_exact_zeros(gain / math.sqrt(fan_in) * jr.normal(wkey, layer.weight.shape))
    if zero_bias:
        b = jnp.zeros(layer.bias.shape)
    else:
        b = _no_exact_zeros(bias_std * jr.normal(bkey, layer.bias.shape))
    return eqx.tree_at(lambda lyr: (lyr.weight, lyr.bias), layer, (w, b))
