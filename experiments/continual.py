"""Continual learning from the command line: flags → `nte.continual.Config` → `nte.continual.run`.

    python -m experiments.continual                       # permuted digits, NTE and SGD
    python -m experiments.continual --dataset fashion_mnist --learner nte,sgd,adam --width 1000

Every field of the `nte.continual.Config` sections is a flag (`batch_size` ↔ `--batch-size`),
with the Config's defaults; so is every learner hyperparameter (`--beta`, `--lr`, ...: each
learner takes those it has, with its own defaults). `--learner` takes a comma-separated list
(default `nte,sgd`) and runs each learner into `OUT/<learner>/` (default `runs/continual`) with
`config.json`,
`metrics.json` (R, ACC, BWT, FWT, forgetting, wall time, steps/s), `accuracy_matrix.png` and
`per_task_accuracy.png`; `OUT/summary.json` and `OUT/comparison.png` compare them. Rerunning the
same command resumes an interrupted run from its checkpoints; a finished learner is not
retrained ("already complete", its `metrics.json` is never rewritten) unless `--overwrite`.
A learner whose checkpoint cannot be trusted (corrupt, of another config), whose folder another
process holds, or whose run diverged is reported in one line; the others still run, and the
command exits with status 1.

`--devices N` / `--mesh seed=2,data=2` choose the devices (default: all); on several hosts run the
same command on each with `--coordinator HOST:PORT --num-processes N --process-id I` (see
docs/scale.md). Only process 0 writes files.
"""

import argparse
import collections.abc
import dataclasses
import json
import sys
import time
import types
import typing
import warnings
from pathlib import Path

import numpy as np

from nte import continual
from nte._internal._io import atomic_write_json, read_json
from nte._internal._lock import FolderLockedError
from nte.continual._checkpoint import CheckpointError, differences
from nte.continual._guard import hold

from . import _plots, _scale

# The command line's own defaults (every other default is the Config's): the learners it runs
# one after another, and the folder that receives OUT/<learner>/.
LEARNERS = "nte,sgd"
OUT = "runs/continual"


def _section_classes() -> dict[str, type]:
    """The Config sections other than the learner's, by name."""
    hints = typing.get_type_hints(continual.Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(continual.Config)
            if f.name != "learner"}  # fmt: skip


def _learner_class(name: str) -> type:
    return type(continual.learner_config(name))


def _help(f: dataclasses.Field) -> str:
    return f.metadata.get("help", "")


def _optional(inner):
    return lambda text: None if text.lower() == "none" else inner(text)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def _flag_type(kind) -> dict:
    """argparse keywords for a field annotated `kind`."""
    if kind is bool:
        return {"action": argparse.BooleanOptionalAction}
    if kind in (tuple[int, ...], collections.abc.Sequence[int]):
        return {"type": _ints, "metavar": "INT,INT,..."}
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(kind) if a is not type(None)][0]
        return {"type": _optional(inner), "metavar": f"{inner.__name__}|none"}
    return {"type": kind}


def learner_fields() -> dict[str, tuple[type, str, dict[str, object]]]:
    """Every hyperparameter of every registered learner: (type, help, {learner: default})."""
    out: dict = {}
    for name in continual.available_learners():
        cls = _learner_class(name)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            entry = out.setdefault(f.name, (hints[f.name], _help(f), {}))
            entry[2][name] = f.default if f.default is not dataclasses.MISSING else None
    return out


def parser() -> argparse.ArgumentParser:
    """One flag per field of the Config sections, one per learner hyperparameter."""
    p = argparse.ArgumentParser(prog="python -m experiments.continual", description=__doc__)
    p.add_argument("--learner", default=LEARNERS, help="comma-separated learner names")
    p.add_argument("--out", default=OUT, help="output folder (one sub-folder per learner)")
    for section, cls in _section_classes().items():
        group = p.add_argument_group(section)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name == "out":
                continue
            kw = _flag_type(hints[f.name])
            flag = "--" + f.name.replace("_", "-")
            group.add_argument(flag, default=f.default, help=_help(f), **kw)
    group = p.add_argument_group("learner hyperparameters (each learner takes those it has)")
    for name, (kind, text, defaults) in learner_fields().items():
        info = ", ".join(f"{k} {v}" for k, v in defaults.items())
        flag = "--" + name.replace("_", "-")
        group.add_argument(flag, default=argparse.SUPPRESS, help=f"{text} ({info})",
                           **_flag_type(kind))  # fmt: skip
    group.add_argument("--learner-kwargs", type=json.loads, default={}, metavar="JSON",
                       help="more learner hyperparameters, as a JSON object")  # fmt: skip
    _scale.add_flags(p)
    return p


def configs(args: dict) -> dict[str, continual.Config]:
    """One Config per learner of `args` (parsed flags): each learner takes the learner flags
    it has; a learner flag that no chosen learner has is an error."""
    args = dict(args)
    names = [n.strip() for n in args.pop("learner").split(",") if n.strip()]
    out = Path(args.pop("out"))
    hyper = {
        **args.pop("learner_kwargs"),
        **{k: args.pop(k) for k in learner_fields() if k in args},
    }
    for name in names:
        continual.learner_config(name)  # an unknown name: a ValueError naming `learner`
    owned = {k for n in names for k in (f.name for f in dataclasses.fields(_learner_class(n)))}
    unused = sorted(set(hyper) - owned)
    if unused:
        raise ValueError(f"learner flags {unused} belong to none of the learners {names}.")
    result = {}
    for name in names:
        own = {f.name for f in dataclasses.fields(_learner_class(name))}
        mine = {k: v for k, v in hyper.items() if k in own}
        result[name] = continual.Config(learner=name, out=str(out / name), **args, **mine)
    return result


def run_one(config: continual.Config, write: bool = True, **run_kwargs) -> dict:
    """Run one config, write its folder (metrics, plots; `nte.continual.run` writes the config
    once accepted) and return its summary (`run_kwargs`: `model`, `dataset`, `observers` of
    `nte.continual.run`). The folder stays locked from the check to the last write; a finished
    learner of the same config is not rerun (its summary is read back)."""
    if not write:
        result = _run_reporting(config, run_kwargs)
        return {"summary": result.summary(), "R": result.R, "finished": result.finished}
    out = Path(config.training.out)
    with hold(out):
        done = None if config.training.overwrite else _already_done(config, out)
        if done is not None:
            word = "complete" if done["status"] == "complete" else "diverged"
            print(f"already {word}: {out} (use --overwrite to retrain)")
            R = np.asarray(done["R"]["per_seed"], np.float64)
            return {"summary": done, "R": R, "finished": done["status"] == "complete"}
        result = _run_reporting(config, run_kwargs)
        summary = result.summary()
        atomic_write_json(out / "metrics.json", summary)
        if result.finished:
            title = f"{config.learner.name} on {config.data.scenario}-{config.data.dataset}"
            _plots.accuracy_matrix(result.R, out / "accuracy_matrix.png", title)
            _plots.per_task_accuracy(result.R, out / "per_task_accuracy.png", title)
    return {"summary": summary, "R": result.R, "finished": result.finished}


def _run_reporting(config: continual.Config, run_kwargs: dict) -> continual.Result:
    """`nte.continual.run`, its `RuntimeWarning`s (divergence, degenerate weights) printed as
    one line each."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        result = continual.run(config, **run_kwargs)
    for w in caught:
        if issubclass(w.category, RuntimeWarning):
            print(f"warning: {config.learner.name}: {w.message}", flush=True)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    return result


def _already_done(config: continual.Config, out: Path) -> dict | None:
    """The summary of a finished (complete or diverged) run in `out`, or `None`; a
    `CheckpointError` naming the fields if it was run with another config."""
    metrics, recorded = out / "metrics.json", out / "config.json"
    if not metrics.exists():
        return None
    summary = read_json(metrics)
    if summary.get("status", "complete" if summary.get("finished") else "stopped") not in (
        "complete", "diverged"
    ):  # fmt: skip
        return None
    summary.setdefault("status", "complete")
    old = continual.Config.from_dict(read_json(recorded)).identity() if recorded.exists() else {}
    diff = differences(old, config.identity())
    if diff:
        raise CheckpointError(
            f"{str(out)!r} holds the finished results of a different configuration "
            f"({'; '.join(diff)}); rerun with --overwrite to replace them, or choose another "
            "--out."
        )
    return summary


# The failures that concern one learner: reported in one line, the other learners still run.
LEARNER_ERRORS = (CheckpointError, FolderLockedError, OSError)


def run_all(runs: dict[str, continual.Config], write: bool) -> dict[str, dict]:
    """`run_one` for every learner; a failure of one (`LEARNER_ERRORS`) is printed in one
    line and recorded as `{"status": "error", "error": message}`."""
    results = {}
    for name, config in runs.items():
        try:
            results[name] = run_one(config, write)
        except LEARNER_ERRORS as e:
            print(f"error: {name}: {e}", file=sys.stderr, flush=True)
            results[name] = {"summary": {"status": "error", "error": str(e)}, "finished": False}
    return results


def exit_code(overview: dict) -> int:
    """0 if every learner completed or stopped as asked, 1 if one diverged or failed."""
    statuses = [v.get("status") for v in overview.values() if isinstance(v, dict)]
    return int(any(s in ("diverged", "error") for s in statuses))


def _fmt(stat: dict) -> str:
    mean, std = stat["mean"], stat["std"]
    return "nan" if mean is None else f"{mean:.3f} ± {std:.3f}"


def _row(name: str, s: dict) -> str:
    if s.get("status") == "error":
        return f"{name:<12} error (see above)"
    row = f"{name:<12} {_fmt(s['ACC']):>15} {_fmt(s['BWT']):>15} {_fmt(s['FWT']):>15} "
    row += f"{s['steps_per_second']:>9.0f} {s['wall_time_s']:>6.1f}s"
    return row + ("  DIVERGED" if s.get("status") == "diverged" else "")


def main(argv: list[str] | None = None) -> dict:
    p = parser()
    args = vars(p.parse_args(argv))
    write = _scale.setup(args)  # jax.distributed if asked; only process 0 writes
    args["progress"] = args["progress"] and write
    out = Path(args["out"])
    try:
        runs = configs(args)
    except ValueError as e:
        p.error(str(e))
    t0 = time.perf_counter()
    results = run_all(runs, write)
    rows = [f"{'learner':<12} {'ACC':>15} {'BWT':>15} {'FWT':>15} {'steps/s':>9} {'time':>7}"]
    rows += [_row(name, r["summary"]) for name, r in results.items()]
    if not write:
        return {n: r["summary"] for n, r in results.items()}
    print("\n".join(rows))
    finished = {n: r["R"] for n, r in results.items() if r["finished"]}
    if finished:
        _plots.compare(finished, out / "comparison.png", f"{args['scenario']}-{args['dataset']}")
    total = time.perf_counter() - t0
    overview = {n: r["summary"] for n, r in results.items()} | {"total_wall_time_s": total}
    atomic_write_json(out / "summary.json", overview)
    print(f"wrote {out}/ in {total:.1f}s")
    return overview


if __name__ == "__main__":
    sys.exit(exit_code(main()))
