"""Command lines generated from the typed configuration ([`nte.continual.Config`][]).

[`nte.continual.parser`][] builds an `argparse` parser with one flag per field of the Config
sections (`batch_size` ↔ `--batch-size`) and one per learner hyperparameter (`--beta`, `--lr`,
...), each with its help text, its default and its choices, grouped by section: data, model,
one group per learner, training, devices. [`nte.continual.configs_from_args`][] turns the flags
into one validated `Config` per learner of `--learner nte,sgd`; a bad flag is an argparse error
(one line, exit status 2) before anything is loaded or written.

**Why argparse generated from the field metadata, not tyro / simple-parsing / jsonargparse.**
Every field is already declared with `option(default, help, check)`, so the help text, the
default and the choices (`choice(...)` checks) are in the dataclass metadata and need no second
source. The command line must keep flat flags (`--beta`, `--lr`, not `--learner.beta`) shared
by several learners with different defaults, and a comma-separated `--learner nte,sgd` that
runs several learners with one set of flags: the libraries map one flag to one dataclass field
(nested prefixes or subcommands per learner), which would change every documented command.
Generating argparse keeps the standard library's behaviour (usage, `--help`, errors) and adds
no dependency.
"""

import argparse
import collections.abc
import dataclasses
import json
import re
import textwrap
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..data._load import _SPECS
from ._config import SECTIONS, Config
from ._fields import choices_of, help_text
from ._learner import available_learners, learner_config
from ._parallel import DataParallel

# The command line's own defaults (every other default is the Config's): the learners run one
# after another, and the folder that receives OUT/<learner>/.
LEARNERS = "nte,sgd"
OUT = "runs/continual"
# Flags of the multi-controller runtime (`nte.initialize_distributed`), not Config fields.
MULTI_HOST = ("coordinator", "num_processes", "process_id")
WIDTH = 88
# A script's own hyperparameter defaults: `{learner name: {hyperparameter: value}}`.
Overrides = Mapping[str, Mapping[str, Any]]
USAGE = "%(prog)s [-h] [--learner NAME,NAME,...] [--FLAG VALUE ...]"


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the paragraphs of descriptions and appends `(default: ...)` to every flag's help."""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _optional(inner):
    def parse(text: str):
        return None if text.lower() == "none" else inner(text)

    parse.__name__ = inner.__name__  # argparse names the type in its errors
    return parse


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


_ints.__name__ = "comma-separated ints"  # argparse names the type in its errors


def _default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _flag_kwargs(kind: Any, choices: Sequence[str] | None) -> dict[str, Any]:
    """argparse keywords for a field annotated `kind`."""
    if kind is bool:
        return {"action": argparse.BooleanOptionalAction}
    if kind in (tuple[int, ...], collections.abc.Sequence[int]):
        return {"type": _ints, "metavar": "INT,INT,..."}
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(kind) if a is not type(None)][0]
        return {"type": _optional(inner), "metavar": f"{inner.__name__.upper()}|none"}
    if choices:
        return {"type": kind, "choices": tuple(choices)}
    return {"type": kind}


def _escape(text: str) -> str:
    return text.replace("%", "%%")


def _summary(cls: type) -> str:
    """The first paragraph of a class docstring, without markdown links, wrapped."""
    text = (cls.__doc__ or "").strip().split("\n\n")[0]
    text = text.replace("[`", "`").replace("`][]", "`")
    text = re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", text)
    return textwrap.fill(" ".join(text.split()), WIDTH)


def _show(value: Any) -> str:
    """A default as it is typed on the command line."""
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def _learner_order(default: str) -> list[str]:
    first = [n for n in default.split(",") if n in available_learners()]
    return first + [n for n in available_learners() if n not in first]


def learner_flags() -> dict[str, dict[str, dataclasses.Field]]:
    """Every hyperparameter of every registered learner: `{field name: {learner: field}}`."""
    out: dict[str, dict[str, dataclasses.Field]] = {}
    for name in available_learners():
        for f in dataclasses.fields(type(learner_config(name))):
            out.setdefault(f.name, {})[name] = f
    return out


def _learner_help(owners: dict[str, dataclasses.Field], ours: Overrides) -> str:
    texts: dict[str, list[str]] = {}
    for name, f in owners.items():
        texts.setdefault(help_text(f), []).append(name)
    if len(texts) == 1:
        (text,) = texts
    else:
        text = "; ".join(f"{', '.join(names)}: {t}" for t, names in texts.items())
    defaults = ", ".join(f"{n} {_show(_own(f, ours.get(n, {})))}" for n, f in owners.items())
    return _escape(f"{text} (default: {defaults})")


def _own(f: dataclasses.Field, overrides: Mapping[str, Any]) -> Any:
    """The default of field `f`: the script's override if it has one, else the dataclass's."""
    return overrides[f.name] if f.name in overrides else _default(f)


def _check_overrides(defaults: Mapping[str, Any], learner_defaults: Overrides) -> None:
    """Every key of `defaults` a Config section field, every key of `learner_defaults` a
    registered learner with hyperparameters of that learner (`ValueError` naming it)."""
    fields = {f.name for cls in SECTIONS.values() for f in dataclasses.fields(cls)}
    unknown = sorted(set(defaults) - fields - {"out"})
    if unknown:
        raise ValueError(f"`defaults`: not fields of a Config section: {', '.join(unknown)}.")
    for name, values in learner_defaults.items():
        if name not in available_learners():
            raise ValueError(
                f"`learner_defaults`: {name!r} is not a learner "
                f"({', '.join(available_learners())})."
            )
        learner_config(name, **values)  # a ValueError naming a bad hyperparameter


def _learner_kwargs(owners: dict[str, dataclasses.Field]) -> dict[str, Any]:
    hints = {n: typing.get_type_hints(type(learner_config(n)))[f.name] for n, f in owners.items()}
    kinds = list(hints.values())
    optional = [k for k in kinds if type(None) in typing.get_args(k)]
    choices: list[str] = []
    for f in owners.values():
        choices += [c for c in choices_of(f) or () if c not in choices]
    return _flag_kwargs((optional or kinds)[0], choices or None)


def _add_learner_groups(p: argparse.ArgumentParser, default: str, ours: Overrides) -> None:
    flags, added = learner_flags(), set()
    for name in _learner_order(default):
        cls = type(learner_config(name))
        fields = dataclasses.fields(cls)
        takes = " ".join(f"{_flag(f.name)} {_show(_own(f, ours.get(name, {})))}" for f in fields)
        takes = f"Flags of --learner {name} (its defaults): {takes}"
        takes = textwrap.fill(takes, WIDTH, subsequent_indent="  ", break_on_hyphens=False)
        desc = f"{_summary(cls)}\n{takes}"
        group = p.add_argument_group(f"learner {name}", _escape(desc))
        for f in fields:
            if f.name in added:
                continue
            added.add(f.name)
            owners = flags[f.name]
            help_ = _learner_help(owners, ours)
            group.add_argument(_flag(f.name), default=argparse.SUPPRESS,
                               help=help_, **_learner_kwargs(owners))  # fmt: skip


def _learner_names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in available_learners()]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"{', '.join(unknown) or repr(text)}: expected comma-separated names from "
            f"{', '.join(available_learners())}"
        )
    return names


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not JSON ({e}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def _add_top(p: argparse.ArgumentParser, learners: str) -> None:
    p.add_argument("--learner", type=_learner_names, default=learners, metavar="NAME,NAME,...",
                   help="comma-separated learners, run one after another into OUT/<learner>/; "
                   f"names: {', '.join(available_learners())}")  # fmt: skip
    p.add_argument("--learner-kwargs", type=_json_object, default={}, metavar="JSON",
                   help="more learner hyperparameters, as a JSON object")  # fmt: skip


def _add_section(p: argparse.ArgumentParser, name: str, cls: type, ours: Mapping[str, Any]) -> Any:
    group = p.add_argument_group(name, _escape(_summary(cls)))
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if name == "training" and f.name == "out":
            group.add_argument("--out", default=ours["out"], help="output folder: "
                               "OUT/<learner>/ per learner, with config.json, metrics.json and "
                               "plots")  # fmt: skip
            continue
        kw = _flag_kwargs(hints[f.name], choices_of(f))
        help_ = _escape(help_text(f))
        group.add_argument(_flag(f.name), default=_own(f, ours), help=help_, **kw)
    return group


def parser(
    *,
    prog: str = "python -m experiments.continual",
    description: str | None = None,
    learners: str = LEARNERS,
    out: str = OUT,
    defaults: Mapping[str, Any] | None = None,
    learner_defaults: Overrides | None = None,
) -> argparse.ArgumentParser:
    """An `argparse` parser with one flag per field of the Config sections and per learner
    hyperparameter, with help text, defaults and choices, grouped by section.

    **Arguments:**

    - `prog`: the program name shown in the usage line (`python -m experiments.<name>`).
    - `description`: text shown above the flags (paragraphs and indentation are kept).
    - `learners`: the default of `--learner` (a comma-separated list of registered names).
    - `out`: the default of `--out` (each learner writes `OUT/<learner>/`).
    - `defaults`: the script's own defaults of Config section fields, e.g.
      `{"width": 2048, "epochs": 2}` (shown in `--help`).
    - `learner_defaults`: the script's own hyperparameter defaults per learner, e.g.
      `{"sgd": {"lr": 0.01}, "adam": {"lr": 1e-3, "b2": 0.99}}`: a flag given on the command
      line (`--lr 0.1`) still applies to every chosen learner that has it.

    Section defaults are the `Config` defaults unless `defaults` names them, so without
    overrides `configs_from_args([])` gives `Config(learner=name, out=f"{out}/{name}")` for each
    default learner. Learner flags default to each learner's own default (or its entry in
    `learner_defaults`). A key of `defaults` that is not a section field, or of
    `learner_defaults` that is not a learner or one of its hyperparameters, is a `ValueError`
    naming it. The devices group also holds the multi-host flags
    `--coordinator --num-processes --process-id` (for `nte.initialize_distributed`).
    """
    defaults, learner_defaults = dict(defaults or {}), dict(learner_defaults or {})
    _check_overrides(defaults, learner_defaults)
    p = argparse.ArgumentParser(
        prog=prog, usage=USAGE, description=description, formatter_class=HelpFormatter
    )
    _add_top(p, learners)
    for name, cls in SECTIONS.items():
        if name == "devices":
            _add_learner_groups(p, learners, learner_defaults)
        group = _add_section(p, name, cls, {"out": out, **defaults})
    group.add_argument(
        "--coordinator",
        default=None,
        metavar="HOST:PORT",
        help="multi-host: address of process 0 (or JAX_COORDINATOR_ADDRESS)",
    )
    group.add_argument(
        "--num-processes",
        type=int,
        default=None,
        help="multi-host: number of processes (or JAX_NUM_PROCESSES)",
    )
    group.add_argument("--process-id", type=int, default=None,
                       help="multi-host: this process's index (or JAX_PROCESS_ID)")  # fmt: skip
    p.set_defaults(learner_defaults=learner_defaults)
    return p


_new_parser = parser


def configs(args: dict[str, Any]) -> dict[str, Config]:
    """One validated Config per learner of parsed flags `args` (`vars(namespace)`); raises a
    `ValueError` naming the flag for a bad value or a learner flag no chosen learner has."""
    args = {k: v for k, v in args.items() if k not in MULTI_HOST}
    names = args.pop("learner")
    names = _learner_names(names) if isinstance(names, str) else list(names)
    out = Path(args.pop("out"))
    ours = args.pop("learner_defaults", {})
    flags = learner_flags()
    hyper = {**args.pop("learner_kwargs"), **{k: args.pop(k) for k in flags if k in args}}
    owned = {f for n in names for f in flags if n in flags[f]}
    unused = sorted(set(hyper) - owned)
    if unused:
        flags_ = ", ".join(_flag(k) for k in unused)
        raise ValueError(f"{flags_}: a flag of none of the chosen learners ({', '.join(names)}).")
    result = {}
    for name in names:
        mine = {**ours.get(name, {})}
        mine |= {k: v for k, v in hyper.items() if name in flags.get(k, {name: None})}
        result[name] = Config(learner=name, out=str(out / name), **args, **mine)
    _check_dataset(result[names[0]].data)
    return result


def _check_dataset(data: Any) -> None:
    """The dataset name against the source (as `nte.data.load` checks it), without loading."""
    spec = _SPECS.get(data.dataset)
    if spec is None and data.source != "tfds":
        raise ValueError(
            f"`dataset` must be one of {', '.join(_SPECS)} (or a tensorflow-datasets name with "
            f"--source tfds), got {data.dataset!r}."
        )
    if spec is not None and data.source not in ("auto", "tfds", *spec.sources):
        raise ValueError(
            f"`source` {data.source!r} does not provide {data.dataset!r}; use one of "
            f"{', '.join(('auto', *spec.sources))}."
        )


def check_devices(runs: dict[str, Config]) -> None:
    """Build the device mesh of every config (a `ValueError` naming `mesh`, `devices`, `seeds`
    or `batch_size` when it does not fit the devices); call it after `jax.distributed` starts."""
    for config in runs.values():
        DataParallel(config.training, config.devices)


def error_message(e: Exception) -> str:
    """A config error as a command-line message: `` `name` `` becomes `--name`."""
    return re.sub(r"`(\w+)`", lambda m: _flag(m.group(1)), str(e))


def configs_from_args(
    args: Sequence[str] | argparse.Namespace | None = None,
    *,
    parser: argparse.ArgumentParser | None = None,
) -> dict[str, Config]:
    """One validated [`nte.continual.Config`][] per learner of `--learner`, from a command line.

    **Arguments:**

    - `args`: the command-line words (default `sys.argv[1:]`) or a namespace already parsed
      by `parser`.
    - `parser`: the parser of [`nte.continual.parser`][] (default: a fresh one).

    **Returns:**

    `{learner name: Config}` in the order of `--learner`, each writing to `OUT/<learner>`.

    A bad flag or value exits through `parser.error` (a one-line message, exit status 2),
    before any data is loaded or any file is written.
    """
    p = parser if parser is not None else _new_parser()
    ns = args if isinstance(args, argparse.Namespace) else p.parse_args(args)
    try:
        return configs(vars(ns))
    except ValueError as e:
        p.error(error_message(e))
