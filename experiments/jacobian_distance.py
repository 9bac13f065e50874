"""The lazy regime, measured: relative Jacobian change over task 1 against width (paper's Fig. 2).

    python -m experiments.jacobian_distance                      # widths 10-1000, 5 seeds
    python -m experiments.jacobian_distance --widths 10 30 100 300 1000 3000   # full sweep

For each width and seed: a depth-2 ReLU MLP (`nte.nn.MLP`, standard parameterization unless
`--parameterization ntk`) is trained with plain SGD (lr 0.01, batch 128, no momentum, 2
epochs: the paper's protocol) on task 1 of permuted Fashion-MNIST (one fixed pixel
permutation per seed), and `nte.jacobian_distance(model, model0, x, relative=True)` is
measured between the end of training and the initialization on 256 test images of the same
task. Writes `results.json` (per-seed values and timings; a rerun skips the (width, seed)
cells already there) and `jacobian_distance.png` (log-log, with the fitted slope) to `--out`,
atomically. The lazy-regime prediction is a slope of about -1/2 against width. Width 3000
took 7-12 minutes per seed on 2 shared CPU cores with the default malloc (training 264-500 s,
the distance on 256 images 165-221 s) and about 3 minutes with tcmalloc preloaded (training
109-112 s, distance 63-66 s; see docs/scale.md), hence the smaller default (about 9 minutes
for all of it).
"""

import argparse
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from tqdm import tqdm

import nte
from nte._internal._io import atomic_savefig, atomic_write_json, read_json

CONFIG_KEYS = (
    "dataset",
    "depth",
    "parameterization",
    "epochs",
    "lr",
    "batch_size",
    "eval_examples",
)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m experiments.jacobian_distance",
        description=__doc__,
        formatter_class=nte.continual.HelpFormatter,
    )
    p.add_argument(
        "--widths", type=int, nargs="+", default=[10, 30, 100, 300, 1000], help="network widths"
    )
    p.add_argument("--seeds", type=int, default=5, help="seeds per width")
    p.add_argument("--depth", type=int, default=2, help="hidden layers")
    p.add_argument(
        "--parameterization",
        default="standard",
        choices=["standard", "ntk"],
        help="parameterization of the MLP",
    )
    p.add_argument("--epochs", type=int, default=2, help="epochs on task 1 (the paper's 2)")
    p.add_argument("--lr", type=float, default=0.01, help="SGD step size")
    p.add_argument("--batch-size", type=int, default=128, help="examples per step")
    p.add_argument("--eval-examples", type=int, default=256, help="test images for the distance")
    p.add_argument("--dataset", default="fashion_mnist", help="a name for nte.data.load")
    p.add_argument("--out", default="runs/jacobian_distance", help="output folder")
    p.add_argument("--overwrite", action="store_true", help="discard results already in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def task_one(data: nte.data.Dataset, seed: int):
    """Task 1 of permuted `data`: flattened images under one fixed pixel permutation per seed."""
    perm = np.random.default_rng(seed).permutation(int(np.prod(data.x_train.shape[1:])))
    x_train = data.x_train.reshape(len(data.x_train), -1)[:, perm]
    x_test = data.x_test.reshape(len(data.x_test), -1)[:, perm]
    return x_train, data.y_train, x_test, data.y_test


def _loss(model, x, y):
    logits = jax.vmap(model)(x)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))


def make_step(optimizer):
    @eqx.filter_jit
    def step(model, opt_state, x, y):
        grads = eqx.filter_grad(_loss)(model, x, y)
        updates, opt_state = optimizer.update(grads, opt_state, model)
        return eqx.apply_updates(model, updates), opt_state

    return step


@eqx.filter_jit
def accuracy(model, x, y):
    return jnp.mean(jnp.argmax(jax.vmap(model)(x), -1) == y)


def run_cell(args, data: nte.data.Dataset, width: int, seed: int, bar) -> dict:
    """Train one (width, seed) on task 1; the Jacobian change between init and end."""
    x_train, y_train, x_test, y_test = task_one(data, seed)
    model0 = nte.nn.MLP(
        x_train.shape[1],
        width,
        args.depth,
        data.num_classes,
        parameterization=args.parameterization,
        key=jr.key(seed),
    )
    optimizer = optax.sgd(args.lr)
    step, model = make_step(optimizer), model0
    opt_state = optimizer.init(eqx.filter(model0, eqx.is_inexact_array))
    rng, b = np.random.default_rng(seed), args.batch_size
    start = time.perf_counter()
    for _ in range(args.epochs):
        order = rng.permutation(len(x_train))
        for i in range(len(order) // b):  # full batches only: one compiled step
            idx = order[i * b : (i + 1) * b]
            model, opt_state = step(model, opt_state, x_train[idx], y_train[idx])
            bar.update(1)
    jax.block_until_ready(model)
    train_s = time.perf_counter() - start
    x_eval = jnp.asarray(x_test[: args.eval_examples])
    start = time.perf_counter()
    relative = float(nte.jacobian_distance(model, model0, x_eval, relative=True))
    distance_s = time.perf_counter() - start
    params = sum(a.size for a in jax.tree_util.tree_leaves(nte.split(model0)[0]))
    return {
        "width": width,
        "seed": seed,
        "params": int(params),
        "relative_distance": relative,
        "test_accuracy": float(accuracy(model, x_test, y_test)),
        "train_seconds": train_s,
        "distance_seconds": distance_s,
        "steps": args.epochs * (len(x_train) // b),
    }


def summarize(cells: list[dict]) -> dict:
    """Per width mean ± std over seeds, and the log-log slopes against width and parameters."""
    widths = sorted({c["width"] for c in cells})
    rows = []
    for w in widths:
        values = np.array([c["relative_distance"] for c in cells if c["width"] == w])
        params = next(c["params"] for c in cells if c["width"] == w)
        rows.append(
            {
                "width": w,
                "params": params,
                "mean": float(values.mean()),
                "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                "seeds": len(values),
            }
        )
    out = {"per_width": rows}
    if len(rows) > 1:
        log_mean = np.log([r["mean"] for r in rows])
        out["slope_vs_width"] = float(np.polyfit(np.log(widths), log_mean, 1)[0])
        out["slope_vs_params"] = float(
            np.polyfit(np.log([r["params"] for r in rows]), log_mean, 1)[0]
        )
        out["local_slopes_vs_width"] = [
            {
                "widths": [a["width"], b["width"]],
                "slope": float(np.log(b["mean"] / a["mean"]) / np.log(b["width"] / a["width"])),
            }
            for a, b in zip(rows[:-1], rows[1:])
        ]
    return out


def plot(cells: list[dict], summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary["per_width"]
    params = np.array([r["params"] for r in rows], float)
    mean = np.array([r["mean"] for r in rows])
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.scatter(
        [c["params"] for c in cells],
        [c["relative_distance"] for c in cells],
        s=10,
        color="C0",
        alpha=0.4,
        label="one seed",
    )
    ax.errorbar(
        params,
        mean,
        yerr=[r["std"] for r in rows],
        fmt="o-",
        color="C0",
        capsize=3,
        label="mean ± std over seeds",
    )
    widths = np.array([r["width"] for r in rows], float)
    ax.plot(params, mean[-1] * np.sqrt(widths[-1] / widths), "k--", lw=1, label="∝ 1/√width")
    slope = summary.get("slope_vs_width")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="parameters",
        ylabel="‖J(θ_end) − J(θ_0)‖_F / ‖J(θ_0)‖_F",
        title="Jacobian change over task 1" + (f" (slope vs width {slope:.2f})" if slope else ""),
    )
    for w, p, m in zip(widths, params, mean):
        ax.annotate(f"{int(w)}", (p, m), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    atomic_savefig(fig, path, dpi=130, bbox_inches="tight")
    plt.close(fig)


def _load(path: Path, config: dict, overwrite: bool) -> list[dict]:
    if overwrite or not path.exists():
        return []
    stored = read_json(path)
    if stored.get("config") != config:
        raise SystemExit(
            f"{path} was written with config {stored.get('config')}, not {config}; "
            "pass --overwrite or another --out."
        )
    return stored["cells"]


def main(argv=None):
    args = parse_args(argv)
    out = Path(args.out)
    config = {k: getattr(args, k) for k in CONFIG_KEYS}
    cells = _load(out / "results.json", config, args.overwrite)
    done = {(c["width"], c["seed"]) for c in cells}
    todo = [(w, s) for w in args.widths for s in range(args.seeds) if (w, s) not in done]
    data = nte.data.load(args.dataset)
    steps = args.epochs * (len(data.x_train) // args.batch_size)
    with tqdm(
        total=len(todo) * steps, desc="jacobian_distance", unit="step", disable=args.no_progress
    ) as bar:
        for width, seed in todo:
            bar.set_postfix(width=width, seed=seed)
            cells.append(run_cell(args, data, width, seed, bar))
            cells.sort(key=lambda c: (c["width"], c["seed"]))
            atomic_write_json(
                out / "results.json",
                {"config": config, "cells": cells, "summary": summarize(cells)},
            )
    summary = summarize([c for c in cells if c["width"] in args.widths])
    plot([c for c in cells if c["width"] in args.widths], summary, out / "jacobian_distance.png")
    for r in summary["per_width"]:
        print(
            f"width {r['width']:>5} ({r['params']:>9} params): relative Jacobian distance "
            f"{r['mean']:.4f} ± {r['std']:.4f} over {r['seeds']} seeds"
        )
    if "slope_vs_width" in summary:
        local = ", ".join(
            f"{r['widths'][0]}-{r['widths'][1]}: {r['slope']:.2f}"
            for r in summary["local_slopes_vs_width"]
        )
        print(f"local slopes vs width ({local})")
        print(
            f"log-log slope vs width {summary['slope_vs_width']:.3f} "
            f"(vs parameters {summary['slope_vs_params']:.3f}); lazy prediction -0.5 vs width"
        )
    print(f"wrote {out / 'results.json'} and {out / 'jacobian_distance.png'}")


if __name__ == "__main__":
    main()
