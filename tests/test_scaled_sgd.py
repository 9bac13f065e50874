"""Tests of nte/_scaled_sgd.py: the additive "scaled SGD" variant (design doc §3)."""

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import optax
import pytest

import nte


def _setup(key, batch=4):
    k1, k2 = jax.random.split(key)
    params = {"w": jax.random.normal(k1, (3, 4))}
    grads = {"w": jax.random.normal(k2, (batch, 3, 4))}
    return params, grads


def _step(opt, params, grads):
    updates, _ = opt.update(grads, opt.init(params), params)
    return optax.apply_updates(params, updates)


def test_matches_python_loop(getkey):
    params, grads = _setup(getkey())
    new = _step(nte.scale_by_scaled_sgd(0.1), params, grads)
    delta = np.asarray(params["w"], np.float64)
    for b in range(4):
        delta = delta - 0.1 * np.abs(delta) * np.asarray(grads["w"][b])
    np.testing.assert_allclose(new["w"], delta, rtol=1e-5)


def test_renormalize_and_clip(getkey):
    params, grads = _setup(getkey())
    z = float(jnp.sum(jnp.abs(params["w"])))
    renorm = _step(nte.scale_by_scaled_sgd(0.1, renormalize=True), params, grads)
    assert abs(float(jnp.sum(jnp.abs(renorm["w"]))) - z) / z <= 1e-6
    clipped = _step(nte.scale_by_scaled_sgd(0.1, max_delta=0.3), params, grads)
    assert float(jnp.max(jnp.abs(clipped["w"]))) <= 0.3 * (1 + 1e-6)


def test_equals_nte_without_overshoot(getkey):
    """Per example Δ − lr|Δ|g = Δ(1 − lr s g): the sequence of examples multiplies Δ by
    Π_b (1 − lr s g_b) = exp(L), so with renormalization it is exactly NTE with β = lr."""
    params, grads = _setup(getkey())
    for lr in [1e-1, 1e-2]:
        assert float(jnp.max(lr * jnp.abs(grads["w"]))) < 1
        a = _step(nte.scale_by_scaled_sgd(lr, renormalize=True), params, grads)
        b = _step(nte.nte(lr), params, grads)
        np.testing.assert_allclose(a["w"], b["w"], rtol=1e-5)


def test_signs_flip_only_on_overshoot(getkey):
    params = {"w": jnp.array([1.0, -2.0, 0.5])}
    small = {"w": jnp.array([[0.5, -0.5, 0.9]])}  # lr·s·g < 1: signs kept
    new = _step(nte.scale_by_scaled_sgd(1.0), params, small)
    assert int(nte.sign_violations(new, nte.sign_mask(params))) == 0
    big = {"w": jnp.array([[2.0, 0.0, 1.0]])}  # lr·s·g = 2 > 1 flips; = 1 gives exactly 0
    new = _step(nte.scale_by_scaled_sgd(1.0), params, big)
    assert float(new["w"][0]) == -1.0 and float(new["w"][2]) == 0.0
    assert int(nte.sign_violations(new, nte.sign_mask(params))) == 1


def test_chain_jit_and_dtype(getkey):
    params, grads = _setup(getkey())
    opt = optax.chain(nte.scale_by_scaled_sgd(0.1), optax.identity())
    state = opt.init(params)
    updates, _ = jax.jit(opt.update)(grads, state, params)
    assert updates["w"].dtype == jnp.float32
    ref = _step(nte.scale_by_scaled_sgd(0.1), params, grads)
    np.testing.assert_allclose(optax.apply_updates(params, updates)["w"], ref["w"], rtol=1e-6)
    injected = optax.inject_hyperparams(nte.scale_by_scaled_sgd)(learning_rate=0.1)
    new = _step(injected, params, grads)
    np.testing.assert_allclose(new["w"], ref["w"], rtol=1e-6)


def test_bad_input(getkey):
    params, grads = _setup(getkey())
    with pytest.raises(ValueError, match="learning_rate"):
        nte.scale_by_scaled_sgd(0.0)
    with pytest.raises(ValueError, match="max_delta"):
        nte.scale_by_scaled_sgd(0.1, max_delta=-1.0)
    opt = nte.scale_by_scaled_sgd(0.1)
    with pytest.raises(ValueError, match="batch axis"):
        opt.update(params, opt.init(params), params)
    with pytest.raises(ValueError, match="updates"):
        opt.update({"v": grads["w"]}, opt.init(params), params)
    _ = jtu
