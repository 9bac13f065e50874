"""Dual activations: closed forms of `E[φ(u)φ(v)]` and `E[φ'(u)φ'(v)]` for Gaussian `(u, v)`.

For `(u, v) ~ N(0, [[a, c], [c, b]])`, with `ρ = c/√(ab)` and `θ = arccos ρ`,

    T(a, b, c) = E[φ(u) φ(v)],      Ṫ(a, b, c) = E[φ'(u) φ'(v)].

Every function here broadcasts `a`, `b`, `c` against each other and is exact in the working
precision up to the conditioning of `arccos` near `ρ = ±1`.
"""

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array

from ..nn._mlp import ACTIVATIONS


class Activation(NamedTuple):
    """An activation the kernels know: its name and (for leaky ReLU) its negative slope."""

    name: str
    slope: float = 0.0


_EXTRA = [  # callables recognised besides those of `nte.nn._mlp.ACTIVATIONS`
    (jax.lax.erf, "erf"),
    (jnp.absolute, "abs"),
    (jax.lax.abs, "abs"),
]


def recognise(fn: Callable | object) -> Activation | None:
    """The `Activation` that `fn` computes, or `None` if it is not one the kernels know.

    Recognises the callables behind the names of `nte.nn.MLP` (`jax.nn.relu`,
    `jax.nn.leaky_relu`, `jax.scipy.special.erf`, `jnp.abs`, `jax.nn.identity`), their
    `jax.lax` twins, and `functools.partial(jax.nn.leaky_relu, negative_slope=α)`.
    """
    if isinstance(fn, functools.partial) and fn.func is jax.nn.leaky_relu:
        keywords = dict(fn.keywords)
        if fn.args or set(keywords) - {"negative_slope"}:
            return None
        return Activation("leaky_relu", float(keywords.get("negative_slope", 0.01)))
    for name, known in ACTIVATIONS.items():
        if fn is known:
            return Activation(name, 0.01 if name == "leaky_relu" else 0.0)
    for known, name in _EXTRA:
        if fn is known:
            return Activation(name)
    return None


def _angle(a, b, c):
    """`(√(ab), ρ, θ)` with `ρ` clipped to `[−1, 1]` (and `ρ = 0` where `ab = 0`)."""
    s = jnp.sqrt(a * b)
    positive = s > 0
    rho = jnp.clip(jnp.where(positive, c / jnp.where(positive, s, 1.0), 0.0), -1.0, 1.0)
    return s, rho, jnp.arccos(rho)


def _sin(rho):
    return jnp.sqrt(jnp.maximum((1.0 - rho) * (1.0 + rho), 0.0))


def relu(a, b, c) -> tuple[Array, Array]:
    """Arc-cosine kernels (Cho & Saul 2009): `T = √(ab)/(2π)·(sin θ + (π − θ) cos θ)`,
    `Ṫ = (π − θ)/(2π)`."""
    s, rho, theta = _angle(a, b, c)
    t = s / (2 * math.pi) * (_sin(rho) + (math.pi - theta) * rho)
    return t, (math.pi - theta) / (2 * math.pi)


def leaky_relu(a, b, c, slope: float) -> tuple[Array, Array]:
    """`φ = relu(u) − α relu(−u)` from its four sign quadrants:
    `T = (1 + α²) T_relu − 2α √(ab)/(2π)·(sin θ − θ cos θ)`,
    `Ṫ = ((1 + α²)(π − θ) + 2αθ)/(2π)`."""
    s, rho, theta = _angle(a, b, c)
    sin = _sin(rho)
    same = s / (2 * math.pi) * (sin + (math.pi - theta) * rho)
    cross = s / (2 * math.pi) * (sin - theta * rho)
    t = (1 + slope**2) * same - 2 * slope * cross
    tdot = ((1 + slope**2) * (math.pi - theta) + 2 * slope * theta) / (2 * math.pi)
    return t, tdot


def erf(a, b, c) -> tuple[Array, Array]:
    """Williams 1997: `T = (2/π) arcsin(2c/√((1 + 2a)(1 + 2b)))`,
    `Ṫ = (4/π)/√((1 + 2a)(1 + 2b) − 4c²)`."""
    prod = (1 + 2 * a) * (1 + 2 * b)
    t = (2 / math.pi) * jnp.arcsin(jnp.clip(2 * c / jnp.sqrt(prod), -1.0, 1.0))
    return t, (4 / math.pi) / jnp.sqrt(prod - 4 * c**2)


def identity(a, b, c) -> tuple[Array, Array]:
    """`T = c`, `Ṫ = 1`."""
    c = jnp.broadcast_to(c, jnp.broadcast_shapes(jnp.shape(a), jnp.shape(b), jnp.shape(c)))
    return c, jnp.ones_like(c)


def abs_(a, b, c) -> tuple[Array, Array]:
    """`T = (2/π)√(ab)(ρ arcsin ρ + √(1 − ρ²))`, `Ṫ = (2/π) arcsin ρ`."""
    s, rho, _ = _angle(a, b, c)
    asin = jnp.arcsin(rho)
    return (2 / math.pi) * s * (rho * asin + _sin(rho)), (2 / math.pi) * asin


def dual(activation: Activation, a, b, c) -> tuple[Array, Array]:
    """`(T, Ṫ)` of `activation` at the covariance `[[a, c], [c, b]]` (broadcast)."""
    if activation.name == "leaky_relu":
        return leaky_relu(a, b, c, activation.slope)
    fn = {"relu": relu, "erf": erf, "identity": identity, "abs": abs_}[activation.name]
    return fn(a, b, c)
