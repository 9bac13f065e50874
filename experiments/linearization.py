"""Wide networks are linear models: network vs `nte.linearize` vs closed-form NTK dynamics.

    python -m experiments.linearization [--dataset digits|fashion_mnist] [--out runs/linearization]

Trains ReLU MLPs (NTK parameterization) of several widths and their linearizations by the same
full-batch gradient descent on `½ Σ ‖f − y‖²` (one-hot targets) and reports, on held-out inputs,
RMSE(network, linearization) against width and training time, the closed-form
`nte.predict.gradient_descent_mse` prediction, and the relative NTK and weight changes.
"""

import argparse
import os
import time

import jax
import numpy as np
from tqdm import tqdm

import nte
from experiments._linear_study import make_problem, reference_learning_rate, study_width
from nte._internal._io import atomic_savefig, atomic_write_json

NT_REFERENCE = "neural-tangents reports RMSE ≈ 0.05 (network vs linearization, width 512, end)"
COLUMNS = [
    ("width", "{:>6d}"), ("rmse_net_lin", "{:>12.4f}"), ("rmse_net_closed", "{:>15.4f}"),
    ("rmse_lin_closed", "{:>15.4f}"), ("rmse_lin_exact", "{:>14.2e}"), ("ntk_change", "{:>10.4f}"),
    ("weight_change", "{:>13.4f}"), ("accuracy_net", "{:>12.3f}"), ("accuracy_lin", "{:>12.3f}"),
]  # fmt: skip


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m experiments.linearization",
        description=__doc__,
        formatter_class=nte.continual.HelpFormatter,
    )
    p.add_argument(
        "--dataset", default="digits", choices=["digits", "fashion_mnist"], help="the dataset"
    )
    p.add_argument(
        "--widths",
        type=int,
        nargs="+",
        default=[64, 128, 256, 512, 1024, 2048],
        help="network widths",
    )
    p.add_argument("--depth", type=int, default=1, help="hidden layers")
    p.add_argument("--n-train", type=int, default=256, help="training images")
    p.add_argument("--n-test", type=int, default=256, help="test images")
    p.add_argument("--steps", type=int, default=1000, help="full-batch gradient steps")
    p.add_argument("--lr-fraction", type=float, default=0.5, help="η as a fraction of 2/λ_max")
    p.add_argument("--seed", type=int, default=0, help="initialisation seed")
    p.add_argument("--out", default="runs/linearization", help="output folder")
    return p.parse_args(argv)


def checkpoints(steps: int) -> list[int]:
    points = np.unique(np.round(np.geomspace(1, steps, 12)).astype(int))
    return [0] + [int(s) for s in points]


def table(rows) -> str:
    head = " ".join(f"{name:>{len(fmt.format(0) if 'd' in fmt else fmt.format(0.0))}}"
                    for name, fmt in COLUMNS)  # fmt: skip
    lines = [" ".join(fmt.format(row[name]) for name, fmt in COLUMNS) for row in rows]
    return "\n".join([head, *lines])


def plot(rows, out: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    widths = [r["width"] for r in rows]
    paths = []

    def save(fig, name):
        path = os.path.join(out, name)
        fig.tight_layout()
        atomic_savefig(fig, path, dpi=110)
        plt.close(fig)
        paths.append(path)

    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.loglog(widths, [r["rmse_net_lin"] for r in rows], "o-", label="network vs linearization")
    ax.loglog(widths, [r["rmse_net_closed"] for r in rows], "s--", label="network vs closed form")
    ax.loglog(512, 0.05, "k*", ms=10, label="neural-tangents (width 512)")
    ref = rows[0]["rmse_net_lin"] * np.sqrt(widths[0] / np.asarray(widths))
    ax.loglog(widths, ref, ":", color="gray", label="∝ 1/√width")
    ax.set(xlabel="width", ylabel="test RMSE at end of training")
    ax.legend(fontsize=8)
    save(fig, "rmse_vs_width.png")

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for r in rows:
        steps = np.asarray(r["steps"][1:])
        ax.loglog(steps, r["rmse_net_lin_vs_step"][1:], label=f"width {r['width']}")
    ax.set(xlabel="gradient steps", ylabel="test RMSE network vs linearization")
    ax.legend(fontsize=8)
    save(fig, "rmse_vs_time.png")

    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.loglog(widths, [r["ntk_change"] for r in rows], "o-", label="‖Θ_t − Θ_0‖ / ‖Θ_0‖")
    ax.loglog(widths, [r["weight_change"] for r in rows], "s-", label="‖θ_t − θ_0‖ / ‖θ_0‖")
    ax.set(xlabel="width", ylabel="relative change after training")
    ax.legend(fontsize=8)
    save(fig, "change_vs_width.png")
    return paths


def main(argv=None) -> dict:
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    data = nte.data.load(args.dataset)
    problem = make_problem(data.x_train, data.y_train, data.x_test, data.y_test,
                           data.num_classes, args.n_train, args.n_test)  # fmt: skip
    keys = jax.random.split(jax.random.key(args.seed), len(args.widths))
    lr = reference_learning_rate(problem, width=args.widths[0], depth=args.depth, key=keys[0],
                                 fraction=args.lr_fraction)  # fmt: skip
    marks = checkpoints(args.steps)
    rows, start = [], time.perf_counter()
    with tqdm(total=len(args.widths) * args.steps, desc="linearization", unit="step") as bar:
        for width, key in zip(args.widths, keys):
            done = [0]

            def progress(step, done=done):
                bar.update(step - done[0])
                done[0] = step

            rows.append(study_width(width, problem, depth=args.depth, learning_rate=lr,
                                    checkpoints=marks, key=key, progress=progress))  # fmt: skip
    seconds = time.perf_counter() - start
    config = dict(vars(args), learning_rate=lr, loss="0.5 * sum((f - y)**2)", seconds=seconds)
    result = dict(config=config, rows=rows, reference=NT_REFERENCE)
    atomic_write_json(os.path.join(args.out, "metrics.json"), result)
    print(table(rows))
    print(f"reference: {NT_REFERENCE}")
    print(f"learning rate {lr:.4g}, {args.steps} steps, {config['seconds']:.0f} s")
    for path in plot(rows, args.out):
        print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
