import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import pytest

import nte

METHODS = ["jacobian", "ntvp", "structured", "auto"]
RTOL = 1e-5  # float32: every method within 1e-5 of the reference, relative to max|Θ|


def _reference(model, x1, x2, filter_spec=eqx.is_inexact_array):
    """Θ by an explicit Python loop over example pairs of `jax.jacrev` Jacobians."""
    params, static = nte.split(model, filter_spec)
    f = lambda p, x: jnp.ravel(nte.merge(p, static)(x))
    jacobian = jax.jit(jax.jacrev(f))
    jac = [jtu.tree_leaves(jacobian(params, x)) for x in jnp.asarray(x1)]
    jac2 = [jtu.tree_leaves(jacobian(params, x)) for x in jnp.asarray(x2)]
    flat = lambda leaves: np.concatenate(
        [np.reshape(leaf, (leaf.shape[0], -1)) for leaf in leaves], 1
    )
    out = np.zeros((len(jac), len(jac2), jac[0][0].shape[0], jac[0][0].shape[0]))
    for a, ja in enumerate(jac):
        for b, jb in enumerate(jac2):
            out[a, b] = flat(ja) @ flat(jb).T
    return out


def _close(actual, expected):
    scale = np.max(np.abs(expected))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=RTOL * scale)


def _last_layer_spec(model):
    return eqx.tree_at(lambda m: m.layers[-1], jtu.tree_map(lambda _: False, model), replace=True)


def _weight_only_spec(model):
    spec = jtu.tree_map(lambda _: False, model)
    return eqx.tree_at(
        lambda m: [lyr.weight for lyr in m.layers[:2]] + [m.layers[2].bias],
        spec,
        replace=[True, True, True],
    )


@pytest.fixture(scope="module")
def mlp():
    return nte.nn.MLP(5, 7, 2, 3, key=jax.random.key(0))


@pytest.fixture(scope="module")
def xs():
    k1, k2 = jax.random.split(jax.random.key(1))
    return jax.random.normal(k1, (4, 5)), jax.random.normal(k2, (3, 5))


@pytest.mark.parametrize("spec_fn", [None, _last_layer_spec, _weight_only_spec])
def test_all_methods_match_jacobian_reference(mlp, xs, spec_fn):
    x1, x2 = xs
    spec = eqx.is_inexact_array if spec_fn is None else spec_fn(mlp)
    ref = _reference(mlp, x1, x2, spec)
    for method in METHODS:
        full = nte.empirical_ntk(mlp, x1, x2, method=method, trace=False, filter_spec=spec)
        traced = nte.empirical_ntk(mlp, x1, x2, method=method, filter_spec=spec)
        assert full.shape == (4, 3, 3, 3) and traced.shape == (4, 3)
        _close(full, ref)
        _close(traced, np.trace(ref, axis1=2, axis2=3))  # trace = SUM over outputs


@pytest.mark.parametrize("parameterization", ["standard", "ntk"])
def test_symmetric_psd_and_x2_none(parameterization, xs):
    model = nte.nn.MLP(5, 6, 1, 2, parameterization=parameterization, key=jax.random.key(3))
    x1, _ = xs
    ref = _reference(model, x1, x1)
    for method in METHODS:
        theta = np.asarray(nte.empirical_ntk(model, x1, method=method))
        _close(theta, np.trace(ref, axis1=2, axis2=3))
        np.testing.assert_allclose(theta, theta.T, rtol=0, atol=RTOL * np.abs(theta).max())
        eig = np.linalg.eigvalsh(theta)
        assert eig.min() >= -1e-5 * eig.max()
        full = np.asarray(nte.empirical_ntk(model, x1, method=method, trace=False))
        mat = full.transpose(0, 2, 1, 3).reshape(8, 8)  # [(a,k), (b,l)]
        eig = np.linalg.eigvalsh(0.5 * (mat + mat.T))
        assert eig.min() >= -1e-5 * eig.max()


def test_bias_free_and_bias_only(xs):
    x1, x2 = xs
    model = nte.nn.MLP(5, 6, 1, 2, use_bias=False, key=jax.random.key(4))
    ref = _reference(model, x1, x2)
    for method in ["ntvp", "structured"]:
        _close(nte.empirical_ntk(model, x1, x2, method=method, trace=False), ref)
    model = nte.nn.MLP(5, 6, 1, 2, key=jax.random.key(5))
    spec = jtu.tree_map(lambda _: False, model)
    spec = eqx.tree_at(lambda m: [lyr.bias for lyr in m.layers], spec, replace=[True, True])
    ref = _reference(model, x1, x2, spec)
    _close(
        nte.empirical_ntk(model, x1, x2, method="structured", trace=False, filter_spec=spec), ref
    )


class _Mixed(eqx.Module):
    """A Linear called twice (weight sharing), a non-Linear parameter, and a conv."""

    lin: eqx.nn.Linear
    conv: eqx.nn.Conv1d
    scale: jax.Array

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.lin = eqx.nn.Linear(4, 4, key=k1)
        self.conv = eqx.nn.Conv1d(1, 1, 3, padding=1, key=k2)
        self.scale = jnp.array([1.3, -0.7, 0.4, 2.0])

    def __call__(self, x):
        h = jnp.tanh(self.lin(x)) * self.scale
        h = self.conv(h[None])[0]
        return self.lin(h)[:3]


def test_structured_weight_sharing_and_fallback(xs):
    model = _Mixed(jax.random.key(6))
    x1 = xs[0][:, :4]
    x2 = xs[1][:, :4]
    ref = _reference(model, x1, x2)
    for method in METHODS:
        _close(nte.empirical_ntk(model, x1, x2, method=method, trace=False), ref)


class _InnerVmap(eqx.Module):
    lin: eqx.nn.Linear

    def __call__(self, x):
        return jax.vmap(self.lin)(x.reshape(2, 2)).ravel()


def test_structured_inside_inner_transform_falls_back_or_raises(xs):
    model = _InnerVmap(eqx.nn.Linear(2, 3, key=jax.random.key(10)))
    x = xs[0][:, :4]
    ref = np.trace(_reference(model, x, x), axis1=2, axis2=3)
    _close(nte.empirical_ntk(model, x, method="auto"), ref)
    with pytest.raises(ValueError, match="method"):
        nte.empirical_ntk(model, x, method="structured")


@pytest.mark.slow
def test_cnn_methods_agree():
    model = nte.nn.CNN((1, 6, 6), 3, channels=(2, 3), key=jax.random.key(8))
    x = jax.random.normal(jax.random.key(9), (3, 36))
    ref = np.trace(_reference(model, x, x), axis1=2, axis2=3)
    for method in METHODS:
        _close(nte.empirical_ntk(model, x, method=method), ref)


def test_ntk_bad_input(mlp, xs):
    x1, x2 = xs
    with pytest.raises(ValueError, match="x1"):
        nte.empirical_ntk(mlp, jnp.ones((4, 6)))
    with pytest.raises(ValueError, match="x2"):
        nte.empirical_ntk(mlp, x1, jnp.ones((3, 4)))
    with pytest.raises(ValueError, match="x1"):
        nte.empirical_ntk(mlp, jnp.ones(5))
    with pytest.raises(TypeError, match="model"):
        nte.empirical_ntk(lambda x: x, x1)
    with pytest.raises(ValueError, match="method"):
        nte.empirical_ntk(mlp, x1, method="fast")
    with pytest.raises(ValueError, match="filter_spec"):
        nte.empirical_ntk(mlp, x1, filter_spec=lambda _: False)
    cnn = nte.nn.CNN((1, 6, 6), 3, channels=(2,), key=jax.random.key(0))
    with pytest.raises(ValueError, match="x1"):
        nte.empirical_ntk(cnn, jnp.ones((2, 35)))
