"""Shared test helpers: tiny models and data, random pytrees, references and tolerances.

Import as `from helpers import ...` (pytest puts `tests/` on `sys.path`, see `conftest.py`).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np

import nte

# ---------------------------------------------------------------- models and data


def tiny_mlp(key, in_size=6, width=8, depth=2, out_size=3, **kwargs) -> nte.nn.MLP:
    """A small `nte.nn.MLP` (6 → 8 → 8 → 3 by default)."""
    return nte.nn.MLP(in_size, width, depth, out_size, key=key, **kwargs)


def tiny_mlp_params(key, **kwargs):
    """`nte.split` of [`tiny_mlp`][]: `(params, static)`."""
    return nte.split(tiny_mlp(key, **kwargs))


def digits(n: int = 512):
    """The first `n` sklearn digits: `x` in [0, 1] (float32, shape `(n, 64)`), `y` int32."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return jnp.asarray(x[:n] / 16.0, jnp.float32), jnp.asarray(y[:n], jnp.int32)


def cross_entropy(model, x, y):
    """The per-example loss `−log softmax(model(x))[y]` on ONE example."""
    return -jax.nn.log_softmax(model(x))[y]


def astype(tree, dtype):
    """Cast every inexact array of `tree` (e.g. a model) to `dtype`; other leaves unchanged."""
    return jtu.tree_map(lambda a: a.astype(dtype) if eqx.is_inexact_array(a) else a, tree)


# ---------------------------------------------------------------- random pytrees


def random_like(key, tree, *, batch: int | None = None, scale: float = 1.0):
    """`scale · N(0, 1)` draws shaped (and typed) like every leaf of `tree`, a fresh key per
    leaf; with `batch`, each leaf gets a leading axis of that size (per-example gradients)."""
    leaves, treedef = jtu.tree_flatten(tree)
    keys = jax.random.split(key, max(len(leaves), 1))
    lead = () if batch is None else (batch,)
    draws = [
        (scale * jax.random.normal(k, lead + jnp.shape(p), jnp.result_type(p))).astype(
            jnp.result_type(p)
        )
        for k, p in zip(keys, leaves)
    ]
    return jtu.tree_unflatten(treedef, draws)


def perturbed(model, key, scale: float):
    """`model` with every parameter moved by `scale · N(0, 1)` (same dtypes)."""
    params, static = nte.split(model)
    noise = random_like(key, params, scale=scale)
    return nte.merge(jtu.tree_map(jnp.add, params, noise), static)


# ---------------------------------------------------------------- references


def finite_difference_grad(f, params, *, eps: float = 1e-6):
    """The gradient of the scalar `f(params)` by central differences, leaf by leaf and element
    by element (use float64 parameters; cost 2·N calls of `f`)."""
    leaves, treedef = jtu.tree_flatten(params)
    out = []
    for i, leaf in enumerate(leaves):
        flat = np.asarray(leaf, np.float64).ravel()
        grad = np.zeros_like(flat)
        for j in range(flat.size):
            values = []
            for sign in (1.0, -1.0):
                moved = flat.copy()
                moved[j] += sign * eps
                new = list(leaves)
                new[i] = jnp.asarray(moved.reshape(leaf.shape), leaf.dtype)
                values.append(float(f(jtu.tree_unflatten(treedef, new))))
            grad[j] = (values[0] - values[1]) / (2 * eps)
        out.append(grad.reshape(leaf.shape))
    return jtu.tree_unflatten(treedef, out)


# ---------------------------------------------------------------- comparisons


def assert_trees_close(actual, expected, *, rtol: float, atol: float = 0.0) -> None:
    """`np.testing.assert_allclose` on every pair of leaves (same structure required)."""
    a_leaves, a_def = jtu.tree_flatten(actual)
    e_leaves, e_def = jtu.tree_flatten(expected)
    assert a_def == e_def, f"tree structures differ: {a_def} vs {e_def}"
    for a, e in zip(a_leaves, e_leaves):
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=rtol, atol=atol)


def assert_trees_close_scaled(actual, expected, *, rtol: float) -> None:
    """Leafwise closeness with `atol = rtol · max|expected|` per leaf (errors relative to the
    leaf's scale, so entries near zero do not demand an impossible relative accuracy)."""
    for a, e in zip(jtu.tree_leaves(actual), jtu.tree_leaves(expected), strict=True):
        scale = float(np.max(np.abs(np.asarray(e)))) if np.size(e) else 0.0
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=rtol, atol=rtol * scale)


def assert_trees_equal(actual, expected) -> None:
    """Bitwise-equal leaves (and the same structure)."""
    a_leaves, a_def = jtu.tree_flatten(actual)
    e_leaves, e_def = jtu.tree_flatten(expected)
    assert a_def == e_def, f"tree structures differ: {a_def} vs {e_def}"
    for a, e in zip(a_leaves, e_leaves):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(e))


def trees_equal(a, b) -> bool:
    """Whether two pytrees have the same structure and bitwise-equal leaves."""
    a_leaves, a_def = jtu.tree_flatten(a)
    b_leaves, b_def = jtu.tree_flatten(b)
    return a_def == b_def and all(
        np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a_leaves, b_leaves)
    )


def count_true(tree) -> int:
    """The number of `True` entries over every leaf of a boolean pytree."""
    return sum(int(np.sum(np.asarray(m))) for m in jtu.tree_leaves(tree))


# ---------------------------------------------------------------- test selection


def slow_except(values, fast) -> list:
    """`pytest.param`s of `values` for a parametrize list: those in `fast` run by default, the
    others are marked `slow` (run with `-m slow`, as `.ci/run` does)."""
    import pytest

    return [pytest.param(v, marks=() if v in fast else pytest.mark.slow) for v in values]
