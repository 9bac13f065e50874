"""Eager checks shared by the functions that compare two models on a batch of examples."""

from typing import Any

import jax
import jax.tree_util as jtu
import numpy as np
from jaxtyping import PyTree

from ._errors import check_module
from ._per_example import batch_size
from ._split import split


def _signature(params: PyTree) -> list[tuple[tuple[int, ...], Any]]:
    return [(tuple(a.shape), a.dtype) for a in jtu.tree_leaves(params)]


def check_same_parameters(model: Any, other: Any, name: str, reference: str) -> None:
    """Raise unless `other` has `model`'s structure, parameter shapes and parameter dtypes.

    Static fields (e.g. an MLP's `width`) are part of the structure. The error names `name`
    (the second model's argument) and `reference` (the first one's).
    """
    check_module(model, reference)
    check_module(other, name)
    (p, s), (q, t) = split(model), split(other)
    same = jtu.tree_structure(p) == jtu.tree_structure(q)
    if not (same and jtu.tree_structure(s) == jtu.tree_structure(t)):
        raise ValueError(
            f"`{name}` must have the same structure as `{reference}` (same module class, "
            "same static fields, same parameter leaves)."
        )
    for i, ((shape_a, dtype_a), (shape_b, dtype_b)) in enumerate(zip(_signature(p), _signature(q))):
        if shape_a != shape_b or dtype_a != dtype_b:
            raise ValueError(
                f"`{name}` must have the same parameter shapes and dtypes as `{reference}`; "
                f"parameter leaf {i} is {dtype_b}{list(shape_b)} in `{name}` but "
                f"{dtype_a}{list(shape_a)} in `{reference}`."
            )
    if not jtu.tree_leaves(p):
        raise ValueError(f"`{reference}` has no floating-point parameters.")


def check_batched(model: Any, x: PyTree, name: str = "x", model_name: str = "model") -> int:
    """The batch size of `x`, after checking that `model` accepts ONE example `x[0]`.

    The rule: every leaf of `x` has a leading axis of one common size, and
    `jax.eval_shape(model, x[0])` succeeds. A single example passed without its batch axis
    fails the second test for any model that checks its input size (e.g. `nte.nn.MLP`: `x[0]`
    of a `(784,)` image is a scalar). Raises `ValueError` naming `name`.
    """
    n = batch_size(x, name)
    if n == 0:
        raise ValueError(f"`{name}` must hold at least one example, got an empty batch.")
    first = jtu.tree_map(lambda a: a[0], x)
    try:
        jax.eval_shape(model, first)
    except Exception as e:
        shapes = [tuple(np.shape(a)) for a in jtu.tree_leaves(x)]
        raise ValueError(
            f"`{name}` must be a batch of examples (leading axis) for `{model_name}`, whose "
            f"__call__ takes ONE example; `{model_name}` fails on `{name}[0]` (`{name}` has "
            f"shape {shapes[0] if len(shapes) == 1 else shapes}): {type(e).__name__}: {e}"
        ) from None
    return n


def check_batch_sizes(n: int, y: PyTree, name: str = "y", reference: str = "x") -> None:
    """Raise `ValueError` unless `y` has `n` examples along its leading axis."""
    m = batch_size(y, name)
    if m != n:
        raise ValueError(f"`{name}` must have as many examples as `{reference}`: {m} vs {n}.")


def check_chunk(batch_size: int | None) -> None:
    """Raise `ValueError` unless `batch_size` (examples vmapped at once) is None or an int >= 1."""
    if batch_size is not None and (
        not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1
    ):
        raise ValueError(f"`batch_size` must be None or an int >= 1, got {batch_size!r}.")
