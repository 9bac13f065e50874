"""Eager argument validation shared by the public API (runs outside jit)."""

import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.tree_util as jtu
import numpy as np


def check_module(model: Any, name: str = "model") -> None:
    """Raise `TypeError` unless `model` is an `eqx.Module`."""
    if not isinstance(model, eqx.Module):
        raise TypeError(
            f"`{name}` must be an equinox.Module (a model whose __call__ takes one example), "
            f"got {type(model).__name__}."
        )


def check_stateless(model: eqx.Module) -> None:
    """Raise `TypeError` if `model` keeps an `eqx.nn.State` (BatchNorm, other stateful layers),
    naming the first such layer."""

    def stateful(node) -> bool:
        if isinstance(node, eqx.nn.StateIndex):
            return True
        layer = isinstance(node, eqx.nn.StatefulLayer) and not isinstance(node, eqx.nn.Sequential)
        return layer and node.is_stateful()

    for path, node in jtu.tree_flatten_with_path(model, is_leaf=stateful)[0]:
        if stateful(node):
            raise TypeError(
                f"`model` is not supported: `model{jtu.keystr(path)}` "
                f"({type(node).__name__}) keeps an `eqx.nn.State`, so the output is not a "
                "function of the parameters alone (and batch statistics are not homogeneous "
                "in them). Use a stateless network (no BatchNorm)."
            )


def check_choice(value: Any, choices: tuple[str, ...], name: str) -> None:
    """Raise `ValueError` unless `value` is one of `choices`."""
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}, got {value!r}.")


def check_positive(value: Any, name: str, *, allow_zero: bool = False) -> None:
    """Raise unless the concrete number `value` is finite and > 0 (or >= 0): a `TypeError` for
    a string or bool (`"0.01"` is not a number), a `ValueError` otherwise."""
    if isinstance(value, (str, bytes, bool)):
        raise TypeError(f"`{name}` must be a number, got {type(value).__name__} {value!r}.")
    try:
        v = float(value)
    except TypeError:  # a tracer: cannot be checked eagerly, leave it to the caller
        return
    if not math.isfinite(v) or not (v >= 0 if allow_zero else v > 0):
        bound = "a finite number >= 0" if allow_zero else "a finite number > 0"
        raise ValueError(f"`{name}` must be {bound}, got {value!r}.")


def check_callable(fn: Callable | Any, name: str) -> None:
    if not callable(fn):
        raise TypeError(f"`{name}` must be callable, got {type(fn).__name__}.")


def check_params_shaped(
    tree: Any, params: Any, name: str, *, hint: str = "", batched: bool = False
) -> list:
    """Raise `ValueError` unless `tree` has the structure of `params` and, leaf by leaf, the
    parameter's shape (after one leading batch axis if `batched`); returns its leaves."""
    p_leaves, treedef = jax.tree_util.tree_flatten(params)
    try:
        leaves = treedef.flatten_up_to(tree)
    except (ValueError, TypeError) as e:
        raise ValueError(f"`{name}` must have the tree structure of `params`{hint}: {e}") from None
    for v, p in zip(leaves, p_leaves):
        vs, ps = np.shape(v), np.shape(p)
        if (vs[1:] if batched else vs) != ps or (batched and len(vs) != len(ps) + 1):
            shape = "(batch, *param.shape)" if batched else "param.shape"
            raise ValueError(
                f"`{name}` must have leaves of shape {shape}{hint}; got {vs} for a parameter of "
                f"shape {ps}."
            )
    return leaves
