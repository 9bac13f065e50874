"""From finite to infinite width: empirical kernels approach the analytic ones; kernel regression.

    python -m experiments.infinite_width [--out runs/infinite_width]

(a) The relative Frobenius error ‖K̂ − K‖/‖K‖ of the empirical NTK (`nte.empirical_ntk / k`)
and NNGP (`nte.empirical_nngp / k`, with k = width outputs) of depth-2 ReLU `nte.nn.MLP`s
(NTK parameterization) against `nte.kernels.ntk` / `nte.kernels.nngp`, for several widths
and seeds on a few Fashion-MNIST images, with the slope of a log-log fit (theory: −1/2).
(b) Fashion-MNIST, one-hot targets: kernel regression with the analytic NNGP and NTK (the
infinite ensembles at t = ∞ of `nte.predict.gradient_descent_mse_ensemble`), the NTK ensemble
at the training time of (c), and (c) wide networks trained by full-batch gradient descent on
`½ Σ ‖f − y‖²` for the same time, with their deviation from the ensemble mean in units of the
predicted ensemble standard deviation (≈ 1 if the predicted covariance is right).
Writes `results.json`, `convergence.png` and `regression.png` to `--out`.
"""

import argparse
import json
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

import nte
from experiments._plots import _plt, _save
from nte._internal._io import atomic_write_json

DEPTH, BIAS_STD = 2, 0.1


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m experiments.infinite_width",
        description=__doc__,
        formatter_class=nte.continual.HelpFormatter,
    )
    p.add_argument(
        "--widths",
        type=int,
        nargs="+",
        default=[64, 128, 256, 512, 1024, 2048, 4096],
        help="network widths of (a)",
    )
    p.add_argument("--seeds", type=int, default=5, help="initializations per width in (a)")
    p.add_argument("--n-kernel", type=int, default=32, help="images in (a)")
    p.add_argument("--n-train", type=int, default=1000, help="training images")
    p.add_argument("--n-test", type=int, default=1000, help="test images")
    p.add_argument("--net-width", type=int, default=512, help="width of the trained networks")
    p.add_argument("--net-seeds", type=int, default=2, help="trained networks per setting")
    p.add_argument("--steps", type=int, default=300, help="full-batch gradient-descent steps")
    p.add_argument("--lr-fraction", type=float, default=1.0, help="η·λ_max(Θ) (stable below 2)")
    p.add_argument("--diag-reg", type=float, default=1e-4, help="ridge at t = ∞, × mean diag")
    p.add_argument("--out", default="runs/infinite_width", help="output folder")
    return p.parse_args(argv)


def load_data(n_train: int, n_test: int):
    """Fashion-MNIST flattened, centred by the training mean and scaled to mean ‖x‖²/d = 1."""
    data = nte.data.load("fashion_mnist")
    xtr = data.x_train[:n_train].reshape(n_train, -1)
    xte = data.x_test[:n_test].reshape(n_test, -1)
    mean = xtr.mean(0)
    scale = np.sqrt(np.mean((xtr - mean) ** 2))
    one_hot = np.eye(data.num_classes, dtype=np.float32)
    return dict(
        x_train=(xtr - mean) / scale, y_train=one_hot[data.y_train[:n_train]],
        labels_train=data.y_train[:n_train], x_test=(xte - mean) / scale,
        labels_test=data.y_test[:n_test],
    )  # fmt: skip


def _mlp(width: int, out: int, key):
    return nte.nn.MLP(784, width, DEPTH, out, parameterization="ntk", bias_std=BIAS_STD, key=key)


def _rel(a, b) -> float:
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


def convergence(x, widths, seeds) -> dict:
    """(a): relative errors of the empirical kernels, `[width][seed]`, and log-log slopes."""
    reference = _mlp(1, 1, jax.random.key(0))
    ntk, nngp = nte.kernels.ntk(reference, x), nte.kernels.nngp(reference, x)
    errors = {"ntk": [], "nngp": []}
    for width in tqdm(widths, desc="(a) widths"):
        keys = jax.random.split(jax.random.key(width), seeds)
        # Θ̂/k from one output; K̂/k from k = width outputs (averaging over the readout units)
        errors["ntk"].append([_rel(nte.empirical_ntk(_mlp(width, 1, k), x), ntk) for k in keys])
        errors["nngp"].append(
            [_rel(nte.empirical_nngp(_mlp(width, width, k), x) / width, nngp) for k in keys]
        )
    log_w = np.log(widths)
    slopes = {
        name: float(np.polyfit(np.repeat(log_w, seeds), np.log(np.ravel(err)), 1)[0])
        for name, err in errors.items()
    }
    return dict(widths=list(widths), errors=errors, slopes=slopes)


def _accuracy(outputs, labels) -> float:
    return float(np.mean(np.argmax(np.asarray(outputs), -1) == labels))


@eqx.filter_jit
def _train(model, x, y, lr, steps: int):
    params, static = nte.split(model)
    f = lambda p: jax.vmap(nte.merge(p, static))(x)
    grad = jax.grad(lambda p: 0.5 * jnp.sum((f(p) - y) ** 2))
    step = lambda _, p: jax.tree_util.tree_map(lambda a, g: a - lr * g, p, grad(p))
    return nte.merge(jax.lax.fori_loop(0, steps, step, params), static)


def regression(data, args) -> dict:
    """(b) and (c): test accuracies of kernel regression, the ensemble at t, and networks."""
    reference = _mlp(1, 1, jax.random.key(0))
    theta = nte.kernels.ntk(reference, data["x_train"])
    reg = args.diag_reg * float(jnp.mean(jnp.diag(theta)))
    predict = nte.predict.gradient_descent_mse_ensemble(
        reference, data["x_train"], data["y_train"], learning_rate=1.0, diag_reg=reg
    )
    at_inf = predict(None, data["x_test"], ("nngp", "ntk"))
    lr = args.lr_fraction / float(jnp.linalg.eigvalsh(theta)[-1])  # sum loss: λ_max of Θ
    ensemble = nte.predict.gradient_descent_mse_ensemble(
        reference, data["x_train"], data["y_train"], learning_rate=lr
    )
    at_t, cov_t = ensemble(float(args.steps), data["x_test"], "ntk", compute_cov=True)
    std_t = jnp.sqrt(jnp.maximum(jnp.diag(cov_t), 0.0))[:, None]
    outs, z2 = [], []
    for seed in tqdm(range(args.net_seeds), desc="(c) networks"):
        model = _mlp(args.net_width, 10, jax.random.key(1000 + seed))
        trained = _train(model, data["x_train"], data["y_train"], lr, args.steps)
        outs.append(jax.vmap(trained)(jnp.asarray(data["x_test"])))
        z2.append(float(jnp.mean(((outs[-1] - at_t) / std_t) ** 2)))
    labels = data["labels_test"]
    return dict(
        accuracy_nngp_inf=_accuracy(at_inf["nngp"], labels),
        accuracy_ntk_inf=_accuracy(at_inf["ntk"], labels),
        accuracy_ntk_ensemble_t=_accuracy(at_t, labels),
        accuracy_networks=[_accuracy(o, labels) for o in outs],
        accuracy_network_average=_accuracy(sum(outs) / len(outs), labels),
        standardized_deviation_sq=z2, learning_rate=lr, diag_reg=reg,
    )  # fmt: skip


def plot_convergence(conv: dict, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.6))
    widths = np.asarray(conv["widths"])
    for name, marker in (("ntk", "o"), ("nngp", "s")):
        err = np.asarray(conv["errors"][name])
        ax.errorbar(widths, err.mean(1), yerr=err.std(1), marker=marker, capsize=2,
                    label=f"{name.upper()} (slope {conv['slopes'][name]:.2f})")  # fmt: skip
    ax.plot(widths, err.mean(1)[0] * np.sqrt(widths[0] / widths), "k:", label="∝ width^(−1/2)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("width")
    ax.set_ylabel("‖K̂ − K‖_F / ‖K‖_F")
    ax.set_title("empirical → analytic kernel (depth-2 ReLU MLP)")
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_regression(reg: dict, path: Path) -> None:
    plt = _plt()
    n = len(reg["accuracy_networks"])
    names = [
        "NNGP, t=∞ (GP posterior)",
        "NTK, t=∞ (kernel regression)",
        "NTK ensemble, t=T",
        f"average of {n} trained nets, t=T",
        "one trained net, t=T (mean)",
    ]
    keys = ["nngp_inf", "ntk_inf", "ntk_ensemble_t", "network_average"]
    values = [reg[f"accuracy_{k}"] for k in keys] + [float(np.mean(reg["accuracy_networks"]))]
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    ax.barh(names[::-1], values[::-1], color=["C4", "C3", "C2", "C1", "C0"])
    for i, v in enumerate(values[::-1]):
        ax.text(v + 0.005, i, f"{v:.3f}", va="center", fontsize=8)
    ax.set_xlim(min(values) - 0.1, 1.0)
    ax.set_xlabel("Fashion-MNIST test accuracy")
    _save(fig, path)


def main(argv=None) -> dict:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    data = load_data(max(args.n_train, args.n_kernel), args.n_test)
    conv = convergence(data["x_train"][: args.n_kernel], args.widths, args.seeds)
    data = {k: v[: args.n_train] if k.endswith("train") else v for k, v in data.items()}
    reg = regression(data, args)
    result = dict(config=vars(args), convergence=conv, regression=reg,
                  seconds=time.perf_counter() - start)  # fmt: skip
    atomic_write_json(out / "results.json", result)
    plot_convergence(conv, out / "convergence.png")
    plot_regression(reg, out / "regression.png")
    print(f"slopes: NTK {conv['slopes']['ntk']:.3f}, NNGP {conv['slopes']['nngp']:.3f}")
    print(json.dumps(reg, indent=2))
    print(f"total {result['seconds']:.0f} s; wrote {out}")
    return result


if __name__ == "__main__":
    main()
