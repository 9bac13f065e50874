"""The paper's width sweep with the authors' protocol: first-task accuracy after 5 permuted tasks
against width, for NTE, SGD and Adam. Writes its section of `docs/results.md` (between
`<!-- width_sweep:begin -->` and `<!-- width_sweep:end -->`) and `docs/results/width_sweep.png`.

    python -m experiments.width_sweep                          # widths 10 ... 3000, 3 seeds
    python -m experiments.width_sweep --widths 10000 --seeds 1 # the paper's 1.08e8 parameters
    python -m experiments.width_sweep --quick                  # smoke test: digits, tiny widths

The protocol (the authors' code and W&B runs): permuted Fashion-MNIST with the first task
permuted too, 5 tasks, 2 epochs per task, batch 128, a depth-2 ReLU MLP; NTE with β = 0.01,
η = 1, max_delta = 0.1 (origin expansion, renormalized); SGD lr 0.01 without momentum; Adam lr
1e-3 with betas (0.9, 0.99). The headline metric is the accuracy on the first task after all
tasks; "peak" is its accuracy right after training on it (R[0, 0]). Every run is checkpointed
under `--out`: rerunning the command resumes it and skips finished runs; asking for more
seeds than a run on disk has adds a run of the missing seeds only (e.g. `--many-seeds-up-to
3000` after a one-seed width 3000); `--report-only` rewrites the report from the runs finished
so far.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

from . import _protocol

LEARNERS = ("nte", "sgd", "adam")
# The authors' first-task accuracy after 5 tasks (permuted MNIST, read off their W&B plots) at
# widths 10, 30, 100, 300, 1000, 3000, 10000.
_WIDTHS = (10, 30, 100, 300, 1000, 3000, 10000)
PAPER = {
    "nte": dict(zip(_WIDTHS, (0.26, 0.48, 0.39, 0.65, 0.79, 0.925, 0.935))),
    "sgd": dict(zip(_WIDTHS, (0.47, 0.515, 0.725, 0.83, 0.885, 0.90, 0.92))),
    "adam": {},  # "<= 0.53 at every width"
}


FEATURES = {"digits": 64}  # input features of the datasets other than 28×28 images


def parameters(width: int, depth: int = 2, features: int = 784, classes: int = 10) -> int:
    """Parameters of the MLP (weights and biases)."""
    sizes = [features] + [width] * depth + [classes]
    return sum(a * b + b for a, b in zip(sizes, sizes[1:]))


def _seeds_on_disk(out: Path) -> int | None:
    """The seed count of the run already in `out` (started or finished), or `None`."""
    from nte._internal._io import read_json
    from nte.continual._guard import CONFIG_FILE

    path = out / CONFIG_FILE
    return int(read_json(path)["training"]["seeds"]) if path.exists() else None


def plan(args: argparse.Namespace) -> dict[str, "object"]:
    """Every run of the sweep, by name (`<learner>-w<width>`).

    A run already on disk with fewer seeds than asked is kept as it is and topped up by a run
    `<learner>-w<width>-s<k>` of the missing seeds k, k + 1, … (the same seeds a single run
    would train), so that adding seeds never retrains the ones done; `rows` merges them."""
    runs = {}
    for w in args.widths:
        for name in args.learners:
            seeds = args.seeds if w <= args.many_seeds_up_to else 1
            out = args.out / f"{name}-w{w}"
            have = min(_seeds_on_disk(out) or seeds, seeds)  # the seeds the run keeps
            runs[f"{name}-w{w}"] = _protocol.config(name, args, width=w, seeds=have, out=out)
            if have < seeds:  # top up the missing seeds have, have + 1, ...
                top = f"{name}-w{w}-s{have}"
                runs[top] = _protocol.config(
                    name, args, width=w, seeds=seeds - have, seed=have, out=args.out / top
                )
    return runs


def _features(runs: dict) -> int:
    return FEATURES.get(next(iter(runs.values())).data.dataset, 784)


PER_SEED = ("first", "peak", "ACC", "BWT")
"""The per-seed values of a cell, concatenated over its runs by `rows`."""


def rows(runs: dict) -> dict[tuple[str, int], dict[str, np.ndarray]]:
    """Per (learner, width): first-task accuracy after all tasks, peak, ACC, BWT per seed, the
    finished runs of a cell (a run and its seed top-ups) merged in seed order; `ms_per_step`
    is the first run's."""
    got: dict[tuple[str, int], list] = {}
    for name, m in _protocol.finished(runs).items():
        c = runs[name]
        got.setdefault((c.learner.name, c.model.width), []).append((c.training.seed, m))
    merged = {}
    for key, parts in got.items():
        parts = [_protocol.first_task(m) for _, m in sorted(parts, key=lambda p: p[0])]
        merged[key] = {k: np.concatenate([p[k] for p in parts]) for k in PER_SEED}
        merged[key]["ms_per_step"] = parts[0]["ms_per_step"]
    return merged


def verdict(nte: np.ndarray, sgd: np.ndarray) -> str:
    """'NTE > SGD' / 'NTE < SGD' when the gap of the means exceeds the seed spread
    (`_protocol.seed_spread`: the sum of the two stds; with one seed, 0.01), else 'tie'."""
    gap = nte.mean() - sgd.mean()
    spread = _protocol.seed_spread(nte, sgd)
    if abs(gap) <= (_protocol.ONE_SEED_MARGIN if spread is None else spread):
        return "tie"
    return "NTE > SGD" if gap > 0 else "NTE < SGD"


def _table(runs: dict, got: dict, widths: list[int], learners: tuple[str, ...]) -> list[str]:
    n = lambda w: parameters(w, features=_features(runs))  # noqa: E731
    lines = [
        "| width | parameters | learner | seeds | first task after all | peak (after task 1) "
        "| peak − after | ACC | BWT | ms/step | paper: first task after 5 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for w in widths:
        for k in learners:
            r = got.get((k, w))
            paper = PAPER[k].get(w, "≤ 0.53" if k == "adam" else "—")
            if r is None:
                lines.append(f"| {w} | {n(w):.2e} | {k} | | not run | | | | | | {paper} |")
                continue
            cells = [_protocol.cell(r[c]) for c in ("first", "peak")] + [
                _protocol.cell(r["peak"] - r["first"])
            ]
            cells += [_protocol.cell(r["ACC"]), _protocol.cell(r["BWT"]), f"{r['ms_per_step']:.1f}"]
            lines.append(
                f"| {w} | {n(w):.2e} | {k} | {len(r['first'])} | "
                + " | ".join(cells)
                + f" | {paper} |"
            )
    return lines


def _verdicts(got: dict, widths: list[int]) -> list[str]:
    lines = [
        "| width | NTE − SGD, first task after all (ours) | ours | paper: NTE − SGD |",
        "|---|---|---|---|",
    ]
    for w in widths:
        if ("nte", w) not in got or ("sgd", w) not in got:
            continue
        a, b = got[("nte", w)]["first"], got[("sgd", w)]["first"]
        paper = PAPER["nte"].get(w, np.nan) - PAPER["sgd"].get(w, np.nan)
        paper = "—" if np.isnan(paper) else f"{paper:+.3f}"
        lines.append(f"| {w} | {a.mean() - b.mean():+.3f} | {verdict(a, b)} | {paper} |")
    return lines


def _plot(got: dict, widths: list[int], learners: tuple[str, ...], path: Path, title: str,
          features: int) -> None:  # fmt: skip
    from . import _plots

    plt = _plots._plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, k in enumerate(learners):
        ws = [w for w in widths if (k, w) in got]
        if ws:
            first = [got[(k, w)]["first"] for w in ws]
            ax.errorbar(
                [parameters(w, features=features) for w in ws],
                [f.mean() for f in first],
                yerr=[f.std() for f in first],
                marker="o",
                capsize=2,
                color=f"C{i}",
                label=f"{k} (ours)",
            )
        if PAPER[k]:
            pw = sorted(PAPER[k])
            ax.plot([parameters(w) for w in pw], [PAPER[k][w] for w in pw], ls="--", marker="x",
                    color=f"C{i}", alpha=0.6, label=f"{k} (paper, MNIST)")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("first-task accuracy after all tasks")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    counts = [len(r["first"]) for r in got.values()] or [0]
    seeds = _plots._seeds(min(counts), max(counts))
    caption = (
        f"points: mean, error bars: std over {seeds} (the table gives each); dashed: the paper"
    )
    _plots._caption(fig, ax, title, caption)
    _plots._save(fig, path)


def report(args: argparse.Namespace, runs: dict, command: str) -> str:
    """The markdown section of the finished runs (the figure is written next to it)."""
    got = rows(runs)
    base = next(iter(runs.values()))
    setting = (
        f"permuted {base.data.dataset} (first task permuted too), {base.data.tasks} tasks, "
        f"{base.training.epochs} epochs per task, batch {base.training.batch_size}, MLP depth 2"
    )
    figure = args.report.parent / "results" / "width_sweep.png"
    _plot(got, args.widths, args.learners, figure, setting, _features(runs))
    lines = [
        "## Width sweep with the authors' protocol (`python -m experiments.width_sweep`)",
        "",
        f"{setting}; NTE β = 0.01, η = 1, max_delta = 0.1; SGD lr 0.01, no momentum; Adam lr "
        "1e-3, betas (0.9, 0.99). Values are mean ± std over seeds (one seed: the value). "
        "ms/step is one training step of all seeds of the run together, on this machine's "
        "2 CPU cores, measured while other jobs shared them (an upper bound). "
        "The paper's figures are the authors' W&B runs on permuted MNIST (not "
        "available offline here); Fashion-MNIST is harder, so compare orderings, not levels. "
        "Produced by:",
        "",
        f"```bash\n{command}\n```",
        "",
        *_table(runs, got, args.widths, args.learners),
        "",
        "Verdict per width (NTE > SGD when the gap exceeds the sum of the two seed stds; one "
        f"seed: {_protocol.ONE_SEED_MARGIN}):",
        "",
        *_verdicts(got, args.widths),
        "",
        f"![first-task accuracy vs parameters](results/{figure.name})",
    ]
    return "\n".join(lines) + "\n"


def parser() -> argparse.ArgumentParser:
    p = _protocol.parser("python -m experiments.width_sweep", __doc__, "runs/width_sweep")
    p.add_argument("--quick", action="store_true", help="tiny smoke configuration (digits)")
    p.add_argument("--widths", type=_protocol.int_list, default=[10, 30, 100, 300, 1000, 3000],
                   help="comma-separated hidden widths")  # fmt: skip
    p.add_argument("--learners", type=_protocol.learner_list, default=LEARNERS,
                   help="comma-separated learners among nte, sgd, adam")  # fmt: skip
    p.add_argument(
        "--seeds", type=int, default=3, help="seeds per run (widths ≤ --many-seeds-up-to)"
    )
    p.add_argument("--many-seeds-up-to", type=int, default=3000, help="wider runs use one seed")
    return p


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    p = parser()
    args = p.parse_args(argv)
    if args.quick:
        args.dataset, args.tasks, args.epochs, args.seeds = "digits", 3, 1, 2
        args.widths, args.batch_size = [16, 64], 32
        args.out, args.report = (
            Path("runs/width_sweep-quick"),
            Path("runs/width_sweep-quick/results.md"),
        )
    from nte._internal._io import atomic_write_text

    from ._report import update_section

    runs = plan(args)
    command = _protocol.command("experiments.width_sweep", argv)

    def write_report() -> str:  # every finished run of the widths named in the command
        text = report(args, runs, command.strip())
        if args.quick:
            atomic_write_text(args.report, text)
        else:
            update_section(args.report, "width_sweep", text)
        return text

    if not args.report_only:
        _protocol.run_and_report(runs, write_report)
    print(write_report())


if __name__ == "__main__":
    main()
