"""Sparsity, accuracy and forgetting on permuted Fashion-MNIST: NTE with posterior pruning
(`prune_below` τ), gradual magnitude pruning around SGD, and learning by pruning only. Writes
its section of `docs/results.md` (between `<!-- pruning_forgetting:begin -->` and its end
marker) and `docs/results/pruning_forgetting.png`.

    python -m experiments.pruning_forgetting

The single-task comparison's network and settings (`experiments.pruning_sparsity`: a
784-256-10 ReLU MLP without biases, batch 128, NTE β 0.03, SGD lr 0.05, prune rate 0.01 with
score momentum 0.99), now through `nte.continual.run` on 5 permuted tasks × 1 epoch (the first
task unpermuted), 3 seeds. NTE runs one τ each (its sparsity is whatever τ gives); magnitude
pruning ramps to its target over the first 75 % of all steps, every 10 steps; prune only
prunes as it learns (Gaussian cutoff). The sparsity (fraction of weights exactly zero) is
logged at every task end. Runs are checkpointed: rerunning resumes them and skips finished
ones (`--report-only`: only the report).
"""

import argparse
import sys
from pathlib import Path

import numpy as np

from . import _protocol

TAUS = (2e-6, 4e-6, 8e-6, 9e-6)
TARGETS = (0.5, 0.8, 0.9, 0.95)


def plan(args: argparse.Namespace) -> dict:
    """`sgd`, `nte-tau<τ>`, `magnitude-<s>`, `prune_only`, all on the same tasks and seeds."""
    from nte import continual

    one = continual.load_tasks(continual.Config(dataset=args.dataset, tasks=1))
    steps = args.tasks * args.epochs * (int(one.train_count[0]) // args.batch_size)  # all tasks
    base = dict(
        dataset=args.dataset, tasks=args.tasks, epochs=args.epochs, width=args.width, depth=1,
        use_bias=False, batch_size=args.batch_size, seeds=args.seeds, progress=args.progress,
        checkpoint_every=args.checkpoint_every, stop_after_steps=args.stop_after_steps,
    )  # fmt: skip
    learners = {"sgd": continual.SGDConfig(lr=args.lr)}
    for tau in args.taus:
        learners[f"nte-tau{tau}"] = continual.NTEConfig(beta=args.beta, prune_below=tau)
    for s in args.targets:
        learners[f"magnitude-{s}"] = continual.MagnitudeConfig(
            lr=args.lr, target_sparsity=s, end_step=int(0.75 * steps), frequency=10
        )
    learners["prune_only"] = continual.PruneOnlyConfig(rate=args.rate, momentum=0.99)
    return {
        name: continual.Config(learner=lc, out=str(args.out / name), **base)
        for name, lc in learners.items()
    }


def rows(runs: dict) -> dict[str, dict]:
    """Per finished run: the first-task metrics and the sparsity per task end `[tasks, seeds]`."""
    out = {}
    for name, m in _protocol.finished(runs).items():
        ends = [r for r in m["observations"] if r["kind"] == "task_end" and "sparsity" in r]
        sparsity = np.asarray([r["sparsity"] for r in ends], np.float64)
        out[name] = {**_protocol.first_task(m), "sparsity": sparsity}
    return out


def _setting(runs: dict) -> str:
    c = next(iter(runs.values()))
    return (
        f"permuted {c.data.dataset}, {c.data.tasks} tasks × {c.training.epochs} epoch(s), batch "
        f"{c.training.batch_size}, one hidden layer of {c.model.width} without biases, "
        f"{c.training.seeds} seeds"
    )


def _plot(got: dict, path: Path, setting: str) -> None:
    from . import _plots

    plt = _plots._plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    groups = {"NTE, prune_below": "nte", "magnitude (SGD)": "magnitude",
              "prune only": "prune_only", "dense SGD": "sgd"}  # fmt: skip
    for i, (label, prefix) in enumerate(groups.items()):
        rs = sorted((r for k, r in got.items() if k.startswith(prefix)),
                    key=lambda r: r["sparsity"][-1].mean())  # fmt: skip
        if not rs:
            continue
        x = [r["sparsity"][-1].mean() for r in rs]
        for ax, key in zip(axes, ("ACC", "first")):
            ax.errorbar(x, [r[key].mean() for r in rs], yerr=[r[key].std() for r in rs],
                        marker="o", capsize=2, color=f"C{i}", label=label)  # fmt: skip
    for ax, what in zip(axes, ("ACC (mean final accuracy)", "first-task accuracy after all")):
        ax.set_xlabel("sparsity at the end (fraction of weights exactly 0)")
        ax.set_ylabel(what)
        ax.set_ylim(0, 1)
    axes[0].legend(fontsize=8)
    _plots._caption(fig, axes[0], setting, "error bars: std over seeds")
    _plots._save(fig, path)


def report(args: argparse.Namespace, runs: dict, command: str) -> str:
    """The markdown section (the figure is written next to it)."""
    got = rows(runs)
    setting = _setting(runs)
    figure = args.report.parent / "results" / "pruning_forgetting.png"
    _plot(got, figure, setting)
    T = next(iter(runs.values())).data.tasks
    head = "| run | " + " | ".join(f"sparsity after T{t + 1}" for t in range(T))
    lines = [head + " | ACC | BWT | first task after all | peak (after task 1) |",
             "|---" * (T + 5) + "|"]  # fmt: skip
    for name in runs:
        r = got.get(name)
        if r is None:
            lines.append(f"| {name} | not run |" + " |" * (T + 3))
            continue
        sp = [f"{s.mean():.3f}" for s in r["sparsity"]] + [""] * (T - len(r["sparsity"]))
        stats = [_protocol.cell(r[k]) for k in ("ACC", "BWT", "first", "peak")]
        lines.append(f"| {name} | " + " | ".join(sp + stats) + " |")
    text = [
        f"## Sparsity and forgetting on permuted {args.dataset} "
        "(`python -m experiments.pruning_forgetting`)", "",
        f"{setting}; NTE β {args.beta}, SGD lr {args.lr}, prune rate {args.rate} (score "
        "momentum 0.99, Gaussian cutoff); sparsity: fraction of weights exactly 0, mean over "
        "seeds; other values mean ± std over seeds. Produced by:", "",
        f"```bash\n{command}\n```", "", *lines, "",
        f"![sparsity vs accuracy and forgetting](results/{figure.name})",
    ]  # fmt: skip
    return "\n".join(text) + "\n"


def parser() -> argparse.ArgumentParser:
    p = _protocol.parser("python -m experiments.pruning_forgetting", __doc__,
                         "runs/pruning_forgetting")  # fmt: skip
    p.set_defaults(epochs=1)
    floats = lambda s: tuple(float(v) for v in s.split(","))  # noqa: E731
    p.add_argument("--width", type=int, default=256, help="hidden units")
    p.add_argument("--seeds", type=int, default=3, help="seeds per run")
    p.add_argument("--beta", type=float, default=0.03, help="NTE β")
    p.add_argument("--lr", type=float, default=0.05, help="SGD and magnitude learning rate")
    p.add_argument("--rate", type=float, default=0.01, help="prune-only rate")
    p.add_argument("--taus", type=floats, default=TAUS, help="NTE prune_below values")
    p.add_argument("--targets", type=floats, default=TARGETS, help="magnitude sparsities")
    return p


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    from ._report import update_section
    from .pruning_only import sparsity_observer

    runs = plan(args)  # every value checked (Config) before any run starts
    command = _protocol.command("experiments.pruning_forgetting", argv)

    def write_report() -> None:
        update_section(args.report, "pruning_forgetting", report(args, runs, command))

    if not args.report_only:
        _protocol.run_and_report(runs, write_report, lambda config: (sparsity_observer,))
    write_report()


if __name__ == "__main__":
    main()
