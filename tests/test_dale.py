"""Tests of nte/nn/_dale.py: Dale's-law MLPs, and the learners that keep (or break) their signs."""

import math

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import optax
import pytest
from helpers import cross_entropy, digits

import nte


def test_dale_layout_and_signs(getkey):
    model = nte.nn.dale_mlp(5, 10, 2, 3, excitatory_fraction=0.8, key=getkey())
    signs = nte.nn.dale_signs(model)
    assert signs.layers[0].weight is None
    assert all(layer.bias is None for layer in signs.layers)
    for layer, s in zip(model.layers[1:], signs.layers[1:]):
        expected = np.broadcast_to(np.array([1] * 8 + [-1] * 2, np.int8), layer.weight.shape)
        np.testing.assert_array_equal(s.weight, expected)
        np.testing.assert_array_equal(np.sign(layer.weight), expected)  # never exactly 0
    assert int(nte.sign_violations(nte.split(model)[0], signs)) == 0
    assert model(jnp.ones(5)).shape == (3,)


def test_dale_balanced_initialization(getkey):
    width, n_e, n_i = 500, 400, 100
    model = nte.nn.dale_mlp(20, width, 1, width, key=getkey())
    w = np.asarray(model.layers[1].weight, np.float64)  # (out, in), gain 1 (output layer)
    c = 1 / math.sqrt(n_e + n_e**2 / n_i)
    # magnitudes: E columns c|N|, I columns c (n_E/n_I) |N|; E|N| = sqrt(2/pi)
    np.testing.assert_allclose(w[:, :n_e].mean(), c * math.sqrt(2 / math.pi), rtol=0.02)
    np.testing.assert_allclose(-w[:, n_e:].mean(), c * 4 * math.sqrt(2 / math.pi), rtol=0.02)
    # expected input is zero-mean for equal presynaptic activity: row sums average to 0
    row_sums = w.sum(axis=1)
    assert abs(row_sums.mean()) < 4 * row_sums.std() / math.sqrt(width)
    # second moment per row matches He initialization (gain^2 = 1 here)
    np.testing.assert_allclose((w**2).sum(axis=1).mean(), 1.0, rtol=0.05)


def _train(model, opt, steps, key):
    params, static = nte.split(model)
    x, y = digits()

    def loss(p, xb, yb):
        logits = jax.vmap(nte.merge(p, static))(xb)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    @jax.jit
    def step(p, state, k):
        idx = jax.random.choice(k, x.shape[0], (64,), replace=False)
        updates, state = opt.update(jax.grad(loss)(p, x[idx], y[idx]), state, p)
        return optax.apply_updates(p, updates), state

    state = opt.init(params)
    p = params
    for k in jax.random.split(key, steps):
        p, state = step(p, state, k)
    return params, p, float(loss(params, x, y)), float(loss(p, x, y))


@pytest.mark.slow
def test_dale_prune_only_200_steps_keeps_signs(getkey):
    model = nte.nn.dale_mlp(64, 64, 1, 10, key=getkey())
    signs = nte.nn.dale_signs(model)
    opt = nte.pruning.prune_only(0.01, 0.9, degree=2)
    p0, p, loss0, loss1 = _train(model, opt, 200, getkey())
    assert int(nte.sign_violations(p, signs)) == 0
    assert int(nte.sign_violations(p, nte.sign_mask(p0))) == 0  # every sign kept
    assert float(nte.pruning.sparsity(p)[1]) > 0.05
    assert loss1 < loss0


@pytest.mark.slow
def test_dale_nte_200_steps_keeps_signs(getkey):
    model = nte.nn.dale_mlp(64, 32, 1, 10, key=getkey())
    signs = nte.nn.dale_signs(model)
    params, static = nte.split(model)
    x, y = digits()
    opt = nte.nte(0.01, max_delta=0.1)

    def loss(p):
        logits = jax.vmap(nte.merge(p, static))(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def step(p, state, k):
        idx = jax.random.choice(k, x.shape[0], (32,), replace=False)
        grads = nte.per_example_grads(cross_entropy, nte.merge(p, static), x[idx], y[idx])
        updates, state = opt.update(grads, state, p)
        return optax.apply_updates(p, updates), state

    p, state = params, opt.init(params)
    for k in jax.random.split(getkey(), 200):
        p, state = step(p, state, k)
    assert int(nte.sign_violations(p, signs)) == 0
    assert int(nte.sign_violations(p, nte.sign_mask(params))) == 0  # every sign kept
    assert float(loss(p)) < float(loss(params))


def test_dale_sgd_needs_keep_signs(getkey):
    model = nte.nn.dale_mlp(64, 64, 1, 10, key=getkey())
    signs = nte.nn.dale_signs(model)
    key = getkey()
    _, p_sgd, _, _ = _train(model, optax.sgd(0.5), 200, key)
    assert int(nte.sign_violations(p_sgd, signs)) > 0  # plain SGD breaks Dale's law
    opt = optax.chain(optax.sgd(0.5), nte.pruning.keep_signs(signs))
    _, p, loss0, loss1 = _train(model, opt, 200, key)
    assert int(nte.sign_violations(p, signs)) == 0
    assert loss1 < 0.5 * loss0
    for a, b in zip(jtu.tree_leaves(nte.pruning.project_signs(p, signs)), jtu.tree_leaves(p)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(excitatory_fraction=0.04), "excitatory_fraction"),  # round(0.4) = 0 excitatory
        (dict(excitatory_fraction=0.97), "excitatory_fraction"),  # no inhibitory unit left
        (dict(excitatory_fraction=1.0), "excitatory_fraction"),
        (dict(excitatory_fraction=0.0), "excitatory_fraction"),
        (dict(depth=0), "depth"),
    ],
)
def test_dale_bad_input(getkey, kwargs, name):
    args = dict(in_size=4, width=10, depth=1, out_size=3) | kwargs
    with pytest.raises(ValueError, match=name):
        nte.nn.dale_mlp(**args, key=getkey())
