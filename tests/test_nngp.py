"""`nte.empirical_nngp` and `nte.kernels.monte_carlo` against explicit loops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nte


@pytest.fixture
def model(getkey):
    return nte.nn.MLP(6, 5, 1, 3, key=getkey())


def test_empirical_nngp_is_the_output_outer_product(model, getkey):
    x1 = np.asarray(jax.random.normal(getkey(), (4, 2, 3)))
    x2 = np.asarray(jax.random.normal(getkey(), (2, 6)).reshape(2, 2, 3))
    f1 = np.stack([np.asarray(model(jnp.asarray(x))) for x in x1])
    f2 = np.stack([np.asarray(model(jnp.asarray(x))) for x in x2])
    full = np.zeros((4, 2, 3, 3))
    for a in range(4):
        for b in range(2):
            full[a, b] = np.outer(f1[a], f2[b])
    np.testing.assert_allclose(nte.empirical_nngp(model, x1, x2, trace=False), full, rtol=1e-5)
    traced = nte.empirical_nngp(model, x1, x2)
    np.testing.assert_allclose(traced, np.trace(full, axis1=2, axis2=3), rtol=1e-5, atol=1e-6)
    same = nte.empirical_nngp(model, x1)
    np.testing.assert_allclose(same, f1 @ f1.T, rtol=1e-5, atol=1e-6)


def test_empirical_nngp_bad_input(model):
    with pytest.raises(ValueError, match="x2"):
        nte.empirical_nngp(model, np.ones((2, 6)), np.ones((2, 3, 2)))
    with pytest.raises(ValueError, match="x1"):
        nte.empirical_nngp(model, np.ones((2, 5)))
    with pytest.raises(TypeError, match="model"):
        nte.empirical_nngp(lambda x: x, np.ones((2, 6)))
    with pytest.raises(TypeError, match="trace"):
        nte.empirical_nngp(model, np.ones((2, 6)), trace=1)


def test_monte_carlo_mean_and_stderr_match_a_loop(getkey):
    x1, x2 = np.ones((3, 6)), np.asarray(jax.random.normal(getkey(), (2, 6)))
    make = lambda k: nte.nn.MLP(6, 7, 1, 2, key=k)
    key = getkey()
    mean, se = nte.kernels.monte_carlo(
        nte.empirical_ntk, make, x1, x2, n_samples=5, key=key, stderr=True
    )
    samples = np.stack(
        [np.asarray(nte.empirical_ntk(make(k), x1, x2)) for k in jax.random.split(key, 5)]
    )
    np.testing.assert_allclose(mean, samples.mean(0), rtol=1e-5)
    np.testing.assert_allclose(se, samples.std(0, ddof=1) / np.sqrt(5), rtol=1e-4, atol=1e-7)
    only = nte.kernels.monte_carlo(nte.empirical_nngp, make, x1, n_samples=2, key=key)
    ref = [np.asarray(nte.empirical_nngp(make(k), x1)) for k in jax.random.split(key, 2)]
    np.testing.assert_allclose(only, np.mean(ref, 0), rtol=1e-5)


def test_monte_carlo_bad_input(getkey):
    make = lambda k: nte.nn.MLP(6, 7, 1, 2, key=k)
    x = np.ones((2, 6))
    with pytest.raises(ValueError, match="n_samples"):
        nte.kernels.monte_carlo(nte.empirical_nngp, make, x, n_samples=0, key=getkey())
    with pytest.raises(ValueError, match="n_samples"):
        nte.kernels.monte_carlo(nte.empirical_nngp, make, x, n_samples=1, key=getkey(), stderr=True)
    with pytest.raises(TypeError, match="make_model"):
        nte.kernels.monte_carlo(nte.empirical_nngp, 3, x, n_samples=2, key=getkey())
