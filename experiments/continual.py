"""Continual learning from the command line: flags → `nte.continual.Config` → `nte.continual.run`.

    python -m experiments.continual                       # permuted digits, NTE and SGD
    python -m experiments.continual --dataset fashion_mnist --learner nte,sgd,adam --width 1000

Every field of the `nte.continual.Config` sections is a flag (`batch_size` ↔ `--batch-size`),
with the Config's defaults; so is every learner hyperparameter (`--beta`, `--lr`, ...: each
learner takes those it has, with its own defaults). The flags are generated from the Config's
field metadata by `nte.continual.parser`. `--learner` takes a comma-separated list (default
`nte,sgd`) and runs each learner into `OUT/<learner>/` (default `runs/continual`) with
`config.json`, `metrics.json` (R, ACC, BWT, FWT, forgetting, wall time, steps/s),
`accuracy_matrix.png` and `per_task_accuracy.png`; `OUT/summary.json` and `OUT/comparison.png`
compare them. Rerunning the same command resumes an interrupted run from its checkpoints.

`--devices N` / `--mesh seed=2,data=2` choose the devices (default: all); on several hosts run the
same command on each with `--coordinator HOST:PORT --num-processes N --process-id I` (see
docs/scale.md). Only process 0 writes files.
"""

import textwrap
import time
from pathlib import Path

from nte import continual
from nte._internal._io import atomic_write_json
from nte.continual import _cli

from . import _plots, _scale

PROG = "python -m experiments.continual"


def parser():
    """The command line: `nte.continual.parser` with this script's usage and description."""
    return continual.parser(prog=PROG, description=__doc__)


def run_one(config: continual.Config, write: bool = True, **run_kwargs) -> dict:
    """Run one config, write its folder (config, metrics, plots) and return its summary
    (`run_kwargs`: `model`, `dataset`, `observers` of `nte.continual.run`)."""
    out = Path(config.training.out)
    if write:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "config.json", config.to_dict())
    result = continual.run(config, **run_kwargs)
    summary = result.summary()
    if not write:
        return {"summary": summary, "R": result.R, "finished": result.finished}
    atomic_write_json(out / "metrics.json", summary)
    if result.finished:
        title = f"{config.learner.name}: {settings(config)}"
        _plots.accuracy_matrix(result.R, out / "accuracy_matrix.png", title)
        _plots.per_task_accuracy(result.R, out / "per_task_accuracy.png", title)
    return {"summary": summary, "R": result.R, "finished": result.finished}


def _fmt(stat: dict) -> str:
    mean, std = stat["mean"], stat["std"]
    return "nan" if mean is None else f"{mean:.3f} ± {std:.3f}"


LEGEND = (
    "ACC: mean final accuracy over tasks; BWT: backward transfer (final minus just-trained "
    "accuracy, old tasks); FWT: forward transfer (accuracy just before training a task minus "
    "the untrained model's); forgetting: best earlier minus final accuracy, mean over old "
    "tasks. Each mean ± std over seeds."
)


def settings(config: continual.Config) -> str:
    """The settings shared by the learners of one command, on one line."""
    d, m, t = config.data, config.model, config.training
    return (
        f"{d.scenario}-{d.dataset}, {d.tasks} tasks, MLP {m.depth}×{m.width}, "
        f"{t.epochs} epoch(s), batch {t.batch_size}, {t.seeds} seed(s)"
    )


STATS = ("ACC", "BWT", "FWT", "mean_forgetting")


def table(results: dict[str, dict], runs: dict[str, continual.Config]) -> str:
    """The final table: the settings, one row per learner, its hyperparameters, a legend."""
    head = f"{'learner':<12} {'ACC':>15} {'BWT':>15} {'FWT':>15} {'forgetting':>15}"
    rows = [f"settings: {settings(next(iter(runs.values())))}", head + "  steps/s    time"]
    for name, r in results.items():
        s = r["summary"]
        stats = " ".join(f"{_fmt(s[k]):>15}" for k in STATS)
        rows.append(f"{name:<12} {stats} {s['steps_per_second']:>8.0f} {s['wall_time_s']:>6.1f}s")
    for name in results:
        hp = ", ".join(f"{k}={v}" for k, v in runs[name].learner.to_dict().items() if k != "name")
        rows.append(textwrap.fill(f"{name}: {hp}", 100, subsequent_indent="    "))
    return "\n".join([*rows, textwrap.fill(LEGEND, 100)])


def main(argv: list[str] | None = None) -> dict:
    p = parser()
    ns = p.parse_args(argv)
    runs = continual.configs_from_args(ns, parser=p)  # every flag checked before any work
    args = vars(ns)
    write = _scale.setup(args)  # jax.distributed if asked; only process 0 writes
    try:
        _cli.check_devices(runs)  # the mesh fits the devices, before any file is written
    except ValueError as e:
        p.error(_cli.error_message(e))
    if not write:
        runs = {n: c.replace(progress=False) for n, c in runs.items()}
    out = Path(args["out"])
    t0 = time.perf_counter()
    results = {name: run_one(config, write) for name, config in runs.items()}
    if not write:
        return {n: r["summary"] for n, r in results.items()}
    print(table(results, runs))
    finished = {n: r["R"] for n, r in results.items() if r["finished"]}
    if finished:
        title = settings(next(iter(runs.values())))
        _plots.compare(finished, out / "comparison.png", title)
    total = time.perf_counter() - t0
    overview = {n: r["summary"] for n, r in results.items()} | {"total_wall_time_s": total}
    atomic_write_json(out / "summary.json", overview)
    print(f"wrote {out}/ in {total:.1f}s")
    return overview


if __name__ == "__main__":
    main()
