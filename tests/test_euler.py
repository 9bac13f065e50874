import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import pytest
from _homogeneous_models import FAMILIES, FAMILY_PARAMS

import nte


def _plain_euler_sum(model, x):
    """Σ_i θ_i ∂f/∂θ_i from an explicit per-example Jacobian (reverse mode)."""
    params, static = nte.split(model)
    jac = jax.vmap(jax.jacrev(lambda p, xi: nte.merge(p, static)(xi)), in_axes=(None, 0))(params, x)
    terms = [
        jnp.einsum("nk...,...->nk", j, p)
        for j, p in zip(jtu.tree_leaves(jac), jtu.tree_leaves(params))
    ]
    return sum(terms[1:], terms[0])


@pytest.mark.parametrize("parameterization", ["standard", "ntk"])
@pytest.mark.parametrize("depth", [0, 2])
def test_bias_free_euler_identity_and_scaling(getkey, parameterization, depth):
    model = nte.nn.MLP(
        4, 6, depth, 3, use_bias=False, parameterization=parameterization, key=getkey()
    )
    x = jax.random.normal(getkey(), (5, 4))
    L = nte.homogeneity_degree(model)
    assert L == depth + 1
    f = jax.vmap(model)(x)
    scale = np.abs(f).max()
    np.testing.assert_allclose(_plain_euler_sum(model, x), L * f, rtol=0, atol=1e-5 * L * scale)
    np.testing.assert_allclose(nte.euler_residual(model, x), 0.0, atol=1e-5 * L * scale)
    params, static = nte.split(model)
    for c in (0.5, 2.0):
        scaled = nte.merge(jtu.tree_map(lambda p, c=c: c * p, params), static)
        np.testing.assert_allclose(jax.vmap(scaled)(x), c**L * f, rtol=0, atol=1e-5 * c**L * scale)


def test_bias_degrees_with_biases(getkey):
    model = nte.nn.MLP(4, 6, 2, 3, bias_std=0.5, key=getkey())
    x = jax.random.normal(getkey(), (5, 4))
    L = nte.homogeneity_degree(model)
    f = jax.vmap(model)(x)
    scale = np.abs(f).max()
    residual = nte.euler_residual(model, x)
    np.testing.assert_allclose(residual, 0.0, atol=1e-5 * L * scale)
    # the plain sum Σθ∂f/∂θ is NOT L·f with biases
    assert np.abs(_plain_euler_sum(model, x) - L * f).max() > 1e-2 * scale
    # reference for the weighted identity: f(cW_l, c^l b_l) = c^L f
    c = 1.7
    layers = tuple(
        eqx.tree_at(lambda lyr: (lyr.weight, lyr.bias), lyr, (c * lyr.weight, c**l * lyr.bias))
        for l, lyr in enumerate(model.layers, start=1)  # noqa: E741
    )
    scaled = eqx.tree_at(lambda m: m.layers, model, layers)
    np.testing.assert_allclose(jax.vmap(scaled)(x), c**L * f, rtol=0, atol=1e-5 * c**L * scale)


@pytest.mark.parametrize("use_bias", [False, True])
@pytest.mark.parametrize("family", FAMILY_PARAMS)
def test_euler_residual_every_layer_family(x64, getkey, family, use_bias):
    """Σ_i d_i θ_i ∂f/∂θ_i = L f to 1e-10 relative (float64), against a reverse-mode Jacobian."""
    model, x, expected, L = FAMILIES[family](getkey(), use_bias)
    f = jax.vmap(model)(x)
    scale = L * np.abs(f).max()
    residual = nte.euler_residual(model, x)
    assert residual.shape == f.shape and residual.dtype == jnp.float64
    assert np.abs(residual).max() <= 1e-10 * scale
    params, static = nte.split(model)
    jac = jax.vmap(jax.jacrev(lambda p, xi: nte.merge(p, static)(xi)), in_axes=(None, 0))(params, x)
    weighted = sum(
        d * jnp.einsum("nk...,...->nk", j, p)
        for d, j, p in zip(expected, jtu.tree_leaves(jac), jtu.tree_leaves(params), strict=True)
    )
    np.testing.assert_allclose(weighted, L * f, rtol=0, atol=1e-10 * scale)
    np.testing.assert_allclose(residual, weighted - L * f, rtol=0, atol=1e-10 * scale)


def test_euler_bad_input(getkey):
    with pytest.raises(ValueError, match=r"`model\.activation`, `tanh`"):
        nte.euler_residual(
            nte.nn.MLP(4, 6, 1, 3, activation=jnp.tanh, key=getkey()), jnp.ones((2, 4))
        )
    with pytest.raises(TypeError, match="model"):
        nte.euler_residual(object(), jnp.ones((2, 4)))
    model = nte.nn.MLP(4, 6, 1, 3, key=getkey())
    with pytest.raises(ValueError, match=r"`x`.*shape \(4,\)"):
        nte.euler_residual(model, jnp.ones((2, 5)))
