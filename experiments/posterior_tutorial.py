"""Figures and numbers for docs/tutorials/posterior.md.

Prints the first-order check (relative error of the §2 prediction vs β) and trains a bias-free
MLP on scikit-learn's digits with `nte.nte` at a large β, plotting the number of pruned experts
per step to docs/tutorials/img/pruned_experts.png (written atomically).

Run: `python -m experiments.posterior_tutorial`.
"""

import argparse

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import nte
from nte._internal._io import atomic_savefig


def first_order_table() -> list[tuple[float, float]]:
    """Relative error of Δ' − Δ ≈ −ηβ|Δ|⊙G + ηβΔ⟨Δ,G⟩/Z for decreasing β (float64)."""
    with jax.enable_x64(True):
        k1, k2 = jax.random.split(jax.random.key(0))
        params = {"w": jax.random.normal(k1, (20, 10), jnp.float64)}
        grads = {"w": jax.random.normal(k2, (8, 20, 10), jnp.float64)}
        delta, G = params["w"], grads["w"].sum(0)
        z = jnp.sum(jnp.abs(delta))
        rows = []
        for beta in [1e-1, 1e-2, 1e-3, 1e-4, 1e-5]:
            opt = nte.nte(beta)
            updates, _ = opt.update(grads, opt.init(params), params)
            pred = -beta * jnp.abs(delta) * G + beta * delta * jnp.sum(delta * G) / z
            err = jnp.linalg.norm(updates["w"] - pred) / jnp.linalg.norm(pred)
            rows.append((beta, float(err)))
    return rows


def train_digits(beta: float, steps: int, batch: int):
    data = nte.data.load("digits")  # scikit-learn's 8x8 digits, nte.data's fixed split
    x_train = jnp.asarray(data.x_train.reshape(len(data.x_train), -1))
    x_test = jnp.asarray(data.x_test.reshape(len(data.x_test), -1))
    y_train, y_test = jnp.asarray(data.y_train), jnp.asarray(data.y_test)

    def loss(m, xi, yi):
        return -jax.nn.log_softmax(m(xi))[yi]

    model = nte.nn.MLP(64, 32, 1, 10, use_bias=False, key=jax.random.key(0))
    params, static = nte.split(model)
    opt = nte.nte()  # β and the invalid policy ("cap") belong to the likelihood
    state = opt.init(params)

    @eqx.filter_jit
    def step(params, state, key):
        idx = jax.random.randint(key, (batch,), 0, x_train.shape[0])
        m = nte.merge(params, static)
        lik = nte.expert_log_likelihoods(
            loss, m, x_train[idx], y_train[idx], signs=state.signs, inv_temperature=beta
        )
        updates, state = opt.update(lik, state, params)
        return optax.apply_updates(params, updates), state

    pruned, tiny = [], []
    for k in jax.random.split(jax.random.key(1), steps):
        params, state = step(params, state, k)
        pruned.append(int(state.num_pruned))
        lam = jax.tree_util.tree_leaves(state.log_magnitudes)
        cut = state.log_norm + jnp.log(1e-6)  # |Δ| < 1e-6·Z: negligible, not pruned
        tiny.append(sum(int(jnp.sum(v < cut)) for v in lam))
    logits = jax.vmap(nte.merge(params, static))(x_test)
    accuracy = float(jnp.mean(jnp.argmax(logits, -1) == y_test))
    violations = int(nte.sign_violations(params, state.signs))
    return (pruned, tiny), accuracy, violations, int(state.num_invalid)


def _plot(curves, path: str, beta: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    pruned, tiny = curves
    steps = np.arange(1, len(pruned) + 1)
    ax.plot(steps, pruned, label="pruned (Δ = 0 exactly, λ = −inf)")
    ax.plot(steps, tiny, label="negligible (|Δ| < 1e-6·Z)")
    ax.set_xlabel("step")
    ax.set_ylabel("experts")
    ax.legend()
    ax.set_title(f"NTE posterior (β={beta}) on digits, 64-32-10 bias-free MLP")
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.posterior_tutorial",
        description=__doc__,
        formatter_class=nte.continual.HelpFormatter,
    )
    parser.add_argument("--beta", type=float, default=0.05, help="β of the posterior")
    parser.add_argument("--steps", type=int, default=300, help="posterior steps")
    parser.add_argument("--batch", type=int, default=32, help="examples per step")
    parser.add_argument("--out", default="docs/tutorials/img/pruned_experts.png", help="the figure")
    args = parser.parse_args()
    print("beta      relative error of the first-order prediction")
    for beta, err in first_order_table():
        print(f"{beta:<9.0e} {err:.3e}")
    curves, accuracy, violations, invalid = train_digits(args.beta, args.steps, args.batch)
    print(
        f"digits: test accuracy {accuracy:.3f}, pruned experts {curves[0][-1]}, "
        f"negligible experts {curves[1][-1]} of {64 * 32 + 32 * 10}, "
        f"sign violations {violations}, invalid-policy touches {invalid}"
    )
    _plot(curves, args.out, args.beta)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
