"""A network as a function of its parameters: `split` and `merge`."""

from collections.abc import Callable
from typing import Any

import equinox as eqx
from jaxtyping import PyTree

from ._errors import check_module


def split(
    model: eqx.Module, filter_spec: PyTree[bool | Callable[[Any], bool]] = eqx.is_inexact_array
) -> tuple[PyTree, PyTree]:
    """Split a model into its trainable parameters and everything else.

    A thin, documented wrapper around `eqx.partition`: `params` holds the leaves selected by
    `filter_spec` (every floating-point array by default) and `None` elsewhere; `static`
    holds the complement. Only floating-point arrays are ever put in `params`, whatever
    `filter_spec` selects. The network as a function of its parameters is then
    `lambda params, x: nte.merge(params, static)(x)`.

    **Arguments:**

    - `model`: an `eqx.Module`.
    - `filter_spec`: a filter (callable on leaves) or a pytree prefix of bools/callables, as for
      `eqx.partition`. Use it to select a parameter subset, e.g. only the last layer.

    **Returns:**

    `(params, static)`, two pytrees with the structure of `model`.

    !!! example

        ```python
        params, static = nte.split(model)
        same = nte.merge(params, static)
        ```
    """
    check_module(model)
    params, static = eqx.partition(model, filter_spec)
    # Only floating-point arrays can be parameters, whatever the filter selected.
    params, extra = eqx.partition(params, eqx.is_inexact_array)
    return params, eqx.combine(static, extra)


def merge(params: PyTree, static: PyTree) -> Any:
    """Inverse of [`nte.split`][]: recombine parameters and the rest into a model.

    **Arguments:**

    - `params`: the parameter pytree returned by `nte.split` (possibly updated).
    - `static`: the complementary pytree returned by `nte.split`.

    **Returns:**

    The model (`eqx.combine(params, static)`).
    """
    return eqx.combine(params, static)
