"""Tests of nte/pruning/_pruned.py: one pruned convention read from every pruning state."""

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import optax
import pytest
from helpers import assert_trees_equal, count_true, random_like, tiny_mlp_params

import nte

PARAMS = {"w": jnp.array([[1.0, 0.0], [-2.0, 3.0]]), "b": jnp.array([0.5, -0.5, 0.0])}
EXPECTED = {"w": np.array([[False, True], [False, True]]), "b": np.array([True, False, False])}


def _nte_state():
    lam = {
        "w": jnp.array([[0.0, -jnp.inf], [1.0, -jnp.inf]]),
        "b": jnp.array([-jnp.inf, -3.0, 2.0]),
    }
    signs = jtu.tree_map(lambda v: jnp.ones(v.shape, jnp.int8), lam)
    by = nte.PrunedBy(jnp.int32(0), jnp.int32(0), jnp.int32(3))
    zero = jnp.int32(0)
    return nte.ScaleByNTEState(signs, lam, jnp.float32(0.0), None, jnp.int32(3), zero, by, zero)


def _alive():
    return jtu.tree_map(lambda e: jnp.asarray(~e), EXPECTED)


def _prune_only_state():
    zeros = jtu.tree_map(jnp.zeros_like, PARAMS)
    signs = jtu.tree_map(lambda p: jnp.ones(p.shape, jnp.int8), PARAMS)
    return nte.pruning.PruneOnlyState(jnp.int32(0), zeros, _alive(), signs, None)


def _magnitude_state():
    return nte.pruning.MagnitudeState(jnp.int32(0), _alive(), optax.EmptyState())


@pytest.mark.parametrize("make", [_nte_state, _prune_only_state, _magnitude_state])
def test_hand_made_states_read_the_same(make):
    assert_trees_equal(nte.pruning.pruned(make()), EXPECTED)


@pytest.mark.parametrize("make", [_nte_state, _prune_only_state, _magnitude_state])
def test_found_inside_chain_inject_hyperparams_and_jit(make):
    state = make()
    wrapped = (
        optax.EmptyState(),
        optax.InjectHyperparamsState(jnp.int32(0), {"rate": jnp.float32(0.1)}, (state,)),
    )
    assert_trees_equal(nte.pruning.pruned(wrapped), EXPECTED)
    assert_trees_equal(jax.jit(nte.pruning.pruned)(wrapped), EXPECTED)


def test_magnitude_around_nte_or_of_both():
    inner = _nte_state()
    outer = nte.pruning.MagnitudeState(
        jnp.int32(0), {"w": jnp.ones((2, 2), bool), "b": jnp.array([True, True, False])}, inner
    )
    expected = {"w": EXPECTED["w"], "b": np.array([True, False, True])}
    assert_trees_equal(nte.pruning.pruned(outer), expected)


def test_no_pruning_state_is_a_clear_error():
    opt = optax.sgd(0.1, momentum=0.9)
    with pytest.raises(TypeError, match="no pruning state"):
        nte.pruning.pruned(opt.init(PARAMS))


# ---------------------------------------------------------------- real runs


def _run(opt, params, grads_fn, steps):
    state = opt.init(params)
    step = jax.jit(opt.update)
    for i in range(steps):
        updates, state = step(grads_fn(i), state, params)
        params = optax.apply_updates(params, updates)
    return params, state


def test_prune_only_run_pruned_are_exactly_zero(getkey):
    params, _ = tiny_mlp_params(getkey())
    key = getkey()
    opt = nte.pruning.prune_only(0.05, 0.9)
    params, state = _run(opt, params, lambda i: random_like(jax.random.fold_in(key, i), params), 20)
    mask = nte.pruning.pruned(state)
    assert 0 < count_true(mask) < 0.9 * sum(p.size for p in jtu.tree_leaves(params))
    for p, m in zip(jtu.tree_leaves(params), jtu.tree_leaves(mask)):
        np.testing.assert_array_equal(np.asarray(p) == 0, np.asarray(m))  # no weight was 0


def test_magnitude_run_pruned_count_is_the_target(getkey):
    params, _ = tiny_mlp_params(getkey(), use_bias=False)
    opt = nte.pruning.magnitude(optax.sgd(0.01), 0.5)
    params, state = _run(opt, params, lambda i: jtu.tree_map(lambda p: p - 1.0, params), 3)
    n = sum(p.size for p in jtu.tree_leaves(params))
    mask = nte.pruning.pruned(state)
    assert count_true(mask) == round(0.5 * n)
    for p, m in zip(jtu.tree_leaves(params), jtu.tree_leaves(mask)):
        assert np.all(np.asarray(p)[np.asarray(m)] == 0)


def test_nte_run_prunes_exactly_one_expert():
    # β s g = 1 exactly for w[1, 0]: that expert is pruned (λ = −inf) and reads as pruned
    params = {"w": jnp.array([[1.0, 2.0], [0.5, -1.0]]), "v": jnp.array([1.0, 0.0])}
    grads = {"w": jnp.array([[[0.1, 0.2], [10.0, 0.3]]]), "v": jnp.array([[0.1, 0.1]])}
    opt = optax.chain(optax.identity(), nte.nte(inv_temperature=0.1))
    params, state = _run(opt, params, lambda i: grads, 1)
    mask = nte.pruning.pruned(state)
    expected = {"w": np.array([[False, False], [True, False]]), "v": np.array([False, True])}
    assert_trees_equal(mask, expected)  # v[1] = 0 at init: a dead expert, pruned
    assert float(params["w"][1, 0]) == 0.0


def test_multi_transform_needs_params_for_the_frozen_leaves(getkey):
    params, _ = tiny_mlp_params(getkey())
    label_fn = lambda t: jtu.tree_map(lambda p: "prune" if p.ndim == 2 else "freeze", t)
    labels = label_fn(params)  # a function: the MLP tree itself is callable
    opt = optax.multi_transform(
        {"prune": nte.pruning.prune_only(0.1, 0.5), "freeze": optax.set_to_zero()}, label_fn
    )
    key = getkey()
    params, state = _run(opt, params, lambda i: random_like(jax.random.fold_in(key, i), params), 5)
    with pytest.raises(ValueError, match="params"):
        nte.pruning.pruned(state)
    mask = nte.pruning.pruned(state, params)
    assert jtu.tree_structure(mask) == jtu.tree_structure(params)
    for p, m, label in zip(*(jtu.tree_leaves(t) for t in (params, mask, labels))):
        assert m.shape == p.shape and m.dtype == jnp.bool_
        if label == "freeze":
            assert not np.any(np.asarray(m))
        else:
            np.testing.assert_array_equal(np.asarray(m), np.asarray(p) == 0)
    assert count_true(mask) > 0
