import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import pytest
from _homogeneous_models import FAMILIES, FAMILY_PARAMS

import nte


def _perturbed(model, key, scale):
    params, static = nte.split(model)
    leaves, treedef = jtu.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    noisy = [p + scale * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys)]
    return nte.merge(jtu.tree_unflatten(treedef, noisy), static)


def _weighted_sum(experts, weights):
    """Σ_i w_i expert_i by an explicit contraction over every parameter of every leaf."""
    terms = [
        jnp.einsum("nkp,p->nk", e.reshape(e.shape[:2] + (-1,)), w.ravel())
        for e, w in zip(jtu.tree_leaves(experts), jtu.tree_leaves(weights))
    ]
    return sum(terms[1:], terms[0])


@pytest.fixture
def setup(getkey):
    model0 = nte.nn.MLP(4, 6, 1, 3, key=getkey())
    model = _perturbed(model0, getkey(), 0.05)
    return model, model0, jax.random.normal(getkey(), (5, 4))


def test_seed_experts_mixture_is_the_linearization(setup):
    model, model0, x = setup
    experts, weights = nte.tangent_experts(model, x, model0=model0)
    for e, p in zip(jtu.tree_leaves(experts), jtu.tree_leaves(nte.split(model)[0])):
        assert e.shape == (5, 3) + p.shape
    w = jtu.tree_leaves(weights)
    assert all(np.all(leaf >= 0) for leaf in w)
    np.testing.assert_allclose(sum(float(jnp.sum(leaf)) for leaf in w), 1.0, rtol=1e-6)
    mixture = jax.vmap(model0)(x) + _weighted_sum(experts, weights)
    lin = jax.vmap(nte.linearize(model, model0))(x)
    np.testing.assert_allclose(mixture, lin, rtol=1e-5, atol=1e-5)


def test_seed_experts_against_jacobian(setup):
    model, model0, x = setup
    experts, _ = nte.tangent_experts(model, x, model0=model0)
    params0, static = nte.split(model0)
    delta = jtu.tree_map(jnp.subtract, nte.split(model)[0], params0)
    z = sum(jnp.sum(jnp.abs(d)) for d in jtu.tree_leaves(delta))
    jac = jax.jacfwd(lambda p: nte.merge(p, static)(x[2]))(params0)  # forward mode: independent
    for e, j, d in zip(jtu.tree_leaves(experts), jtu.tree_leaves(jac), jtu.tree_leaves(delta)):
        np.testing.assert_allclose(e[2], z * jnp.sign(d) * j, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("use_bias", [False, True])
def test_origin_experts_sum_to_the_network(getkey, use_bias):
    model = nte.nn.MLP(4, 6, 2, 3, use_bias=use_bias, bias_std=0.3, key=getkey())
    x = jax.random.normal(getkey(), (5, 4))
    experts, weights = nte.tangent_experts(model, x)
    out = jax.vmap(model)(x)
    np.testing.assert_allclose(
        _weighted_sum(experts, weights), out, rtol=1e-5, atol=1e-5 * np.abs(out).max()
    )


@pytest.mark.parametrize("use_bias", [False, True])
@pytest.mark.parametrize("family", FAMILY_PARAMS)
def test_origin_experts_mixture_is_the_network_every_family(x64, getkey, family, use_bias):
    """Σ_i w_i expert_i(x) = f(x) to 1e-10 (float64), and expert_i = Z d_i/L sign θ_i ∂f/∂θ_i."""
    model, x, expected, L = FAMILIES[family](getkey(), use_bias)
    experts, weights = nte.tangent_experts(model, x)
    out = jax.vmap(model)(x)
    np.testing.assert_allclose(
        _weighted_sum(experts, weights), out, rtol=0, atol=1e-10 * np.abs(out).max()
    )
    params, static = nte.split(model)
    z = sum(jnp.sum(jnp.abs(p)) for p in jtu.tree_leaves(params))
    jac = jax.jacfwd(lambda p: nte.merge(p, static)(x[1]))(params)  # forward mode: independent
    for e, j, p, d in zip(*map(jtu.tree_leaves, (experts, jac, params)), expected, strict=True):
        np.testing.assert_allclose(e[1], z * d / L * jnp.sign(p) * j, rtol=1e-10, atol=1e-12)


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def test_experts_are_distributions_and_mixture_is_linearization(x64, getkey):
    model0 = nte.nn.MLP(4, 6, 1, 3, key=getkey())
    to64 = lambda m: jtu.tree_map(
        lambda a: a.astype(jnp.float64) if eqx.is_inexact_array(a) else a, m
    )
    model0 = to64(model0)
    model = _perturbed(model0, getkey(), 0.05)
    x = jax.random.normal(getkey(), (5, 4), jnp.float64)
    probs = nte.expert_probabilities(model, model0, x)
    _, weights = nte.tangent_experts(model, x, model0=model0)
    for p in jtu.tree_leaves(probs):
        assert p.dtype == jnp.float64 and p.shape[:2] == (5, 3)
        np.testing.assert_allclose(jnp.sum(p, axis=1), 1.0, rtol=0, atol=1e-6)  # §6.7
    mixture = nte.ensemble_probabilities(model, model0, x)
    np.testing.assert_allclose(_weighted_sum(probs, weights), mixture, rtol=0, atol=1e-6)
    # independent reference: p0 + ∇p0·Δ with a jvp of softmax∘f
    params0, static = nte.split(model0)
    delta = jtu.tree_map(jnp.subtract, nte.split(model)[0], params0)
    softmax = lambda p: jax.nn.softmax(jax.vmap(nte.merge(p, static))(x), axis=-1)
    p0, dp = jax.jvp(softmax, (params0,), (delta,))
    np.testing.assert_allclose(mixture, p0 + dp, rtol=0, atol=1e-6)
    # the gap to the true distribution is second order in Δ: ~100x smaller for Δ/10
    gaps = []
    for t in (1.0, 0.1):
        p = jtu.tree_map(lambda a, d, t=t: a + t * d, params0, delta)
        true = jax.nn.softmax(jax.vmap(nte.merge(p, static))(x), axis=-1)
        gaps.append(np.abs(p0 + t * dp - true).max())
    assert gaps[1] < gaps[0] / 30


def test_invalid_experts_are_exactly_the_non_lazy_ones(setup):
    model, model0, x = setup
    big = _perturbed(model0, jax.random.key(3), 2.0)
    probs = nte.expert_probabilities(big, model0, x)
    params0, static = nte.split(model0)
    delta = jtu.tree_map(jnp.subtract, nte.split(big)[0], params0)
    z = sum(jnp.sum(jnp.abs(d)) for d in jtu.tree_leaves(delta))
    logp = lambda p, xi: jax.nn.log_softmax(nte.merge(p, static)(xi))
    jac = jax.vmap(jax.jacrev(logp), in_axes=(None, 0))(params0, x)
    n_negative = 0
    for p, j in zip(jtu.tree_leaves(probs), jtu.tree_leaves(jac)):
        lazy = np.asarray(z * jnp.abs(j) <= 1 - 1e-4)
        neg = np.asarray(p < 0)
        assert not np.any(neg & lazy)
        n_negative += neg.sum()
    assert n_negative > 0  # at this distance some experts are invalid


def test_experts_bad_input(setup, getkey):
    model, model0, x = setup
    with pytest.raises(ValueError, match="model0"):
        nte.tangent_experts(model0, x, model0=model0)
    with pytest.raises(ValueError, match="model0"):
        nte.expert_probabilities(model, nte.nn.MLP(4, 5, 1, 3, key=getkey()), x)
    with pytest.raises(ValueError, match="`x`"):
        nte.ensemble_probabilities(model, model0, jnp.ones((5, 3)))
    with pytest.raises(ValueError, match=r"`model\.activation`, `tanh`"):
        nte.tangent_experts(nte.nn.MLP(4, 6, 1, 3, activation=jnp.tanh, key=getkey()), x)
    with pytest.raises(ValueError, match=r"`x`.*shape \(1, 4, 4\)"):
        nte.tangent_experts(nte.nn.CNN((1, 4, 4), 2, key=getkey()), jnp.ones((2, 15)))
    with pytest.raises(TypeError, match="model0"):
        nte.ensemble_probabilities(model, None, x)
