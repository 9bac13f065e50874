"""Continual learning from the command line: flags → `nte.continual.Config` → `nte.continual.run`.

    python -m experiments.continual                       # permuted digits, NTE and SGD
    python -m experiments.continual --dataset fashion_mnist --learner nte,sgd,adam --width 1000

Every field of `nte.continual.Config` is a flag (`batch_size` ↔ `--batch-size`); `--learner`
takes a comma-separated list and runs each learner into `OUT/<learner>/` with `config.json`,
`metrics.json` (R, ACC, BWT, FWT, forgetting, wall time, steps/s), `accuracy_matrix.png` and
`per_task_accuracy.png`; `OUT/summary.json` and `OUT/comparison.png` compare them. Rerunning the
same command resumes an interrupted run from its checkpoints.

`--devices N` / `--mesh seed=2,data=2` choose the devices (default: all); on several hosts run the
same command on each with `--coordinator HOST:PORT --num-processes N --process-id I` (see
docs/scale.md). Only process 0 writes files.
"""

import argparse
import dataclasses
import json
import time
import types
import typing
from pathlib import Path

from nte import continual
from nte._internal._io import atomic_write_json

from . import _plots, _scale

# The no-flag demo: permuted digits, NTE vs SGD, 3 seeds, 3 epochs per task (< 2 min on 2 cores).
DEFAULTS = {
    "learner": "nte,sgd",
    "out": "runs/continual",
    "epochs": 3,
    "lr": 0.05,
    "beta": 0.03,
    "seeds": 3,
}


def _optional_float(text: str) -> float | None:
    return None if text.lower() == "none" else float(text)


def _flag_type(field: dataclasses.Field):
    kind = field.type
    if kind is bool:
        return {"action": argparse.BooleanOptionalAction}
    if kind is dict:
        return {"type": json.loads, "metavar": "JSON"}
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(kind) if a is not type(None)][0]
        return {"type": _optional_float if inner is float else inner, "metavar": inner.__name__}
    return {"type": kind}


def parser() -> argparse.ArgumentParser:
    """One flag per `Config` field; defaults are `Config`'s, except those in `DEFAULTS`."""
    p = argparse.ArgumentParser(prog="python -m experiments.continual", description=__doc__)
    for f in dataclasses.fields(continual.Config):
        default = DEFAULTS.get(f.name, f.default if f.default is not dataclasses.MISSING else {})
        kw = _flag_type(f) if f.name not in ("learner", "out") else {"type": str}
        p.add_argument("--" + f.name.replace("_", "-"), default=default, **kw)
    _scale.add_flags(p)
    return p


def run_one(config: continual.Config, write: bool = True) -> dict:
    """Run one config, write its folder (config, metrics, plots) and return its summary."""
    out = Path(config.out)
    if write:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "config.json", config.to_dict())
    result = continual.run(config)
    summary = result.summary()
    if not write:
        return {"summary": summary, "R": result.R, "finished": result.finished}
    atomic_write_json(out / "metrics.json", summary)
    if result.finished:
        title = f"{config.learner} on {config.scenario}-{config.dataset}"
        _plots.accuracy_matrix(result.R, out / "accuracy_matrix.png", title)
        _plots.per_task_accuracy(result.R, out / "per_task_accuracy.png", title)
    return {"summary": summary, "R": result.R, "finished": result.finished}


def _fmt(stat: dict) -> str:
    mean, std = stat["mean"], stat["std"]
    return "nan" if mean is None else f"{mean:.3f} ± {std:.3f}"


def main(argv: list[str] | None = None) -> dict:
    args = vars(parser().parse_args(argv))
    write = _scale.setup(args)  # jax.distributed if asked; only process 0 writes
    args["progress"] = args["progress"] and write
    learners = [name.strip() for name in args.pop("learner").split(",") if name.strip()]
    out = Path(args.pop("out"))
    t0 = time.perf_counter()
    results = {}
    for name in learners:
        config = continual.Config(learner=name, out=str(out / name), **args)
        results[name] = run_one(config, write)
    rows = [f"{'learner':<12} {'ACC':>15} {'BWT':>15} {'FWT':>15} {'steps/s':>9} {'time':>7}"]
    for name, r in results.items():
        s = r["summary"]
        rows.append(
            f"{name:<12} {_fmt(s['ACC']):>15} {_fmt(s['BWT']):>15} {_fmt(s['FWT']):>15} "
            f"{s['steps_per_second']:>9.0f} {s['wall_time_s']:>6.1f}s"
        )
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
    main()
