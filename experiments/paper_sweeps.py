"""The paper's hyperparameter figures under the authors' protocol (permuted Fashion-MNIST, first
task permuted too, 5 tasks × 2 epochs, batch 128, depth-2 MLP; see `experiments/_protocol.py`).
Each sweep writes its section of `docs/results.md` and its figure in `docs/results/`.

    python -m experiments.paper_sweeps momentum    # Fig. 4: SGD momentum, buffer kept or reset
    python -m experiments.paper_sweeps beta-eta    # appendix: NTE over β × η, three heatmaps
    python -m experiments.paper_sweeps fair-lr     # each learner at its best lr / β on task 1

momentum: SGD (lr 0.01) with momentum 0, 0.5, 0.8, 0.9, 0.95, 0.99, the buffer carried across
tasks (the paper) and zeroed at every task end (`reset_momentum`). beta-eta: NTE with β in
0.001 … 0.1 and η in 0.1, 0.3, 1 (max_delta 0.1). fair-lr: every learner's step size (NTE: β)
chosen on task 1 alone, by the accuracy on a validation split (10 % of the training set, never
the test set), then the full protocol with that value next to the authors' value (the
reference runs are read from, or written to, the width sweep's folders). Every run is
checkpointed: rerunning resumes it and skips finished runs; `--report-only` rewrites the
report from the runs finished so far.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

from . import _protocol, _sweep_reports

MOMENTA = (0.0, 0.5, 0.8, 0.9, 0.95, 0.99)
BETAS = (0.001, 0.003, 0.01, 0.03, 0.1)
ETAS = (0.1, 0.3, 1.0)
# The value each learner's fair-lr selection sweeps, and its grid.
GRIDS = {
    "nte": ("beta", (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)),
    "sgd": ("lr", (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)),
    "adam": ("lr", (3e-5, 1e-4, 3e-4, 1e-3, 3e-3)),
}
# Seeds per run unless --seeds: fair-lr's final runs have the width sweep's (they share its
# reference runs), the other sweeps one.
SEEDS = {"fair-lr": 3, "momentum": 1, "beta-eta": 1}
SWEEPS = ("momentum", "beta-eta", "fair-lr")


def momentum_run(m: float, reset: bool = False) -> str:
    """The run name of SGD with momentum `m` (momentum 0 has no buffer to reset)."""
    return f"sgd-m{m}" + ("-reset" if reset and m > 0 else "")


def beta_eta_run(beta: float, eta: float) -> str:
    return f"nte-b{beta}-e{eta}"


def select_run(learner: str, value: float) -> str:
    """The run name of a fair-lr selection run of `learner` at its grid `value`."""
    return f"select-{learner}-{GRIDS[learner][0]}{value}"


def plan_momentum(args: argparse.Namespace) -> dict:
    """`sgd-m<momentum>` (buffer kept) and `sgd-m<momentum>-reset` (zeroed at task ends)."""
    runs = {}
    for m in MOMENTA:
        for reset in (False, True) if m > 0 else (False,):
            name = momentum_run(m, reset)
            runs[name] = _protocol.config(
                "sgd", args, width=args.width, seeds=args.seeds, out=args.out / name,
                momentum=m, reset_momentum=reset,
            )  # fmt: skip
    return runs


def plan_beta_eta(args: argparse.Namespace) -> dict:
    """`nte-b<β>-e<η>` for every pair."""
    runs = {}
    for b in BETAS:
        for e in ETAS:
            name = beta_eta_run(b, e)
            runs[name] = _protocol.config(
                "nte", args, width=args.width, seeds=args.seeds, out=args.out / name, beta=b, eta=e
            )
    return runs


def plan_select(args: argparse.Namespace) -> dict:
    """The selection runs: task 1 alone, evaluated on the validation split, one per grid value."""
    runs = {}
    for learner, (key, values) in GRIDS.items():
        for v in values:
            name = select_run(learner, v)
            runs[name] = _protocol.config(
                learner, args, width=args.width, seeds=1, out=args.out / name, tasks=1,
                validation=args.validation, **{key: v},
            )  # fmt: skip
    return runs


def chosen(args: argparse.Namespace, finished: dict) -> dict[str, float]:
    """Each learner's grid value with the best validation accuracy, once all its selection
    runs finished (a tie that includes the authors' value keeps it; a diverged run or a NaN
    accuracy is the worst; none is chosen when all diverged)."""
    best = {}
    for learner, (key, values) in GRIDS.items():
        acc = [finished.get(select_run(learner, v)) for v in values]
        if all(a is not None for a in acc):
            scores = [-np.inf if a.get("diverged") else a["peak"][0] for a in acc]
            scores = [-np.inf if np.isnan(x) else x for x in scores]
            if max(scores) == -np.inf:
                continue  # every value diverged: none chosen
            top = [v for v, s in zip(values, scores) if s == max(scores)]
            ref = _protocol.REFERENCE[learner][key]
            best[learner] = ref if ref in top else top[0]  # a tie keeps the authors' value
    return best


def plan_fair(args: argparse.Namespace, best: dict[str, float]) -> dict:
    """The full-protocol runs: `reference-<learner>` (the authors' value, in the width sweep's
    folder) and `fair-<learner>` (the chosen value; the same run when it is the authors')."""
    runs = {}
    for learner, (key, _) in GRIDS.items():
        ref = _protocol.REFERENCE[learner][key]
        folder = args.reference_out / f"{learner}-w{args.width}"
        runs[f"reference-{learner}"] = _protocol.config(
            learner, args, width=args.width, seeds=args.seeds, out=folder
        )
        if learner in best:
            v = best[learner]
            out = folder if v == ref else args.out / f"fair-{learner}-{key}{v}"
            runs[f"fair-{learner}"] = _protocol.config(
                learner, args, width=args.width, seeds=args.seeds, out=out, **{key: v}
            )
    return runs


def finished_runs(runs: dict) -> dict:
    """`{name: first-task metrics}` of the finished runs among `runs`; a run that diverged is
    `{"diverged": True}` (a selection counts it as the worst value, reports say so)."""
    from nte._internal._io import read_json

    out = {name: _protocol.first_task(m) for name, m in _protocol.finished(runs).items()}
    for name, config in runs.items():
        path = Path(config.training.out) / "metrics.json"
        if name not in out and path.exists() and read_json(path).get("status") == "diverged":
            out[name] = {"diverged": True}
    return out


def parser() -> argparse.ArgumentParser:
    p = _protocol.parser("python -m experiments.paper_sweeps", __doc__, "runs/paper_sweeps")
    p.add_argument("sweep", choices=SWEEPS, help="which figure")
    p.add_argument("--width", type=int, default=1000, help="hidden width of both layers")
    p.add_argument("--seeds", type=int, default=None,
                   help="seeds per run (fair-lr: its final runs; default 3, else 1)")  # fmt: skip
    p.add_argument("--validation", type=float, default=0.1,
                   help="fair-lr: training fraction held out for the selection")  # fmt: skip
    p.add_argument("--reference-out", type=Path, default=Path("runs/width_sweep"),
                   help="fair-lr: the width sweep's runs (the reference rows)")  # fmt: skip
    return p


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """The parsed flags completed: the sweep's own folder under `--out`, its default seeds."""
    args.out = args.out / f"{args.sweep}-w{args.width}"
    if args.seeds is None:
        args.seeds = SEEDS[args.sweep]
    return args


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    p = parser()
    args = p.parse_args(argv)
    if not 0.0 < args.validation < 1.0:
        p.error(f"argument --validation: must lie in (0, 1), got {args.validation}")
    resolve(args)
    command = _protocol.command("experiments.paper_sweeps", argv)
    plans = {"momentum": plan_momentum, "beta-eta": plan_beta_eta, "fair-lr": plan_select}
    runs = plans[args.sweep](args)

    def write_report() -> None:
        got = finished_runs(runs)
        extra = {}
        if args.sweep == "fair-lr":
            extra = finished_runs(plan_fair(args, chosen(args, got)))
        _sweep_reports.write(args, command, runs, got, extra)

    if not args.report_only:
        _protocol.run_and_report(runs, write_report)
        if args.sweep == "fair-lr":
            _protocol.run_and_report(
                plan_fair(args, chosen(args, finished_runs(runs))), write_report
            )
    write_report()


if __name__ == "__main__":
    main()
