"""The lazy assumption breaking (the paper's Fig. 3): during training under the authors'
protocol, how well do the per-example loss gradients still point where they pointed at
initialization? Writes its section of `docs/results.md` (between
`<!-- gradient_alignment:begin -->` and `<!-- gradient_alignment:end -->`) and
`docs/results/gradient_alignment.png`.

    python -m experiments.gradient_alignment                   # widths 30 ... 1000, NTE and SGD
    python -m experiments.gradient_alignment --widths 100 --tasks 1

Every `--observe-every` steps an observer computes `nte.gradient_alignment(loss, model,
model0, x, y)`: per example and parameter leaf the cosine between the cross-entropy gradient
at the current weights and at the seed's initial weights (`nte.continual.initial_model`),
averaged over examples, then over leaves by size; `x, y`: the first `--probe` training
examples of task 1 (its permutation). 1 means lazy training (fixed tangent experts). The
protocol is the authors' (first task permuted too, 2 epochs per task, batch 128, their
hyperparameters) with `--tasks` tasks (default 2: task 1 and the switch to task 2). Runs are
checkpointed: rerunning resumes them and skips finished ones (`--report-only`: only the report).
"""

import argparse
import sys

import numpy as np

from . import _protocol

LEARNERS = ("nte", "sgd")


def probe(config, n: int, dataset=None):
    """The first `n` training examples of task 1 as the task sees them (inputs, labels);
    `dataset` as for `nte.continual.load_tasks`."""
    import jax.numpy as jnp

    from nte import continual

    tasks = continual.load_tasks(config, dataset)
    x = tasks.x_train[:n][:, tasks.permutations[0]]
    return jnp.asarray(x), jnp.asarray(tasks.label_map[0][tasks.y_train[:n]])


def alignment_observer(config, n: int, chunk: int = 32):
    """`(model, state, event) -> {"alignment": A}` against the seed's initial model."""
    import equinox as eqx
    import optax

    import nte
    from nte import continual

    d = config.data
    dataset = nte.data.load(d.dataset, source=d.source, data_dir=d.data_dir)  # read once
    x, y = probe(config, n, dataset)
    starts: dict[int, object] = {}  # rebuilt on demand: a resumed run gets the same models

    def loss(model, xi, yi):
        return optax.softmax_cross_entropy_with_integer_labels(model(xi), yi)

    align = eqx.filter_jit(
        lambda m, m0: nte.gradient_alignment(loss, m, m0, x, y, batch_size=chunk)
    )

    def observer(model, state, event):
        del state
        if event.seed not in starts:
            starts[event.seed] = continual.initial_model(config, event.seed, dataset=dataset)
        return {"alignment": float(align(model, starts[event.seed]))}

    return observer


def plan(args: argparse.Namespace) -> dict:
    """`<learner>-w<width>` for every learner and width."""
    runs = {}
    for w in args.widths:
        for name in args.learners:
            runs[f"{name}-w{w}"] = _protocol.config(
                name, args, width=w, seeds=args.seeds, out=args.out / f"{name}-w{w}",
                observe_every=args.observe_every,
            )  # fmt: skip
    return runs


def curves(runs: dict) -> dict[str, dict]:
    """Per finished run: `steps`, `alignment` `[events, seeds]` (step and task-end records, one
    per step) and `ends`, the alignment at each task end `[tasks, seeds]`."""
    out = {}
    for name, m in _protocol.finished(runs).items():
        recs = sorted((r for r in m["observations"] if "alignment" in r), key=lambda r: r["step"])
        by_step = {r["step"]: r["alignment"] for r in recs}
        ends = [r for r in recs if r["kind"] == "task_end"]
        out[name] = {
            "task_end_steps": [r["step"] for r in ends],
            "steps": np.asarray(list(by_step)),
            "alignment": np.asarray(list(by_step.values()), np.float64),
            "ends": np.asarray([r["alignment"] for r in ends], np.float64),
        }
    return out


def report(args: argparse.Namespace, runs: dict, command: str) -> str:
    """The markdown section (the figure is written next to it)."""
    from . import _plots

    got = curves(runs)
    lines = ["| width | learner | alignment after task 1 | after the last task | steps |",
             "|---|---|---|---|---|"]  # fmt: skip
    plt = _plots._plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, w in enumerate(args.widths):
        for k in args.learners:
            c = got.get(f"{k}-w{w}")
            if c is None:
                lines.append(f"| {w} | {k} | not run | | |")
                continue
            first, last = (_protocol.cell(c["ends"][t]) for t in (0, -1))
            lines.append(f"| {w} | {k} | {first} | {last} | {c['steps'][-1]} |")
            steps, mean = [0, *c["steps"]], [1.0, *c["alignment"].mean(1)]  # 1 at the start
            ax.plot(steps, mean, ls="-" if k == "nte" else "--", color=f"C{i}",
                    label=f"{k}, width {w}")  # fmt: skip
    ends = next(iter(got.values()))["task_end_steps"] if got else []  # the same for every run
    for step in ends[:-1]:
        ax.axvline(step, color="0.7", lw=0.8, ls=":")  # task boundaries
    ax.set_xlabel("training steps (all tasks; dotted: task boundaries)")
    ax.set_ylabel("gradient alignment with initialization")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, ncol=2)
    setting = (
        f"permuted {args.dataset} (first task permuted too), {args.tasks} tasks × {args.epochs} "
        f"epochs, batch {args.batch_size}, MLP depth 2, probe {args.probe} task-1 examples"
    )
    figure = args.report.parent / "results" / "gradient_alignment.png"
    _plots._caption(fig, ax, setting, f"mean over {_plots._seeds(args.seeds)}")
    _plots._save(fig, figure)
    head = [
        "## The lazy assumption breaking (the paper's Fig. 3, "
        "`python -m experiments.gradient_alignment`)", "",
        f"{setting}; mean cosine between per-example gradients now and at initialization "
        "(`nte.gradient_alignment`, weighted over leaves by size; 1 = lazy). Values: mean ± "
        "std over seeds (one seed: the value). Produced by:", "",
        f"```bash\n{command}\n```", "",
    ]  # fmt: skip
    return "\n".join([*head, *lines, "", f"![gradient alignment](results/{figure.name})"]) + "\n"


def parser() -> argparse.ArgumentParser:
    p = _protocol.parser("python -m experiments.gradient_alignment", __doc__,
                         "runs/gradient_alignment")  # fmt: skip
    p.set_defaults(tasks=2)
    p.add_argument(
        "--widths", type=_protocol.int_list, default=[30, 100, 300, 1000], help="hidden widths"
    )
    p.add_argument("--learners", type=_protocol.learner_list, default=LEARNERS,
                   help="comma-separated learners among nte, sgd, adam")  # fmt: skip
    p.add_argument("--seeds", type=int, default=2, help="seeds per run")
    p.add_argument("--observe-every", type=int, default=47, help="steps between measurements")
    p.add_argument("--probe", type=int, default=256, help="task-1 examples measured")
    return p


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    p = parser()
    args = p.parse_args(argv)
    if args.probe < 1 or args.observe_every < 1:
        p.error("arguments --probe and --observe-every must be >= 1")
    from ._report import update_section

    runs = plan(args)
    command = _protocol.command("experiments.gradient_alignment", argv)

    def write_report() -> None:
        update_section(args.report, "gradient_alignment", report(args, runs, command))

    if not args.report_only:
        _protocol.run_and_report(
            runs, write_report, lambda config: (alignment_observer(config, args.probe),)
        )
    write_report()


if __name__ == "__main__":
    main()
