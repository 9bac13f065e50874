"""Helpers shared by the tangent transforms: eager input checks and parameter-tree arithmetic."""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, PyTree


def stop_gradient_arrays(tree: PyTree) -> PyTree:
    """`jax.lax.stop_gradient` on every array leaf, other leaves unchanged."""
    return jtu.tree_map(
        lambda leaf: jax.lax.stop_gradient(leaf) if eqx.is_array(leaf) else leaf, tree
    )


def check_batch(model: eqx.Module, x: Any, name: str = "x") -> Array:
    """Eagerly check that `x` is a batch `[N, ...]` that `model` accepts one example at a time.

    Returns `x` as a JAX array. Raises one `ValueError` naming `name` otherwise. Only traces
    the model abstractly (`jax.eval_shape`); nothing is compiled.
    """
    if not hasattr(x, "shape") or np.ndim(x) < 1:
        raise ValueError(f"`{name}` must be an array with a leading batch axis, got {x!r:.80}.")
    x = jnp.asarray(x)
    if x.shape[0] < 1:
        raise ValueError(f"`{name}` must hold at least one example, got shape {x.shape}.")
    in_size = getattr(model, "in_size", None)
    if isinstance(in_size, int) and int(np.prod(x.shape[1:])) != in_size:
        raise ValueError(
            f"`{name}` has examples of shape {x.shape[1:]} ({int(np.prod(x.shape[1:]))} features) "
            f"but the model expects {in_size} features."
        )
    try:
        jax.eval_shape(model, x[0])
    except Exception as error:  # any failure to trace one example is a bad input
        raise ValueError(
            f"`{name}`: the model cannot be applied to one example of shape {x.shape[1:]} "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})."
        ) from error
    return x


def check_batch_pair(model: eqx.Module, x1: Any, x2: Any) -> tuple[Array, Array | None]:
    """[`check_batch`][] on `x1` and (unless `None`) `x2`, whose examples must have the same
    shape: the two sides of a kernel `k(x1, x2)`."""
    x1 = check_batch(model, x1, "x1")
    if x2 is None:
        return x1, None
    x2 = check_batch(model, x2, "x2")
    if x2.shape[1:] != x1.shape[1:]:
        raise ValueError(
            f"`x2` must have examples of the same shape as `x1`, got {x2.shape[1:]} "
            f"and {x1.shape[1:]}."
        )
    return x1, x2


def check_same_params(params: PyTree, params0: PyTree, name: str = "model0") -> None:
    """Raise `ValueError` unless two parameter trees share structure, shapes and dtypes."""
    leaves, treedef = jtu.tree_flatten(params)
    leaves0, treedef0 = jtu.tree_flatten(params0)
    if treedef != treedef0:
        raise ValueError(f"`{name}` must have the same parameter structure as `model`.")
    for a, b in zip(leaves, leaves0):
        if a.shape != b.shape or a.dtype != b.dtype:
            raise ValueError(
                f"`{name}` must have the same parameter shapes and dtypes as `model`, got "
                f"{b.dtype}{list(b.shape)} where `model` has {a.dtype}{list(a.shape)}."
            )


def tree_sub(a: PyTree, b: PyTree) -> PyTree:
    return jtu.tree_map(lambda u, v: u - v, a, b)
