"""Sparsity vs accuracy on single-task Fashion-MNIST: NTE with posterior pruning (`prune_below`
sweep), gradual magnitude pruning around SGD, and learning by pruning only.

    python -m experiments.pruning_sparsity --out runs/pruning_sparsity

A 784-`width`-10 ReLU MLP without biases (default width 256), batch 128, one epoch over the
60,000 training images, test accuracy on the 10,000 test images. Learners:

- `nte`: `nte.nte(prune_below=τ)` on `nte.expert_log_likelihoods(β=0.03)` (origin variant), one
  run per τ of `--taus`; its sparsity is whatever the threshold gives.
- `magnitude`: `nte.pruning.magnitude(optax.sgd(lr), s)` gradual (polynomial) from step 0 to
  75 % of the epoch, every 10 steps, one run per target sparsity s of `--sparsities`.
- `prune_only`, `prune_only_quantile`: ONE run each of `nte.pruning.prune_only(rate,
  momentum=0.99)` (Gaussian or quantile cutoff, origin variant); the test accuracy is taken at
  the first step at which the sparsity reaches each target s (the network has that sparsity
  then), and at the end.
- `sgd`: the dense reference.

Every finished run is written to `--out/<run>.json` and skipped when the script is run again
(resumable); `metrics.json` and `accuracy_vs_sparsity.png` are written at the end.
"""

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import nte
from nte._internal._io import atomic_savefig, atomic_write_json, read_json

from ._help import HelpFormatter


def _args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m experiments.pruning_sparsity",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    p.add_argument("--width", type=int, default=256, help="hidden units")
    p.add_argument("--batch-size", type=int, default=128, help="batch size")
    p.add_argument("--beta", type=float, default=0.03, help="NTE β")
    p.add_argument("--lr", type=float, default=0.05, help="SGD learning rate")
    p.add_argument(
        "--taus",
        default="2e-6,4e-6,8e-6,9e-6,9.5e-6,1e-5,1.1e-5,1.2e-5,2e-5",
        help="prune_below values (comma-separated)",
    )
    p.add_argument("--sparsities", default="0.5,0.8,0.9,0.95", help="target sparsities")
    p.add_argument("--rate", type=float, default=0.01, help="prune-only rate")
    p.add_argument("--out", default="runs/pruning_sparsity", help="output folder")
    return p.parse_args(argv)


def _data():
    d = nte.data.load("fashion_mnist")
    flat = lambda a: jnp.asarray(a.reshape(a.shape[0], -1))
    return flat(d.x_train), jnp.asarray(d.y_train), flat(d.x_test), jnp.asarray(d.y_test)


def _loss(model, x, y):
    return -jax.nn.log_softmax(model(x))[y]


def _setup(width):
    model = nte.nn.MLP(784, width, 1, 10, use_bias=False, key=jax.random.key(0))
    return nte.split(model)


def _accuracy(params, static, x, y):
    logits = jax.vmap(nte.merge(params, static))(x)
    return float(jnp.mean(jnp.argmax(logits, -1) == y))


def _step_fn(kind, opt, static, beta):
    def mean_grad(params, x, y):
        f = lambda p: jnp.mean(jax.vmap(lambda a, b: _loss(nte.merge(p, static), a, b))(x, y))
        return jax.grad(f)(params)

    @jax.jit
    def step(params, state, x, y):
        if kind == "nte":
            model = nte.merge(params, static)
            src = nte.expert_log_likelihoods(
                _loss, model, x, y, signs=state.signs, inv_temperature=beta
            )
        else:
            src = mean_grad(params, x, y)
        updates, state = opt.update(src, state, params)
        return optax.apply_updates(params, updates), state

    return step


def train(kind, opt, args, data, targets=()):
    """One epoch; returns the final (sparsity, accuracy) and, for `targets`, the accuracy at
    the first step whose sparsity reaches each target."""
    x, y, xt, yt = data
    params, static = _setup(args.width)
    state = opt.init(params)
    step = _step_fn(kind, opt, static, args.beta)
    order = np.random.default_rng(0).permutation(x.shape[0])
    at, pending, t0 = {}, sorted(targets), time.perf_counter()
    for i in range(x.shape[0] // args.batch_size):
        idx = order[i * args.batch_size : (i + 1) * args.batch_size]
        params, state = step(params, state, x[idx], y[idx])
        if pending:
            sparsity = float(nte.pruning.sparsity(params)[1])
            while pending and sparsity >= pending[0]:
                at[str(pending.pop(0))] = dict(
                    sparsity=sparsity, accuracy=_accuracy(params, static, xt, yt), step=i + 1
                )
    row = dict(
        sparsity=float(nte.pruning.sparsity(params)[1]),
        accuracy=_accuracy(params, static, xt, yt),
        seconds=time.perf_counter() - t0,
        at=at,
    )
    if kind == "nte":
        row["pruned_by"] = {k: int(v) for k, v in state.pruned_by._asdict().items()}
        row["num_skipped"] = int(state.num_skipped)
    return row


def _runs(args):
    steps = 60_000 // args.batch_size
    runs = {"sgd": ("sgd", lambda: optax.sgd(args.lr), ())}
    for tau in args.taus.split(","):
        runs[f"nte_tau{tau}"] = ("nte", lambda t=float(tau): nte.nte(prune_below=t), ())
    for s in args.sparsities.split(","):
        make = lambda s=float(s): nte.pruning.magnitude(
            optax.sgd(args.lr), s, end_step=int(0.75 * steps), frequency=10
        )
        runs[f"magnitude_{s}"] = ("sgd", make, ())
    targets = tuple(float(s) for s in args.sparsities.split(","))
    for cutoff in ("gaussian", "quantile"):
        make = lambda c=cutoff: nte.pruning.prune_only(args.rate, 0.99, cutoff=c, degree=2.0)
        runs["prune_only" if cutoff == "gaussian" else "prune_only_quantile"] = (
            "sgd",
            make,
            targets,
        )
    return runs


def _plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    groups = {
        "NTE, prune_below": [r for k, r in rows.items() if k.startswith("nte")],
        "magnitude (SGD)": [r for k, r in rows.items() if k.startswith("magnitude")],
        "prune only (Gaussian)": [*rows["prune_only"]["at"].values(), rows["prune_only"]],
        "prune only (quantile)": list(rows["prune_only_quantile"]["at"].values()),
    }
    for label, rs in groups.items():
        rs = sorted(rs, key=lambda r: r["sparsity"])
        ax.plot([r["sparsity"] for r in rs], [r["accuracy"] for r in rs], "o-", label=label)
    ax.axhline(rows["sgd"]["accuracy"], color="gray", ls="--", label="dense SGD")
    ax.set_xlabel("sparsity (fraction of weights exactly 0)")
    ax.set_ylabel("test accuracy")
    ax.set_title("Fashion-MNIST, 784-256-10, 1 epoch")
    ax.legend()
    atomic_savefig(fig, path)


def main(argv=None):
    args = _args(argv)
    os.makedirs(args.out, exist_ok=True)
    data = _data()
    rows = {}
    for name, (kind, make, targets) in _runs(args).items():
        path = os.path.join(args.out, f"{name}.json")
        if os.path.exists(path):
            rows[name] = read_json(path)
            continue
        rows[name] = train(kind, make(), args, data, targets)
        atomic_write_json(path, rows[name])
        print(name, {k: v for k, v in rows[name].items() if k != "at"}, flush=True)
    atomic_write_json(os.path.join(args.out, "metrics.json"), dict(args=vars(args), runs=rows))
    _plot(rows, os.path.join(args.out, "accuracy_vs_sparsity.png"))
    return rows


if __name__ == "__main__":
    main()
