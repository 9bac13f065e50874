"""The linearization study: how far a finitely wide network is from its linearization.

For one width: train a network and its `nte.linearize` counterpart by the same full-batch
gradient descent on `L = ½ Σ ‖f − y‖²` and compare their held-out outputs with each other and
with the closed-form NTK predictors of `nte.predict`. Used by `python -m experiments.linearization`.
"""

import dataclasses
from functools import partial

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np

from nte import empirical_ntk, linearize, merge, split
from nte.nn import MLP
from nte.predict import discrete_gradient_descent_mse, gradient_descent_mse, max_learning_rate


@dataclasses.dataclass(frozen=True)
class Problem:
    """Standardized inputs and one-hot targets for a regression-on-labels study."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def make_problem(x_train, labels_train, x_test, labels_test, num_classes, n_train, n_test):
    """Flatten, standardize (train statistics) and one-hot; keep the first `n_*` examples."""
    xtr = np.asarray(x_train, np.float32).reshape(len(x_train), -1)[:n_train]
    xte = np.asarray(x_test, np.float32).reshape(len(x_test), -1)[:n_test]
    mean, std = xtr.mean(0), xtr.std(0) + 1e-3
    one_hot = lambda y, n: np.eye(num_classes, dtype=np.float32)[np.asarray(y)[:n]]
    return Problem(
        (xtr - mean) / std, one_hot(labels_train, n_train), (xte - mean) / std,
        one_hot(labels_test, n_test),
    )  # fmt: skip


def _rmse(a, b) -> float:
    return float(jnp.sqrt(jnp.mean((jnp.asarray(a) - jnp.asarray(b)) ** 2)))


def _tree_norm(tree) -> float:
    return float(jnp.sqrt(sum(jnp.sum(leaf**2) for leaf in jtu.tree_leaves(tree))))


def _relative_change(new, old) -> float:
    return _tree_norm(jtu.tree_map(jnp.subtract, new, old)) / _tree_norm(old)


def _loss(fn, params, x, y):
    return 0.5 * jnp.sum((fn(params, x) - y) ** 2)


@eqx.filter_jit
def _run(state, n, x, y, lin0, static):
    """`n` plain gradient-descent steps on the network and on its linearization `lin0`.

    Everything is an argument (not a closed-over constant) so XLA does not constant-fold.
    """
    net_fn, lin_fn = _net_fn(static), _lin_fn(lin0)
    lr, state = state[0], state[1:]

    def step(_, state):
        grads = [jax.grad(partial(_loss, fn))(p, x, y) for p, fn in zip(state, (net_fn, lin_fn))]
        return tuple(jtu.tree_map(lambda a, g: a - lr * g, p, g) for p, g in zip(state, grads))

    return (lr, *jax.lax.fori_loop(0, n, step, state))


def _net_fn(static):
    return lambda p, x: jax.vmap(merge(p, static))(x)


def _lin_fn(lin0):
    return lambda p, x: jax.vmap(eqx.tree_at(lambda m: m.params, lin0, p))(x)


def reference_learning_rate(problem: Problem, *, width: int, depth: int, key, fraction=0.5):
    """`fraction · 2/λ_max` of the full NTK of a freshly initialized network of `width`."""
    k = problem.y_train.shape[1]
    model = MLP(problem.x_train.shape[1], width, depth, k, parameterization="ntk", key=key)
    ntk = empirical_ntk(model, jnp.asarray(problem.x_train), trace=False)
    return fraction * float(max_learning_rate(ntk))


def study_width(
    width: int,
    problem: Problem,
    *,
    depth: int,
    learning_rate: float,
    checkpoints: list[int],
    key,
    progress=None,
) -> dict:
    """Train one width and return its metrics (every number a Python float or list)."""
    k = problem.y_train.shape[1]
    model0 = MLP(problem.x_train.shape[1], width, depth, k, parameterization="ntk", key=key)
    xtr, xte, ytr = map(jnp.asarray, (problem.x_train, problem.x_test, problem.y_train))
    params0, static = split(model0)
    lin0 = linearize(model0, model0)
    net_fn, lin_fn = _net_fn(static), _lin_fn(lin0)
    state = (jnp.asarray(learning_rate, jnp.float32), params0, lin0.params)
    f0_train, f0_test = net_fn(params0, xtr), net_fn(params0, xte)
    history, done = [], 0
    for target in checkpoints:
        state = _run(state, jnp.asarray(target - done), xtr, ytr, lin0, static)
        done = target
        net_test, lin_test = net_fn(state[1], xte), lin_fn(state[2], xte)
        history.append(dict(step=target, rmse_net_lin=_rmse(net_test, lin_test), net=net_test,
                            lin=lin_test))  # fmt: skip
        if progress is not None:
            progress(target)
    ntk0 = empirical_ntk(model0, xtr)
    ntk0_test = empirical_ntk(model0, xte, xtr)
    ntk_end = empirical_ntk(merge(state[1], static), xtr)
    steps = jnp.asarray(checkpoints, jnp.float32)
    # closed form, continuous time, per-output kernel Θ/k applied to every output (wide limit)
    closed = gradient_descent_mse(ntk0 / k, ytr, learning_rate=learning_rate)
    _, closed_test = closed(steps, f0_train, f0_test, ntk0_test / k)
    # exact discrete recursion with the full [n, n, k, k] kernel (must equal the linearization)
    full = discrete_gradient_descent_mse(
        empirical_ntk(model0, xtr, trace=False), ytr, learning_rate=learning_rate
    )
    _, exact_test = full(checkpoints[-1], f0_train, f0_test,
                         empirical_ntk(model0, xte, xtr, trace=False))  # fmt: skip
    end = history[-1]
    labels = np.argmax(problem.y_test, 1)
    accuracy = lambda f: float(np.mean(np.argmax(np.asarray(f), 1) == labels))
    return dict(
        width=width,
        rmse_net_lin=end["rmse_net_lin"],
        rmse_net_closed=_rmse(end["net"], closed_test[-1]),
        rmse_lin_closed=_rmse(end["lin"], closed_test[-1]),
        rmse_lin_exact=_rmse(end["lin"], exact_test),
        ntk_change=_relative_change(ntk_end, ntk0),
        weight_change=_relative_change(state[1], split(model0)[0]),
        accuracy_net=accuracy(end["net"]),
        accuracy_lin=accuracy(end["lin"]),
        train_loss_net=float(0.5 * jnp.sum((net_fn(state[1], xtr) - ytr) ** 2)),
        steps=[h["step"] for h in history],
        rmse_net_lin_vs_step=[h["rmse_net_lin"] for h in history],
        rmse_net_closed_vs_step=[_rmse(h["net"], c) for h, c in zip(history, closed_test)],
    )
