"""Positively homogeneous networks of every supported layer family, with hand-derived degrees.

Each builder takes `(key, use_bias)` and returns `(model, x, degrees, L)`: `degrees` lists the
degree of every parameter leaf in `jax.tree.leaves(nte.split(model)[0])` order, derived by hand
(weights 1; the bias of the l-th weight layer on the signal path l), and `L` the output degree.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from helpers import slow_except

import nte


def _relu():
    return eqx.nn.Lambda(jax.nn.relu)


def _ravel():
    return eqx.nn.Lambda(jnp.ravel)


def _layered(weight_layers: int, use_bias: bool) -> list[int]:
    """[W1, b1, W2, b2, ...] degrees (or [W1, W2, ...] without biases)."""
    if not use_bias:
        return [1] * weight_layers
    return [d for level in range(1, weight_layers + 1) for d in (1, level)]


def nte_mlp(key, use_bias, parameterization="standard"):
    k1, k2 = jr.split(key)
    model = nte.nn.MLP(
        4, 6, 2, 3, use_bias=use_bias, bias_std=0.3, parameterization=parameterization, key=k1
    )
    return model, jr.normal(k2, (5, 4)), _layered(3, use_bias), 3


def nte_mlp_ntk(key, use_bias):
    return nte_mlp(key, use_bias, parameterization="ntk")


def eqx_mlp(key, use_bias, activation=jax.nn.relu):
    k1, k2 = jr.split(key)
    model = eqx.nn.MLP(
        4, 3, 5, 2, activation=activation, use_bias=use_bias, use_final_bias=use_bias, key=k1
    )
    return model, jr.normal(k2, (5, 4)), _layered(3, use_bias), 3


def eqx_mlp_leaky(key, use_bias):
    return eqx_mlp(key, use_bias, activation=jax.nn.leaky_relu)


def eqx_mlp_identity(key, use_bias):
    return eqx_mlp(key, use_bias, activation=lambda h: h)


def seq_linear(key, use_bias):
    k = jr.split(key, 4)
    model = eqx.nn.Sequential(
        [
            eqx.nn.Linear(4, 5, use_bias=use_bias, key=k[0]),
            _relu(),
            eqx.nn.Linear(5, 5, use_bias=use_bias, key=k[1]),
            _relu(),
            eqx.nn.Linear(5, 3, use_bias=use_bias, key=k[2]),
        ]
    )
    return model, jr.normal(k[3], (5, 4)), _layered(3, use_bias), 3


def seq_conv1d(key, use_bias):
    k = jr.split(key, 4)
    model = eqx.nn.Sequential(
        [
            eqx.nn.Conv1d(2, 3, 3, use_bias=use_bias, key=k[0]),  # 9 -> 7
            _relu(),
            eqx.nn.Conv1d(3, 2, 3, stride=2, use_bias=use_bias, key=k[1]),  # 7 -> 3
            _relu(),
            _ravel(),
            eqx.nn.Linear(6, 3, use_bias=use_bias, key=k[2]),
        ]
    )
    return model, jr.normal(k[3], (5, 2, 9)), _layered(3, use_bias), 3


def seq_conv2d_maxpool(key, use_bias):
    k = jr.split(key, 4)
    model = eqx.nn.Sequential(
        [
            eqx.nn.Conv2d(1, 3, 3, padding=1, use_bias=use_bias, key=k[0]),  # 8x8
            _relu(),
            eqx.nn.MaxPool2d(2, stride=2),  # 4x4
            eqx.nn.Conv2d(3, 2, 3, use_bias=use_bias, key=k[1]),  # 2x2
            _relu(),
            _ravel(),
            eqx.nn.Linear(8, 3, use_bias=use_bias, key=k[2]),
        ]
    )
    return model, jr.normal(k[3], (5, 1, 8, 8)), _layered(3, use_bias), 3


def seq_conv2d_avgpool(key, use_bias):
    k = jr.split(key, 3)
    model = eqx.nn.Sequential(
        [
            eqx.nn.Conv2d(1, 4, 3, use_bias=use_bias, key=k[0]),  # 8x8 -> 6x6
            _relu(),
            eqx.nn.AvgPool2d(2, stride=2),  # 3x3
            _ravel(),
            eqx.nn.Linear(36, 3, use_bias=use_bias, key=k[1]),
        ]
    )
    return model, jr.normal(k[2], (5, 1, 8, 8)), _layered(2, use_bias), 2


def nte_cnn(key, use_bias):
    k1, k2 = jr.split(key)
    model = nte.nn.CNN((1, 8, 8), 3, channels=(3, 4), zero_bias=not use_bias, bias_std=0.3, key=k1)
    return model, jr.normal(k2, (5, 1, 8, 8)), _layered(3, True), 3


class ConvNet(eqx.Module):
    """A user module: a conv feature map, average pooling, then an `eqx.nn.MLP` head."""

    conv: eqx.nn.Conv2d
    pool: eqx.nn.AvgPool2d
    head: eqx.nn.MLP

    def __init__(self, use_bias, key):
        k1, k2 = jr.split(key)
        self.conv = eqx.nn.Conv2d(1, 2, 3, use_bias=use_bias, key=k1)
        self.pool = eqx.nn.AvgPool2d(2, stride=2)
        self.head = eqx.nn.MLP(18, 3, 4, 1, use_bias=use_bias, use_final_bias=use_bias, key=k2)

    def __call__(self, x):
        h = jax.nn.relu(self.conv(x))
        assert self.conv.weight.ndim == 4  # parents may read their children's fields
        return self.head(jnp.ravel(self.pool(h)))


def user_module(key, use_bias):
    k1, k2 = jr.split(key)
    return ConvNet(use_bias, k1), jr.normal(k2, (5, 1, 8, 8)), _layered(3, use_bias), 3


FAMILIES = {
    "nte.nn.MLP": nte_mlp,
    "nte.nn.MLP-ntk": nte_mlp_ntk,
    "eqx.nn.MLP-relu": eqx_mlp,
    "eqx.nn.MLP-leaky": eqx_mlp_leaky,
    "eqx.nn.MLP-identity": eqx_mlp_identity,
    "Sequential-Linear": seq_linear,
    "Sequential-Conv1d": seq_conv1d,
    "Sequential-Conv2d-MaxPool": seq_conv2d_maxpool,
    "Sequential-Conv2d-AvgPool": seq_conv2d_avgpool,
    "nte.nn.CNN": nte_cnn,
    "user-module": user_module,
}
# The families of the parametrized tests: two (dense, conv + pooling) run by default, the others
# with `-m slow`.
FAMILY_PARAMS = slow_except(sorted(FAMILIES), ("nte.nn.MLP", "Sequential-Conv2d-AvgPool"))


def scale_by_degrees(model, degrees, c):
    """The model with every parameter leaf multiplied by c**degree (an independent reference)."""
    params, static = nte.split(model)
    leaves, treedef = jax.tree.flatten(params)
    scaled = [p * c**d for p, d in zip(leaves, degrees, strict=True)]
    return nte.merge(jax.tree.unflatten(treedef, scaled), static)
