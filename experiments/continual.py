"""Continual learning from the command line: flags → `nte.continual.Config` → `nte.continual.run`.

    python -m experiments.continual                       # the main job (below)
    python -m experiments.continual --dataset fashion_mnist --width 1000 --seeds 1

With no flags this is the main job: the paper's protocol on permuted digits (5 tasks, 2 epochs
each, batch 128, a 2 × 2048 MLP, 3 seeds; NTE β 0.01, max_delta 0.1; SGD lr 0.01; Adam lr
1e-3, betas 0.9, 0.99; the first task unpermuted), about 75 s on 2 CPU cores, ending with a
paragraph that reads its own numbers against the paper's claims (first-task accuracy after
all tasks, seed spread).

Every field of the `nte.continual.Config` sections is a flag (`batch_size` ↔ `--batch-size`),
with the Config's defaults except the main job's (width, epochs, batch size); so is every
learner hyperparameter (`--beta`, `--lr`, ...: each learner takes those it has, with its own
defaults, or the main job's for nte, sgd, adam; a flag given applies to every chosen learner
that has it). The flags are generated from the Config's field metadata by
`nte.continual.parser`. `--learner` takes a comma-separated list (default `nte,sgd,adam`) and
runs each learner into `OUT/<learner>/` (default `runs/continual`) with
`config.json`, `metrics.json` (R, ACC, BWT, FWT, forgetting, wall time, steps/s),
`accuracy_matrix.png` and `per_task_accuracy.png`; `OUT/summary.json` and `OUT/comparison.png`
compare them. Rerunning the same command resumes an interrupted run from its checkpoints;
a finished learner is not retrained ("already complete", its `metrics.json` is never
rewritten) unless `--overwrite`. A learner whose checkpoint cannot be trusted (corrupt, of
another config), whose folder another process holds, or whose run diverged is reported in
one line; the others still run, and the command exits with status 1.

`--devices N` / `--mesh seed=2,data=2` choose the devices (default: all); on several hosts run the
same command on each with `--coordinator HOST:PORT --num-processes N --process-id I` (see
docs/scale.md). Only process 0 writes files.
"""

import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np

from nte import continual
from nte._internal._io import atomic_write_json, read_json
from nte._internal._lock import FolderLockedError
from nte.continual import _cli
from nte.continual._checkpoint import CheckpointError, differences
from nte.continual._guard import hold

from . import _plots, _protocol, _reading, _scale

PROG = "python -m experiments.continual"
# The main job: the authors' protocol (batch 128, 2 epochs per task, their hyperparameters) on
# a width where our measurements put NTE level with SGD (docs/results.md, width sweep).
LEARNERS = "nte,sgd,adam"
DEFAULTS = {"width": 2048, "depth": 2, "epochs": 2, "batch_size": 128}
LEARNER_DEFAULTS = {
    "nte": {"beta": 0.01, "max_delta": 0.1},
    "sgd": {"lr": 0.01},
    "adam": {"lr": 1e-3, "b2": 0.99},
}


def parser():
    """The command line: `nte.continual.parser` with this script's usage, description and
    defaults (the main job's)."""
    return continual.parser(
        prog=PROG, description=__doc__, learners=LEARNERS, defaults=DEFAULTS,
        learner_defaults=LEARNER_DEFAULTS,
    )  # fmt: skip


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
            title = f"{config.learner.name}: {settings(config)}"
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


LEGEND = (
    "ACC: mean final accuracy over tasks; BWT: backward transfer (final minus just-trained "
    "accuracy, old tasks); FWT: forward transfer (accuracy just before training a task minus "
    "the untrained model's); forgetting: best earlier minus final accuracy, mean over old "
    "tasks; task 1 after: the first task's accuracy after all tasks (the paper's headline), "
    "task 1 peak: right after training it. Each mean ± std over seeds."
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
    head += f" {'task 1 after':>15} {'task 1 peak':>15}"
    rows = [f"settings: {settings(next(iter(runs.values())))}", head + "  steps/s    time"]
    for name, r in results.items():
        rows.append(_row(name, r["summary"], r.get("R")))
    for name in results:
        hp = ", ".join(f"{k}={v}" for k, v in runs[name].learner.to_dict().items() if k != "name")
        rows.append(textwrap.fill(f"{name}: {hp}", 100, subsequent_indent="    "))
    return "\n".join([*rows, textwrap.fill(LEGEND, 100)])


def _row(name: str, s: dict, R: np.ndarray | None) -> str:
    """One learner's row: its statistics, or why it has none."""
    if s.get("status") == "error":
        return f"{name:<12} error (see above)"
    stats = " ".join(f"{_fmt(s[k]):>15}" for k in STATS)
    if R is not None and np.asarray(R).size:
        first = _protocol.headline(R)
        stats += " " + " ".join(f"{_fmt({'mean': f.mean(), 'std': f.std()}):>15}" for f in first)
    row = f"{name:<12} {stats} {s['steps_per_second']:>8.0f} {s['wall_time_s']:>6.1f}s"
    return row + ("  DIVERGED" if s.get("status") == "diverged" else "")


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
    results = run_all(runs, write)
    if not write:
        return {n: r["summary"] for n, r in results.items()}
    print(table(results, runs))
    paragraph = _reading.reading(results, next(iter(runs.values())).model.width)
    if paragraph:
        print(paragraph)
    finished = {n: r["R"] for n, r in results.items() if r["finished"]}
    if finished:
        title = settings(next(iter(runs.values())))
        _plots.compare(finished, out / "comparison.png", title)
    total = time.perf_counter() - t0
    overview = {n: r["summary"] for n, r in results.items()} | {"total_wall_time_s": total}
    overview["reading"] = paragraph
    atomic_write_json(out / "summary.json", overview)
    print(f"wrote {out}/ in {total:.1f}s")
    return overview


if __name__ == "__main__":
    sys.exit(exit_code(main()))
