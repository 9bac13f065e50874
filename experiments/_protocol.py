"""The authors' continual-learning protocol, shared by the scripts that test the paper's figures
(`width_sweep`, `paper_sweeps`): permuted Fashion-MNIST with the first task permuted too,
5 tasks × 2 epochs, batch 128, a depth-2 MLP; NTE β 0.01, η 1, max_delta 0.1; SGD lr 0.01
without momentum; Adam lr 1e-3 with betas (0.9, 0.99). The headline metric is the first task's
accuracy after all tasks; its "peak" is the accuracy right after training it (R[0, 0]).

Imports of `nte` (and so JAX) happen inside the functions: the scripts parse their flags first.
"""

import argparse
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._help import HelpFormatter

# The authors' hyperparameters (their code and W&B runs).
REFERENCE = {
    "nte": {"beta": 0.01, "eta": 1.0, "max_delta": 0.1},
    "sgd": {"lr": 0.01, "momentum": 0.0},
    "adam": {"lr": 1e-3, "b1": 0.9, "b2": 0.99},
}


def config(learner: str, args: argparse.Namespace, *, width: int, seeds: int, out: Path,
           **changes: Any) -> Any:  # fmt: skip
    """The `nte.continual.Config` of one run of the protocol (`changes`: any Config field or
    hyperparameter that departs from it, e.g. `momentum=0.9`, `tasks=1`)."""
    from nte import continual

    settings = dict(
        dataset=args.dataset, tasks=args.tasks, permute_first=True, width=width, depth=2,
        epochs=args.epochs, batch_size=args.batch_size, seeds=seeds, progress=args.progress,
        checkpoint_every=args.checkpoint_every, out=str(out),
        stop_after_steps=args.stop_after_steps,
    )  # fmt: skip
    return continual.Config(learner=learner, **{**settings, **REFERENCE[learner], **changes})


def headline(R: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per seed: the first task's accuracy after all tasks (the paper's headline) and right
    after training it (its peak). `R` is `[seeds, tasks, tasks]`."""
    R = np.asarray(R, np.float64)
    return R[:, -1, 0], R[:, 0, 0]


def first_task(metrics: dict) -> dict[str, Any]:
    """Per seed, from a finished run's `metrics.json`: the first task's accuracy after all
    tasks (`first`), right after training it (`peak`), ACC, BWT, and ms per step."""
    first, peak = headline(metrics["R"]["per_seed"])
    return {
        "first": first,
        "peak": peak,
        "ACC": np.asarray(metrics["ACC"]["per_seed"], np.float64),
        "BWT": np.asarray(metrics["BWT"]["per_seed"], np.float64),
        "ms_per_step": 1e3 / max(metrics["steps_per_second"], 1e-12),
    }


def finished(runs: dict) -> dict[str, dict]:
    """`{name: metrics.json}` of the finished runs among `runs` (`{name: Config}`)."""
    from .claims import _load

    loaded = {name: _load(config) for name, config in runs.items()}
    return {name: m for name, m in loaded.items() if m is not None}


ONE_SEED_MARGIN = 0.01
"""The gap two one-seed results must exceed to count as a difference (no spread to judge by)."""


def seed_spread(a: np.ndarray, b: np.ndarray) -> float | None:
    """The yardstick for "a differs from b beyond the seed spread": std(a) + std(b) over seeds
    (the ±1 std bands do not overlap), or `None` when either side has one seed."""
    if len(a) < 2 or len(b) < 2:
        return None
    return float(np.std(a) + np.std(b))


def cell(v: np.ndarray) -> str:
    """`mean ± std` over seeds (one seed: the value)."""
    return f"{v.mean():.3f} ± {v.std():.3f}" if len(v) > 1 else f"{v[0]:.3f}"


def parser(prog: str, description: str | None, out: str) -> argparse.ArgumentParser:
    """The flags every protocol script has (dataset, tasks, epochs, batch, checkpoints, output,
    report, progress); the script adds its own."""
    p = argparse.ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter)
    p.add_argument("--report-only", action="store_true", help="only rewrite the report")
    p.add_argument("--dataset", default="fashion_mnist", help="a name for nte.data.load")
    p.add_argument("--tasks", type=int, default=5, help="permuted tasks")
    p.add_argument("--epochs", type=int, default=2, help="passes over each task")
    p.add_argument("--batch-size", type=int, default=128, help="examples per step")
    p.add_argument(
        "--checkpoint-every", type=int, default=500, help="also checkpoint every k steps"
    )
    p.add_argument("--stop-after-steps", type=int, default=None,
                   help="checkpoint and stop each run after this many steps")  # fmt: skip
    p.add_argument("--out", type=Path, default=Path(out), help="output folder")
    p.add_argument("--report", type=Path, default=Path("docs/results.md"), help="report file")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="tqdm progress bars")  # fmt: skip
    return p


def learner_list(text: str) -> tuple[str, ...]:
    """An argparse type: comma-separated learners among those of the protocol."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names or (bad := [n for n in names if n not in REFERENCE]):
        raise argparse.ArgumentTypeError(
            f"unknown {bad if names else text!r}; choose among {', '.join(REFERENCE)}"
        )
    return names


def int_list(text: str) -> list[int]:
    """An argparse type: comma-separated integers >= 1 (e.g. widths)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 1, got {text!r}")
    return values


def command(module: str, argv: Sequence[str]) -> str:
    """The command line printed next to a report: `python -m <module> <argv>`, without the
    flags that do not change results (`--report-only`, `--no-progress`, `--stop-after-steps`)."""
    kept, skip = [], False
    for a in argv:
        if skip or a in ("--report-only", "--no-progress") or a.startswith("--stop-after-steps="):
            skip = False
            continue
        skip = a == "--stop-after-steps"  # and its value
        if not skip:
            kept.append(a)
    return f"python -m {module} {shlex.join(kept)}".strip()


def run_and_report(runs: dict, write_report: Callable[[], Any],
                   observers: Callable[[Any], tuple] = lambda config: ()) -> None:  # fmt: skip
    """Run every config of `runs` in order (a finished run is read back, an interrupted one
    resumes; `observers(config)`: its observers), rewriting the report after each, so partial
    results are readable while a sweep runs."""
    from .continual import run_one

    for name, config in runs.items():
        print(f"== {name}", flush=True)
        run_one(config, observers=observers(config))
        write_report()
