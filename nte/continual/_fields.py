"""Documented, validated fields of the configuration sections (one helper for every section).

Every field of a section ([`nte.continual.Config`][] and the learner sections) is declared with
`option(default, help, check)`: the help text is kept in the field's metadata (`"help"`), so a
command line can be generated from the dataclasses, and `check` validates the value in
`__post_init__` with an error naming the field.
"""

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from .._errors import check_choice


def option(default: Any, help: str, check: Callable[[Any, str], None] | None = None) -> Any:
    """A dataclass field with a default, a help text and an optional `check(value, name)`."""
    meta = {"help": help, "check": check}
    if isinstance(default, (dict, list)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def validate(section: Any) -> None:
    """Run the `check` of every field of the dataclass instance `section`."""
    for f in dataclasses.fields(section):
        check = f.metadata.get("check")
        if check is not None:
            check(getattr(section, f.name), f.name)


def help_text(f: dataclasses.Field) -> str:
    """The help text of a field declared with `option` ("" otherwise)."""
    return f.metadata.get("help", "")


def integer(minimum: int, optional: bool = False) -> Callable[[Any, str], None]:
    """A check: an int >= `minimum` (or `None` if `optional`)."""

    def check(value: Any, name: str) -> None:
        if optional and value is None:
            return
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            none = " or None" if optional else ""
            raise ValueError(f"`{name}` must be an int >= {minimum}{none}, got {value!r}.")

    return check


def number(
    minimum: float = 0.0, *, strict: bool = True, below: float | None = None, optional=False
) -> Callable[[Any, str], None]:
    """A check: a finite number > `minimum` (>= if not `strict`), < `below` if given, or `None`
    (nan and ±inf are refused: a non-finite hyperparameter only makes a run diverge)."""

    def check(value: Any, name: str) -> None:
        if optional and value is None:
            return
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = ok and math.isfinite(value) and (value > minimum if strict else value >= minimum)
        ok = ok and (below is None or value < below)
        if not ok:
            bound = f"{'>' if strict else '>='} {minimum}" + (f" and < {below}" if below else "")
            none = " or None" if optional else ""
            raise ValueError(f"`{name}` must be a finite number {bound}{none}, got {value!r}.")

    return check


def choice(*choices: str) -> Callable[[Any, str], None]:
    """A check: one of `choices` (kept as the check's `choices` attribute for command lines)."""

    def check(value: Any, name: str) -> None:
        check_choice(value, choices, name)

    check.choices = choices
    return check


def choices_of(f: dataclasses.Field) -> tuple[str, ...] | None:
    """The choices of a field declared with a `choice(...)` check (`None` otherwise)."""
    return getattr(f.metadata.get("check"), "choices", None)


def of_type(*types: type, optional: bool = False) -> Callable[[Any, str], None]:
    """A check: an instance of `types` (or `None` if `optional`)."""

    def check(value: Any, name: str) -> None:
        if (optional and value is None) or (
            isinstance(value, types) and not (bool not in types and isinstance(value, bool))
        ):
            return
        names = " or ".join(t.__name__ for t in types) + (" or None" if optional else "")
        raise ValueError(f"`{name}` must be a {names}, got {value!r}.")

    return check
