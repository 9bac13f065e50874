"""`nte.gradient_alignment` against a numpy loop over examples and parameter leaves."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
import optax
import pytest

import nte


def _loss(model, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y)


def _perturb(model, key, scale=0.5):
    params, static = nte.split(model)
    leaves, treedef = jtu.tree_flatten(params)
    keys = jr.split(key, len(leaves))
    noisy = [a + scale * jr.normal(k, a.shape, a.dtype) for a, k in zip(leaves, keys)]
    return nte.merge(jtu.tree_unflatten(treedef, noisy), static)


def _reference(loss_fn, model, model0, x, y):
    """Loop: per example, per leaf, the numpy cosine; mean over examples, size-weighted."""
    cos = []
    for xi, yi in zip(x, y):
        g = jtu.tree_leaves(eqx.filter_grad(loss_fn)(model, xi, yi))
        g0 = jtu.tree_leaves(eqx.filter_grad(loss_fn)(model0, xi, yi))
        row = []
        for u, v in zip(g, g0):
            u, v = np.ravel(u), np.ravel(v)
            denominator = np.linalg.norm(u) * np.linalg.norm(v)
            row.append(u @ v / denominator if denominator > 0 else 0.0)
        cos.append(row)
    sizes = np.array([a.size for a in jtu.tree_leaves(nte.split(model)[0])])
    return np.sum(sizes * np.mean(cos, axis=0)) / np.sum(sizes)


@pytest.fixture
def setup(x64, getkey):
    model0 = nte.nn.MLP(4, 6, 2, 3, key=getkey())
    x = jr.normal(getkey(), (5, 4))
    y = jr.randint(getkey(), (5,), 0, 3)
    return _perturb(model0, getkey()), model0, x, y


@pytest.mark.parametrize("batch_size", [None, 2])
def test_matches_loop(setup, batch_size):
    model, model0, x, y = setup
    expected = _reference(_loss, model, model0, x, y)
    got = nte.gradient_alignment(_loss, model, model0, x, y, batch_size=batch_size)
    assert got.dtype == jnp.float64 and abs(expected) < 0.99
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_identical_models_align(setup):
    _, model0, x, y = setup
    np.testing.assert_allclose(nte.gradient_alignment(_loss, model0, model0, x, y), 1.0, rtol=1e-12)


def test_negated_linear_model_anti_aligns(x64, getkey):
    """For ½‖W x‖² the gradient W x xᵀ flips sign with W: cosine −1 on every example."""
    model0 = eqx.nn.Linear(4, 3, use_bias=False, key=getkey())
    model = eqx.tree_at(lambda m: m.weight, model0, -model0.weight)
    x, y = jr.normal(getkey(), (6, 4)), jnp.zeros((6, 3))

    def loss(m, xi, yi):
        return 0.5 * jnp.sum((m(xi) - yi) ** 2)

    np.testing.assert_allclose(nte.gradient_alignment(loss, model, model0, x, y), -1.0, atol=1e-12)


class _TwoLeaves(eqx.Module):
    used: jax.Array
    unused: jax.Array

    def __call__(self, x):
        return self.used * x


def test_zero_gradient_counts_as_zero(x64, getkey):
    """A leaf the loss ignores has a zero gradient, cosine 0: A = n_used / (n_used + n_unused)."""
    model = _TwoLeaves(jr.normal(getkey(), (3,)), jr.normal(getkey(), (5,)))
    x, y = jr.normal(getkey(), (4, 3)), jr.normal(getkey(), (4, 3))

    def loss(m, xi, yi):
        return jnp.sum((m(xi) - yi) ** 2)

    got = nte.gradient_alignment(loss, model, model, x, y)
    np.testing.assert_allclose(got, 3 / 8, rtol=1e-12)
    np.testing.assert_allclose(_reference(loss, model, model, x, y), 3 / 8, rtol=1e-12)


def test_bad_inputs(setup, getkey):
    model, model0, x, y = setup
    with pytest.raises(ValueError, match="`model0` must have the same structure"):
        nte.gradient_alignment(_loss, model, nte.nn.MLP(4, 7, 2, 3, key=getkey()), x, y)
    as32 = jtu.tree_map(lambda a: a.astype(jnp.float32) if eqx.is_inexact_array(a) else a, model0)
    with pytest.raises(ValueError, match="`model0` must have the same parameter shapes and dtypes"):
        nte.gradient_alignment(_loss, model, as32, x, y)
    with pytest.raises(ValueError, match="`y` must have as many examples as `x`: 4 vs 5"):
        nte.gradient_alignment(_loss, model, model0, x, y[:4])
    with pytest.raises(ValueError, match="`x` must be a batch of examples"):
        nte.gradient_alignment(_loss, model, model0, x[0], y)
    with pytest.raises(TypeError, match="loss_fn"):
        nte.gradient_alignment("loss", model, model0, x, y)
    with pytest.raises(ValueError, match="`loss_fn` must return a floating-point scalar"):
        nte.gradient_alignment(lambda m, xi, yi: m(xi), model, model0, x, y)
    with pytest.raises(ValueError, match="`batch_size` must be None or an int >= 1"):
        nte.gradient_alignment(_loss, model, model0, x, y, batch_size=0)
