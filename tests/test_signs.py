"""Tests of nte/_signs.py: every sign helper (sign_mask, sign_violations, project_signs,
keep_signs, dale_signs), against hand-computed values."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import nte


def test_sign_mask_and_violations_by_hand():
    params = {"w": jnp.array([[1.5, 0.0], [-2.0, 3.0]]), "b": None}
    signs = nte.sign_mask(params)
    assert signs["w"].dtype == jnp.int8 and signs["b"] is None
    np.testing.assert_array_equal(signs["w"], [[1, 0], [-1, 1]])
    assert int(nte.sign_violations(params, signs)) == 0
    moved = {"w": jnp.array([[-1.0, 0.5], [0.0, 3.0]]), "b": None}
    # w[0,0] flipped, w[0,1] left its dead (s = 0) state, w[1,0] = 0 is never a violation
    assert int(nte.sign_violations(moved, signs)) == 2


def test_project_signs():
    params = {"w": jnp.array([1.0, -2.0, 3.0, 0.0, -5.0]), "b": jnp.array([-1.0, 1.0])}
    signs = {"w": jnp.array([1, 1, -1, 1, 0], jnp.int8), "b": None}
    out = nte.pruning.project_signs(params, signs)
    np.testing.assert_array_equal(out["w"], [1.0, 0.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(out["b"], params["b"])
    assert int(nte.sign_violations(out, signs)) == 0
    assert int(nte.sign_violations(params, signs)) == 3


def test_keep_signs_default_takes_init_signs():
    params = {"w": jnp.array([1.0, -1.0, 0.5]), "b": jnp.array([0.2])}
    opt = optax.chain(optax.sgd(1.0), nte.pruning.keep_signs())
    state = opt.init(params)
    grads = {"w": jnp.array([2.0, 0.5, -1.0]), "b": jnp.array([1.0])}
    updates, _ = opt.update(grads, state, params)
    new = optax.apply_updates(params, updates)
    np.testing.assert_array_equal(new["w"], [0.0, -1.5, 1.5])
    np.testing.assert_array_equal(new["b"], [0.0])


def test_keep_signs_needs_params():
    params = {"w": jnp.array([1.0, -1.0])}
    opt = nte.pruning.keep_signs()
    with pytest.raises(ValueError, match="params"):
        opt.update(params, opt.init(params))


def test_dale_signs_rejects_non_dale(getkey):
    with pytest.raises(ValueError, match="Dale"):
        nte.nn.dale_signs(nte.nn.MLP(4, 16, 1, 3, key=getkey()))
    with pytest.raises(TypeError, match="model"):
        nte.nn.dale_signs(jnp.ones(3))


def test_every_public_name_is_the_one_helper():
    from nte import _signs

    assert nte.sign_mask is _signs.sign_mask and nte.sign_violations is _signs.sign_violations
    assert nte.pruning.project_signs is _signs.project_signs
    assert nte.pruning.keep_signs is _signs.keep_signs
    assert nte.pruning.KeepSignsState is _signs.KeepSignsState
    assert nte.nn.dale_signs is _signs.dale_signs
