"""The report sections and figures of `experiments.paper_sweeps` (one section per sweep in
`docs/results.md` per width, between `<!-- paper_sweeps_<sweep>_w<width>:begin -->` and its end
marker)."""

import argparse
from pathlib import Path

import numpy as np

from . import _plots, _protocol
from ._report import update_section

# The paper's first-task accuracy after 5 tasks for SGD with momentum (permuted MNIST).
PAPER_MOMENTUM = {0.0: 0.886, 0.9: 0.70, 0.99: 0.31}
COLUMNS = "| first task after all | peak (after task 1) | peak − after | ACC | BWT |"


def _cells(r: dict | None) -> str:
    if r is None:
        return "not run | | | | |"
    if r.get("diverged"):
        return "diverged | | | | |"
    values = [r["first"], r["peak"], r["peak"] - r["first"], r["ACC"], r["BWT"]]
    return " | ".join(_protocol.cell(v) for v in values) + " |"


def _setting(args: argparse.Namespace, seeds: int) -> str:
    return (
        f"permuted {args.dataset} (first task permuted too), {args.tasks} tasks × {args.epochs} "
        f"epochs, batch {args.batch_size}, MLP 2 × {args.width}, {_plots._seeds(seeds)} per run"
    )


def momentum(args, runs, got) -> tuple[list[str], Path]:
    from .paper_sweeps import MOMENTA, momentum_run

    lines = ["| momentum | buffer at task ends " + COLUMNS + " paper: first task after 5 |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for m in MOMENTA:
        for reset in (False, True) if m > 0 else (False,):
            name = momentum_run(m, reset)
            paper = PAPER_MOMENTUM.get(m, "—") if not reset else "—"
            lines.append(
                f"| {m} | {'zeroed' if reset else 'kept'} | {_cells(got.get(name))} {paper} |"
            )
    plt = _plots._plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (reset, label) in enumerate(((False, "buffer kept"), (True, "buffer zeroed"))):
        ms = [m for m in MOMENTA if "first" in got.get(momentum_run(m, reset), {})]
        r = [got[momentum_run(m, reset)] for m in ms]
        x = [MOMENTA.index(m) for m in ms]
        first = [v["first"] for v in r]
        ax.errorbar(x, [f.mean() for f in first], yerr=[f.std() for f in first], marker="o",
                    capsize=2, color=f"C{i}", label=f"after all tasks, {label}")  # fmt: skip
        ax.plot(x, [v["peak"].mean() for v in r], ls=":", marker=".", color=f"C{i}",
                label=f"peak (after task 1), {label}")  # fmt: skip
    pm = sorted(PAPER_MOMENTUM)
    ax.plot([MOMENTA.index(m) for m in pm], [PAPER_MOMENTUM[m] for m in pm], "kx--", alpha=0.6,
            label="paper (MNIST), after all tasks")  # fmt: skip
    ax.set_xticks(range(len(MOMENTA)), [str(m) for m in MOMENTA])
    ax.set_xlabel("SGD momentum")
    ax.set_ylabel("first-task accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    path = args.report.parent / "results" / f"momentum_w{args.width}.png"
    bars = "error bars: std over seeds" if args.seeds > 1 else "one seed per run: no error bars"
    _plots._caption(fig, ax, _setting(args, args.seeds), bars)
    _plots._save(fig, path)
    return lines, path


def _selection(r: dict) -> str:
    return "diverged" if r.get("diverged") else f"{r['peak'][0]:.3f}"


def _grid(got: dict, key: str) -> np.ndarray:
    from .paper_sweeps import BETAS, ETAS, beta_eta_run

    out = np.full((len(BETAS), len(ETAS)), np.nan)
    for i, b in enumerate(BETAS):
        for j, e in enumerate(ETAS):
            r = got.get(beta_eta_run(b, e))
            if r is not None and not r.get("diverged"):
                out[i, j] = (r["peak"] - r["first"]).mean() if key == "diff" else r[key].mean()
    return out


def beta_eta(args, runs, got) -> tuple[list[str], Path]:
    from .paper_sweeps import BETAS, ETAS

    panels = (("first", "after all tasks"), ("peak", "after task 1"), ("diff", "peak − after"))
    lines = []
    for key, title in panels:
        g = _grid(got, key)
        head = "| β \\ η | " + " | ".join(map(str, ETAS)) + " |"
        rule = "|---" * (len(ETAS) + 1) + "|"
        lines += [f"First-task accuracy, {title} (rows β, columns η):", "", head, rule]
        for i, b in enumerate(BETAS):
            row = ["not run" if np.isnan(v) else f"{v:.3f}" for v in g[i]]
            lines.append(f"| {b} | " + " | ".join(row) + " |")
        lines.append("")
    plt = _plots._plt()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), gridspec_kw={"wspace": 0.5})
    for ax, (key, title) in zip(axes, panels):
        g = _grid(got, key)
        im = ax.imshow(g, cmap="viridis", vmin=0 if key != "diff" else None, aspect="auto")
        for (i, j), v in np.ndenumerate(g):
            light = not np.isnan(v) and im.norm(v) > 0.6  # viridis is light at the top
            ax.text(j, i, "—" if np.isnan(v) else f"{v:.2f}", ha="center", va="center",
                    color="k" if light else "w", fontsize=8)  # fmt: skip
        ax.set_xticks(range(len(ETAS)), [str(e) for e in ETAS])
        ax.set_yticks(range(len(BETAS)), [str(b) for b in BETAS])
        ax.set_xlabel("η")
        ax.set_ylabel("β")
        ax.set_title(title, fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(f"NTE first-task accuracy: {_setting(args, args.seeds)}", fontsize=8)
    path = args.report.parent / "results" / f"beta_eta_w{args.width}.png"
    _plots._save(fig, path)
    return lines, path


def fair_lr(args, runs, got, finals) -> tuple[list[str], None]:
    from .paper_sweeps import GRIDS, chosen, select_run

    best = chosen(args, got)
    lines = ["Selection (task 1 alone, accuracy on the validation split, one seed):", "",
             "| learner | value | validation accuracy after task 1 |", "|---|---|---|"]  # fmt: skip
    for learner, (key, values) in GRIDS.items():
        for v in values:
            r = got.get(select_run(learner, v))
            acc = "not run" if r is None else _selection(r)
            mark = " (chosen)" if best.get(learner) == v else ""
            lines.append(f"| {learner} | {key} = {v}{mark} | {acc} |")
    lines += ["", "Full protocol on the test set, the authors' value and the chosen one:", "",
              "| learner | row | value " + COLUMNS, "|---" * 8 + "|"]  # fmt: skip
    for learner, (key, _) in GRIDS.items():
        ref = _protocol.REFERENCE[learner][key]
        lines.append(
            f"| {learner} | authors' | {key} = {ref} | {_cells(finals.get(f'reference-{learner}'))}"
        )
        v = best.get(learner, "(none chosen yet)")
        fair = _cells(finals.get(f"fair-{learner}"))
        lines.append(f"| {learner} | fair (chosen on task 1) | {key} = {v} | {fair}")
    return lines, None


TITLES = {
    "momentum": "SGD momentum and forgetting (the paper's Fig. 4)",
    "beta-eta": "NTE over β and η (the paper's appendix heatmaps)",
    "fair-lr": "A fair learning rate: every learner at its best value on task 1",
}


def write(args: argparse.Namespace, command: str, runs: dict, got: dict, finals: dict) -> None:
    """Rewrite the sweep's section of `args.report` (and its figure) from the finished runs."""
    if args.sweep == "momentum":
        lines, figure = momentum(args, runs, got)
    elif args.sweep == "beta-eta":
        lines, figure = beta_eta(args, runs, got)
    else:
        lines, figure = fair_lr(args, runs, got, finals)
    title = f"{TITLES[args.sweep]}, width {args.width}"
    head = [f"## {title} (`python -m experiments.paper_sweeps {args.sweep}`)", "",
            f"{_setting(args, args.seeds)}; values are mean ± std over seeds (one seed: the "
            "value). Produced by:", "", f"```bash\n{command}\n```", ""]  # fmt: skip
    tail = [] if figure is None else ["", f"![{args.sweep}](results/{figure.name})"]
    key = f"paper_sweeps_{args.sweep.replace('-', '_')}_w{args.width}"
    update_section(args.report, key, "\n".join(head + lines + tail) + "\n")
