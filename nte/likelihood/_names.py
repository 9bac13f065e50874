"""The method strings of [`nte.expert_log_likelihoods`][]."""

from typing import Any

from ._auto import Auto
from ._base import AbstractMethod
from ._chunked import Chunked
from ._series import Series
from ._vmap import Vmap

METHODS = {"auto": Auto, "vmap": Vmap, "chunked": Chunked, "series": Series}


def as_method(method: Any) -> AbstractMethod:
    """An [`nte.likelihood.AbstractMethod`][] from a method or its name (default knobs)."""
    if isinstance(method, AbstractMethod):
        return method
    if isinstance(method, str):
        if method not in METHODS:
            raise ValueError(f"`method` must be one of {tuple(METHODS)}, got {method!r}.")
        return METHODS[method]()
    raise TypeError(
        "`method` must be an nte.likelihood.AbstractMethod (e.g. nte.likelihood.Chunked("
        f"chunk_size=64)) or one of {tuple(METHODS)}, got {type(method).__name__}."
    )
