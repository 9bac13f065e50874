"""Eager validation of the pruning hyperparameters (skipped for traced values)."""

from typing import Any

import jax
from jaxtyping import ArrayLike, Real

RealScalar = Real[ArrayLike, ""]
"""A real number: a Python scalar or a 0-d array (as `optax.inject_hyperparams` passes them)."""


def _concrete(value: Any) -> float | None:
    """`float(value)`, or `None` when `value` is traced (checked by the caller's caller)."""
    if isinstance(value, jax.core.Tracer):
        return None
    return float(value)


def check_interval(
    value: Any, name: str, low: float, high: float, *, closed_low: bool, closed_high: bool
) -> None:
    """Raise `ValueError` unless the concrete number `value` lies in the given interval."""
    v = _concrete(value)
    if v is None:
        return
    ok_low = v >= low if closed_low else v > low
    ok_high = v <= high if closed_high else v < high
    if not (ok_low and ok_high):
        interval = f"{'[' if closed_low else '('}{low}, {high}{']' if closed_high else ')'}"
        raise ValueError(f"`{name}` must lie in {interval}, got {value!r}.")


def check_rate(rate: Any) -> None:
    check_interval(rate, "rate", 0.0, 1.0, closed_low=False, closed_high=False)


def check_momentum(momentum: Any) -> None:
    check_interval(momentum, "momentum", 0.0, 1.0, closed_low=True, closed_high=False)


def check_sparsity(value: Any, name: str) -> None:
    check_interval(value, name, 0.0, 1.0, closed_low=True, closed_high=True)


def check_step(value: Any, name: str, *, minimum: int) -> None:
    """Raise `ValueError` unless the concrete integer `value` is `>= minimum`."""
    v = _concrete(value)
    if v is None:
        return
    if v != int(v) or v < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
