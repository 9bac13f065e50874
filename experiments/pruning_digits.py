"""Learning by pruning only on sklearn digits: test accuracy vs sparsity (tutorial figure).

    python -m experiments.pruning_digits --out docs/tutorials/img/pruning_digits.png

A wide random ReLU MLP is never trained: `nte.pruning.prune_only` (origin variant) only
removes weights. Prints a table and writes the PNG and a JSON of the curves (atomically).
"""

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import nte
from nte._internal._io import atomic_savefig, atomic_write_json


def _data(seed):
    x, y = load_digits(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x / 16.0, y, test_size=0.25, random_state=seed)
    return [
        jnp.asarray(a, d)
        for a, d in ((xtr, jnp.float32), (ytr, jnp.int32), (xte, jnp.float32), (yte, jnp.int32))
    ]


def run(model, opt, data, *, steps, batch, every, key):
    """Prune-only training; returns [(step, sparsity, test accuracy)]."""
    xtr, ytr, xte, yte = data
    params, static = nte.split(model)

    def loss(p, xb, yb):
        logits = jax.vmap(nte.merge(p, static))(xb)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    @jax.jit
    def step(p, state, k):
        idx = jax.random.choice(k, xtr.shape[0], (batch,), replace=False)
        updates, state = opt.update(jax.grad(loss)(p, xtr[idx], ytr[idx]), state, p)
        return optax.apply_updates(p, updates), state

    accuracy = jax.jit(
        lambda p: jnp.mean(jnp.argmax(jax.vmap(nte.merge(p, static))(xte), -1) == yte)
    )
    state, curve = opt.init(params), []
    for t, k in enumerate(jax.random.split(key, steps + 1)):
        if t % every == 0 or t == steps or (t < 100 and t % 5 == 0):
            curve.append((t, float(nte.pruning.sparsity(params)[1]), float(accuracy(params))))
        if t < steps:
            params, state = step(params, state, k)
    return curve


def main():
    parser = argparse.ArgumentParser(
        prog="python -m experiments.pruning_digits",
        description=__doc__,
        formatter_class=nte.continual.HelpFormatter,
    )
    parser.add_argument("--width", type=int, default=512, help="hidden width")
    parser.add_argument("--depth", type=int, default=2, help="hidden layers")
    parser.add_argument("--steps", type=int, default=1000, help="pruning steps")
    parser.add_argument("--batch", type=int, default=128, help="examples per step")
    parser.add_argument("--rate", type=float, default=0.01, help="fraction pruned per step")
    parser.add_argument("--momentum", type=float, default=0.99, help="score EMA momentum")
    parser.add_argument(
        "--every", type=int, default=50, help="evaluate every k steps (every 5 steps before 100)"
    )
    parser.add_argument("--seed", type=int, default=0, help="initialisation seed")
    parser.add_argument("--out", default="docs/tutorials/img/pruning_digits.png", help="the figure")
    args = parser.parse_args()

    data = _data(args.seed)
    key = jax.random.key(args.seed)
    mkey, dkey, rkey = jax.random.split(key, 3)
    size = dict(in_size=64, width=args.width, depth=args.depth, out_size=10, use_bias=False)
    runs = {
        "MLP, gaussian cutoff": (nte.nn.MLP(**size, key=mkey), "gaussian"),
        "MLP, quantile cutoff": (nte.nn.MLP(**size, key=mkey), "quantile"),
        "Dale MLP (80:20), gaussian cutoff": (nte.nn.dale_mlp(**size, key=dkey), "gaussian"),
        "Dale MLP (80:20), quantile cutoff": (nte.nn.dale_mlp(**size, key=dkey), "quantile"),
    }
    curves = {}
    for name, (model, cutoff) in runs.items():
        opt = nte.pruning.prune_only(args.rate, args.momentum, cutoff=cutoff, degree=args.depth + 1)
        curves[name] = run(
            model, opt, data, steps=args.steps, batch=args.batch, every=args.every, key=rkey
        )
        start, end = curves[name][0], curves[name][-1]
        best = max(c[2] for c in curves[name])
        print(
            f"{name:34s} acc {start[2]:.3f} -> {end[2]:.3f} (best {best:.3f}) "
            f"at sparsity {end[1]:.3f} after {end[0]} steps"
        )

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, curve in curves.items():
        c = np.asarray(curve)
        ax.plot(c[:, 1], c[:, 2], marker=".", label=name)
    ax.set_xlabel("sparsity (fraction of weights pruned to exactly 0)")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"Learning by pruning only: digits, {args.depth}x{args.width} ReLU MLP")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_savefig(fig, args.out, dpi=120)
    payload = {"args": vars(args), "curves": curves}
    atomic_write_json(os.path.splitext(args.out)[0] + ".json", payload)


if __name__ == "__main__":
    main()
