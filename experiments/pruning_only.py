"""Pruning-only continual learning: permuted tasks, pruning learners vs NTE, SGD, magnitude.

    python -m experiments.pruning_only --dataset digits --tasks 10 --out results/pruning_only

Trains every learner of `--learners` on the same permuted tasks with `nte.continual.run`; an
observer records the sparsity of every layer at each task boundary.
Writes `metrics.json` and PNGs (accuracy matrices, per-task accuracy curves, sparsity per
layer, accuracy vs sparsity) to `--out`, atomically.
"""

import argparse
import os

import jax.tree_util as jtu
import numpy as np

import nte
from nte._internal._io import atomic_savefig, atomic_write_json

REFERENCE = (
    "Reference (MNIST, 10 permuted tasks, 1 epoch each): SGD's first task falls "
    "to ~55-62%, pruning-only ends with every task at ~71-78%, one task pruned around zero ~96%."
)


def _learners(text: str) -> str:
    names = [n for n in text.split(",") if n]
    unknown = [n for n in names if n not in nte.continual.available_learners()]
    if unknown or not names:
        known = ", ".join(nte.continual.available_learners())
        raise argparse.ArgumentTypeError(f"{','.join(unknown) or text!r}: not in {known}")
    return text


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments.pruning_only",
        description=__doc__,
        formatter_class=nte.continual.HelpFormatter,
    )
    p.add_argument("--dataset", default="digits", help="a name for nte.data.load")
    p.add_argument("--source", default="auto", choices=["auto", "sklearn", "idx", "tfds"],
                   help="where nte.data.load reads the dataset")  # fmt: skip
    p.add_argument("--tasks", type=int, default=10, help="permuted tasks")
    p.add_argument("--epochs", type=int, default=1, help="passes over each task")
    p.add_argument("--batch-size", type=int, default=32, help="examples per step")
    p.add_argument("--width", type=int, default=256, help="hidden width of the MLP")
    p.add_argument("--depth", type=int, default=2, help="hidden layers of the MLP")
    p.add_argument("--lr", type=float, default=0.1, help="step size of sgd and magnitude")
    p.add_argument("--beta", type=float, default=0.01, help="β of nte")
    p.add_argument("--max-delta", type=float, default=None, help="clip of |Δ| of nte")
    p.add_argument("--rate", type=float, default=0.01, help="pruning rate of prune_only*")
    p.add_argument("--score-momentum", type=float, default=0.99,
                   help="score EMA momentum of prune_only*")  # fmt: skip
    p.add_argument("--cutoff", default="gaussian", choices=["gaussian", "quantile"],
                   help="cutoff rule of prune_only*")  # fmt: skip
    p.add_argument("--target-sparsity", type=float, default=0.9,
                   help="final sparsity of magnitude")  # fmt: skip
    p.add_argument("--learners", type=_learners,
                   default="prune_only,prune_only_init,nte,sgd,magnitude",
                   help="comma-separated learner names")  # fmt: skip
    p.add_argument("--seeds", type=int, default=1, help="seeds per learner")
    p.add_argument("--seed", type=int, default=0, help="the first seed")
    p.add_argument("--init-scale", type=float, default=None,
                   help="σ of prune_only_init: start at θ_init + σ·ε (None: the learner's 0.1; "
                        "the reference demo: 1e-3)")  # fmt: skip
    p.add_argument("--checkpoint-every", type=int, default=200,
                   help="also checkpoint every k steps (a killed run resumes)")  # fmt: skip
    p.add_argument("--out", default="results/pruning_only", help="output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _args():
    return parser().parse_args()


def _learner_kwargs(name, args, steps_per_task):
    if name.startswith("prune_only"):
        kw = {"rate": args.rate, "momentum": args.score_momentum, "cutoff": args.cutoff}
        if name == "prune_only_init" and args.init_scale is not None:
            kw["init_scale"] = args.init_scale
        return kw
    if name == "magnitude":  # gradual over the first half of the run
        end = max(1, steps_per_task * args.tasks // 2)
        return {
            "lr": args.lr,
            "target_sparsity": args.target_sparsity,
            "end_step": end,
            "frequency": max(1, steps_per_task // 10),
        }
    if name == "nte":
        return {"beta": args.beta, "max_delta": args.max_delta}
    return {"lr": args.lr}


def sparsity_observer(model, state, event):
    """Fraction pruned of each weight matrix and overall, at every task end (an observer).

    Exact zeros, except for `prune_only_init`, whose pruned weights return to θ_init: there the
    fraction of weights removed from its mask (Δ = 0).
    """
    del event
    params, _ = nte.split(model)
    opt_state = getattr(state, "opt_state", None)
    if isinstance(opt_state, nte.pruning.PruneOnlyState):
        params = jtu.tree_map(lambda m: m.astype(np.float32), opt_state.mask)  # 0 = pruned
    layers = [float(nte.pruning.sparsity(layer.weight)[1]) for layer in params.layers]
    out = {f"sparsity_layer{i}": v for i, v in enumerate(layers)}
    return {**out, "sparsity": float(nte.pruning.sparsity(params)[1])}


def run_learner(name, args, data, steps_per_task):
    config = nte.continual.Config(
        dataset=args.dataset,
        source=args.source,
        tasks=args.tasks,
        learner=name,
        width=args.width,
        depth=args.depth,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seeds=args.seeds,
        seed=args.seed,
        progress=not args.no_progress,
        out=os.path.join(args.out, name),  # checkpoints: a rerun resumes, a finished one is read
        checkpoint_every=args.checkpoint_every,
        **_learner_kwargs(name, args, steps_per_task),
    )
    result = nte.continual.run(config, dataset=data, observers=(sparsity_observer,))
    ends = [r for r in result.observations if r["kind"] == "task_end"]
    n_layers = sum(k.startswith("sparsity_layer") for k in ends[0])
    # seed 0 of each task end
    sparsity = [[r[f"sparsity_layer{i}"][0] for i in range(n_layers)] for r in ends]
    summary = result.summary()
    summary.update(
        sparsity_per_layer=sparsity,
        sparsity=[r["sparsity"][0] for r in ends],
        learner=config.learner.to_dict(),
    )
    return result, summary


def _plots(out, results, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    figs = {}
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        R = np.asarray(results[name]["R"]["mean"])
        ax.imshow(R, vmin=0, vmax=1, cmap="viridis")
        ax.set_title(name)
        ax.set_xlabel("evaluated task j")
        ax.set_ylabel("after training task t")
    figs["accuracy_matrix.png"] = fig
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        R = np.asarray(results[name]["R"]["mean"])
        for j in range(R.shape[1]):
            ax.plot(np.arange(j, R.shape[0]) + 1, R[j:, j], marker=".", label=f"task {j + 1}")
        ax.set_ylim(0, 1)
        ax.set_xticks(range(1, R.shape[0] + 1))
        ax.set_title(name)
        ax.set_xlabel("tasks trained")
    axes[0][0].set_ylabel("test accuracy (mean over seeds)")
    axes[0][-1].legend(
        fontsize=7, title="accuracy on", loc="center left", bbox_to_anchor=(1.02, 0.5)
    )
    figs["task_curves.png"] = fig
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        S = np.asarray(results[name]["sparsity_per_layer"])
        for layer in range(S.shape[1]):
            ax.plot(np.arange(1, S.shape[0] + 1), S[:, layer], marker=".", label=f"layer {layer}")
        ax.set_ylim(0, 1)
        ax.set_xticks(range(1, S.shape[0] + 1))
        ax.set_title(name)
        ax.set_xlabel("tasks trained")
    axes[0][0].set_ylabel("sparsity")
    axes[0][0].legend()
    figs["sparsity_per_layer.png"] = fig
    fig, ax = plt.subplots(figsize=(5, 4))
    for name in names:
        R = np.asarray(results[name]["R"]["mean"])
        acc = [R[t, : t + 1].mean() for t in range(R.shape[0])]
        ax.plot(results[name]["sparsity"], acc, marker="o", label=name)
    ax.set_xlabel("overall sparsity after task t")
    ax.set_ylabel("mean accuracy on tasks 1..t")
    ax.legend()
    figs["accuracy_vs_sparsity.png"] = fig
    for fname, fig in figs.items():
        fig.suptitle(title, fontsize=9)
        fig.tight_layout()
        atomic_savefig(fig, os.path.join(out, fname), dpi=110)


def _write_json(args, steps_per_task, results):
    payload = {"args": vars(args), "steps_per_task": steps_per_task, "learners": results}
    atomic_write_json(os.path.join(args.out, "metrics.json"), payload)


def main():
    args = _args()
    os.makedirs(args.out, exist_ok=True)
    data = nte.data.load(args.dataset, source=args.source)
    base = nte.continual.Config(dataset=args.dataset, source=args.source, tasks=args.tasks)
    tasks = nte.continual.load_tasks(base, data)
    steps_per_task = args.epochs * (int(tasks.train_count[0]) // args.batch_size)
    results = {}
    print(f"{'learner':18s} {'ACC':>6s} {'BWT':>7s} {'task1 final':>11s} {'sparsity':>8s}")
    for name in args.learners.split(","):
        _, summary = run_learner(name, args, data, steps_per_task)
        results[name] = summary
        R = np.asarray(summary["R"]["mean"])
        print(
            f"{name:18s} {float(np.mean(summary['ACC']['mean'])):6.3f} "
            f"{float(np.mean(summary['BWT']['mean'])):7.3f} {R[-1, 0]:11.3f} "
            f"{summary['sparsity'][-1]:8.3f}",
            flush=True,
        )
        _write_json(args, steps_per_task, results)  # after every learner: partial results
    print(REFERENCE)
    title = (
        f"permuted {args.dataset}, {args.tasks} tasks, MLP {args.depth}×{args.width}, "
        f"{args.epochs} epoch(s), batch {args.batch_size}; mean over {args.seeds} seed(s)"
    )
    _plots(args.out, results, title)
    print(f"wrote {args.out}/metrics.json and PNGs")


if __name__ == "__main__":
    main()
