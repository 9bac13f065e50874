"""Per-example gradients of a loss with respect to a model's parameters."""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import numpy as np
from jaxtyping import ArrayLike, PyTree, Scalar, Shaped

from ._errors import check_callable, check_module, check_stateless
from ._split import merge, split


def batch_size(x: PyTree, name: str = "x") -> int:
    """The common leading-axis size of every array leaf of `x` (eagerly validated)."""
    sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in jax.tree_util.tree_leaves(x)}
    if not sizes:
        raise ValueError(f"`{name}` must contain at least one array with a leading batch axis.")
    if None in sizes:
        raise ValueError(f"`{name}` must have a leading batch axis on every leaf; got a scalar.")
    if len(sizes) != 1:
        raise ValueError(f"Every leaf of `{name}` must share one batch size, got {sorted(sizes)}.")
    return sizes.pop()


def per_example_grads(
    loss_fn: Callable[[Any, Any, Any], Scalar],
    model: eqx.Module,
    x: PyTree[Shaped[ArrayLike, "_batch ..."]],
    y: PyTree[Shaped[ArrayLike, "_batch ..."]],
    *,
    filter_spec: Any = eqx.is_inexact_array,
) -> PyTree:
    """Gradient of `loss_fn` for every example of a batch, without a Python loop.

    Computes `g_b = ∇_θ loss_fn(model, x[b], y[b])` for each `b` by `jax.vmap` over
    `jax.grad` (the same convention as `optax.contrib.dpsgd`: a leading batch axis on every leaf).

    **Arguments:**

    - `loss_fn`: `loss_fn(model, x_single, y_single) -> scalar`, on ONE example.
    - `model`: an `eqx.Module`; gradients are taken at its current parameters.
    - `x`, `y`: batched inputs and targets (leading axis `batch`, equal sizes).
    - `filter_spec`: which parameters to differentiate (see [`nte.split`][]).

    **Returns:**

    A params-shaped pytree (`None` where a leaf is not a parameter) whose leaves have an extra
    leading axis of size `batch`.
    """
    check_callable(loss_fn, "loss_fn")
    check_module(model)
    check_stateless(model)
    n = batch_size(x, "x")
    if batch_size(y, "y") != n:
        raise ValueError(f"`x` and `y` must have the same batch size, got {n} and {batch_size(y)}.")
    params, static = split(model, filter_spec)

    def single(p, xi, yi):
        return loss_fn(merge(p, static), xi, yi)

    return jax.vmap(jax.grad(single), in_axes=(None, 0, 0))(params, x, y)
