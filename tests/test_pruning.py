"""Tests of nte/pruning: the cutoffs, prune_only, magnitude pruning and sparsity."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import optax
import pytest
from helpers import random_like, tiny_mlp_params
from scipy.stats import norm

import nte
from nte.pruning._cutoff import gaussian_cutoff, quantile_cutoff

# ---------------------------------------------------------------- cutoffs vs numpy


@pytest.mark.parametrize("rate", [0.01, 0.1, 0.37])
def test_cutoffs_match_numpy(rate):
    rng = np.random.default_rng(0)
    f = rng.normal(size=301).astype(np.float32)
    alive = rng.random(301) < 0.7
    expected_g = f[alive].mean() + f[alive].std(ddof=1) * norm.ppf(1 - rate)
    expected_q = np.quantile(f[alive].astype(np.float64), 1 - rate)
    f, alive = jnp.asarray(f), jnp.asarray(alive)
    np.testing.assert_allclose(gaussian_cutoff(f, alive, rate), expected_g, rtol=1e-5)
    np.testing.assert_allclose(quantile_cutoff(f, alive, rate), expected_q, rtol=1e-5)


def test_cutoffs_with_nothing_alive_prune_nothing(getkey):
    params, _ = tiny_mlp_params(getkey())
    opt = nte.pruning.prune_only(cutoff="quantile")
    state = opt.init(params)
    state = state._replace(mask=jtu.tree_map(jnp.zeros_like, state.mask))
    updates, new = jax.jit(opt.update)(random_like(getkey(), params), state, params)
    assert not any(np.any(m) for m in jtu.tree_leaves(new.mask))


def _numpy_prune(f_leaves, alive_leaves, rate, cutoff, scope):
    def cut(f, a):
        if cutoff == "gaussian":
            return f[a].mean() + f[a].std(ddof=1) * norm.ppf(1 - rate)
        return np.quantile(f[a], 1 - rate)

    if scope == "global":
        c = cut(
            np.concatenate([f.ravel() for f in f_leaves]),
            np.concatenate([a.ravel() for a in alive_leaves]),
        )
        cuts = [c] * len(f_leaves)
    else:
        cuts = [cut(f.ravel(), a.ravel()) for f, a in zip(f_leaves, alive_leaves)]
    return [a & (f >= c) & (f > 0) for f, a, c in zip(f_leaves, alive_leaves, cuts)]


@pytest.mark.parametrize("cutoff", ["gaussian", "quantile"])
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_prune_only_step_matches_numpy(getkey, cutoff, scope):
    params, _ = tiny_mlp_params(getkey())
    rate, degree = 0.2, 3.0
    opt = nte.pruning.prune_only(rate, 0.5, cutoff=cutoff, scope=scope, degree=degree)
    state = opt.init(params)
    g1, g2 = random_like(getkey(), params), random_like(getkey(), params)
    _, state = opt.update(g1, state, params)  # nothing applied: check the second step's choice
    mask_before = [np.asarray(m) for m in jtu.tree_leaves(state.mask)]
    updates, state2 = opt.update(g2, state, params)
    # independent recursion for the score: v = 0.5 v + 0.5 d / L
    v = [
        0.5 * (0.5 * a / degree) + 0.5 * b / degree
        for a, b in zip(map(np.asarray, jtu.tree_leaves(g1)), map(np.asarray, jtu.tree_leaves(g2)))
    ]
    np.testing.assert_allclose(
        np.concatenate([x.ravel() for x in v]),
        np.concatenate([np.ravel(x) for x in jtu.tree_leaves(state2.score)]),
        rtol=1e-5,
        atol=1e-7,
    )
    v = [np.asarray(x) for x in jtu.tree_leaves(state2.score)]  # decide on the same floats
    p_leaves = [np.asarray(p) for p in jtu.tree_leaves(params)]
    f = [vi * np.sign(p) for vi, p in zip(v, p_leaves)]
    expected = _numpy_prune(f, mask_before, rate, cutoff, scope)
    got = [mb & ~np.asarray(m) for mb, m in zip(mask_before, jtu.tree_leaves(state2.mask))]
    assert sum(e.sum() for e in expected) > 0
    for e, g in zip(expected, got):
        np.testing.assert_array_equal(e, g)
    for p, u, m in zip(p_leaves, jtu.tree_leaves(updates), jtu.tree_leaves(state2.mask)):
        np.testing.assert_array_equal(np.asarray(u), np.where(np.asarray(m), 0, -p))


# ---------------------------------------------------------------- prune_only dynamics


def _run_prune_only(opt, params, grads_fn, steps):
    state = opt.init(params)
    step = eqx.filter_jit(lambda g, s, p: opt.update(g, s, p))
    masks = [state.mask]
    for i in range(steps):
        updates, state = step(grads_fn(i, params), state, params)
        params = optax.apply_updates(params, updates)
        masks.append(state.mask)
    return params, state, masks


@pytest.mark.parametrize("cutoff", ["gaussian", "quantile"])
def test_prune_only_mask_never_regains_and_pruned_exactly_zero(getkey, cutoff):
    params0, _ = tiny_mlp_params(getkey())
    key = getkey()
    grads_fn = lambda i, p: random_like(jax.random.fold_in(key, i), p)
    opt = nte.pruning.prune_only(0.05, 0.9, cutoff=cutoff)
    params, state, masks = _run_prune_only(opt, params0, grads_fn, 40)
    for before, after in zip(masks[:-1], masks[1:]):
        for b, a in zip(jtu.tree_leaves(before), jtu.tree_leaves(after)):
            assert not np.any(np.asarray(a) & ~np.asarray(b))
    n_alive = sum(int(np.sum(m)) for m in jtu.tree_leaves(state.mask))
    n_total = sum(m.size for m in jtu.tree_leaves(state.mask))
    assert 0 < n_alive < 0.9 * n_total
    for p, p0, m in zip(*(jtu.tree_leaves(t) for t in (params, params0, state.mask))):
        m = np.asarray(m)
        assert np.all(np.asarray(p)[~m] == 0)
        np.testing.assert_array_equal(np.asarray(p)[m], np.asarray(p0)[m])


@pytest.mark.parametrize("as_function", [False, True])
def test_prune_only_init_variant_restores_center(getkey, as_function):
    params0, _ = tiny_mlp_params(getkey())
    noise = random_like(getkey(), params0)
    center = jtu.tree_map(lambda p, n: p - 0.1 * n, params0, noise)
    if as_function:
        center_arg = lambda p: jtu.tree_map(lambda x, n: x - 0.1 * n, p, noise)
    else:
        center_arg = center
    key = getkey()
    grads_fn = lambda i, p: random_like(jax.random.fold_in(key, i), p)
    opt = nte.pruning.prune_only(0.05, 0.5, variant="init", center=center_arg)
    params, state, _ = _run_prune_only(opt, params0, grads_fn, 20)
    n_pruned = 0
    for p, p0, c, m in zip(*(jtu.tree_leaves(t) for t in (params, params0, center, state.mask))):
        p, p0, c, m = map(np.asarray, (p, p0, c, m))
        np.testing.assert_allclose(p[~m], c[~m], rtol=1e-6, atol=1e-7)  # one rounding at most
        np.testing.assert_array_equal(p[m], p0[m])
        n_pruned += int((~m).sum())
    assert n_pruned > 0


@pytest.mark.slow
def test_prune_only_learns_a_linearly_separable_task(getkey):
    # pruning a wide random ReLU net around zero must reduce the loss on a simple task
    model = nte.nn.MLP(4, 64, 1, 2, key=getkey())
    params, static = nte.split(model)
    x = jax.random.normal(getkey(), (256, 4))
    y = (x[:, 0] > 0).astype(jnp.int32)

    def loss(p):
        logits = jax.vmap(nte.merge(p, static))(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    opt = nte.pruning.prune_only(0.02, 0.9, degree=2)

    @jax.jit
    def step(p, state):
        updates, state = opt.update(jax.grad(loss)(p), state, p)
        return optax.apply_updates(p, updates), state

    state, p = opt.init(params), params
    for _ in range(60):
        p, state = step(p, state)
    assert float(loss(p)) < 0.8 * float(loss(params))


def test_prune_only_inject_hyperparams_and_no_retrace(getkey):
    params, _ = tiny_mlp_params(getkey())
    opt = optax.inject_hyperparams(nte.pruning.prune_only)(rate=0.05, momentum=0.9)
    state = opt.init(params)

    @eqx.debug.assert_max_traces(max_traces=1)
    def step(g, s, p):
        return opt.update(g, s, p)

    step = jax.jit(step)
    for i in range(3):
        state.hyperparams["rate"] = jnp.asarray(0.05 + 0.01 * i)
        updates, state = step(random_like(getkey(), params), state, params)
        assert all(
            u.dtype == p.dtype for u, p in zip(jtu.tree_leaves(updates), jtu.tree_leaves(params))
        )


# ---------------------------------------------------------------- magnitude pruning


def _quadratic_grads(params):
    return jtu.tree_map(lambda p: p - 1.0, params)


def _run(opt, params, steps):
    state = opt.init(params)
    step = jax.jit(lambda s, p: opt.update(_quadratic_grads(p), s, p))
    history = []
    for _ in range(steps):
        updates, state = step(state, params)
        params = optax.apply_updates(params, updates)
        history.append((params, state))
    return params, state, history


def test_magnitude_masked_weights_stay_zero_under_momentum_and_weight_decay(getkey):
    params0, _ = tiny_mlp_params(getkey())
    inner = optax.chain(optax.add_decayed_weights(1e-2), optax.sgd(0.05, momentum=0.9))
    opt = nte.pruning.magnitude(inner, 0.6, begin_step=2, end_step=20, frequency=3)
    params, state, history = _run(opt, params0, 60)
    prev = None
    for p, s in history:
        for leaf, m in zip(jtu.tree_leaves(p), jtu.tree_leaves(s.mask)):
            assert np.all(np.asarray(leaf)[~np.asarray(m)] == 0)
        if prev is not None:
            for b, a in zip(jtu.tree_leaves(prev), jtu.tree_leaves(s.mask)):
                assert not np.any(np.asarray(a) & ~np.asarray(b))
        prev = s.mask
    # the grads pull every weight toward 1: the alive ones are non-zero
    assert all(
        np.all(np.asarray(leaf)[np.asarray(m)] != 0)
        for leaf, m in zip(jtu.tree_leaves(params), jtu.tree_leaves(state.mask))
    )


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_magnitude_gradual_hits_target_at_end_step(getkey, scope):
    params0, _ = tiny_mlp_params(getkey(), use_bias=False)  # sizes 48, 64, 24
    target, t0, t1 = 0.75, 3, 15
    opt = nte.pruning.magnitude(
        optax.sgd(0.01), target, begin_step=t0, end_step=t1, frequency=4, scope=scope
    )
    _, _, history = _run(opt, params0, t1 + 5)
    overall = [float(nte.pruning.sparsity(p)[1]) for p, _ in history]
    assert overall[t0 - 1] == 0.0  # nothing before begin_step
    assert all(b >= a for a, b in zip(overall[:-1], overall[1:]))
    assert 0 < overall[t0 + 4] < target
    n = sum(p.size for p in jtu.tree_leaves(params0))
    assert overall[t1] == pytest.approx(round(target * n) / n, abs=1e-7)
    assert overall[-1] == overall[t1]
    if scope == "layer":
        per_leaf, _ = nte.pruning.sparsity(history[t1][0])
        for s, p in zip(jtu.tree_leaves(per_leaf), jtu.tree_leaves(params0)):
            assert float(s) == pytest.approx(round(target * p.size) / p.size, abs=1e-7)


def test_magnitude_one_shot_prunes_smallest(getkey):
    params0, _ = tiny_mlp_params(getkey(), use_bias=False)
    opt = nte.pruning.magnitude(optax.sgd(0.0), 0.5)
    params, _, _ = _run(opt, params0, 1)
    flat0 = np.concatenate([np.ravel(p) for p in jtu.tree_leaves(params0)])
    flat = np.concatenate([np.ravel(p) for p in jtu.tree_leaves(params)])
    threshold = np.sort(np.abs(flat0))[len(flat0) // 2 - 1]
    np.testing.assert_array_equal(flat, np.where(np.abs(flat0) > threshold, flat0, 0))


def test_magnitude_inject_hyperparams(getkey):
    params0, _ = tiny_mlp_params(getkey(), use_bias=False)
    opt = optax.inject_hyperparams(nte.pruning.magnitude)(optax.sgd(0.01), target_sparsity=0.5)
    params, state, _ = _run(opt, params0, 2)
    n = sum(p.size for p in jtu.tree_leaves(params0))
    assert float(nte.pruning.sparsity(params)[1]) == pytest.approx(round(0.5 * n) / n, abs=1e-7)


def test_polynomial_sparsity_closed_form():
    for t in [0, 5, 10, 17, 30, 40]:
        s = nte.pruning.polynomial_sparsity(
            t, 0.9, initial_sparsity=0.1, begin_step=10, end_step=30
        )
        expected = 0.9 + (0.1 - 0.9) * (1 - min(max((t - 10) / 20, 0), 1)) ** 3
        assert float(s) == pytest.approx(expected, rel=1e-6)


# ---------------------------------------------------------------- sparsity


def test_sparsity_against_hand_count():
    params = {"a": jnp.array([[0.0, 1.0], [2.0, 0.0]]), "b": jnp.array([0.0, 0.0, 3.0]), "c": None}
    per_leaf, overall = nte.pruning.sparsity(params)
    assert float(per_leaf["a"]) == 2 / 4
    assert float(per_leaf["b"]) == pytest.approx(2 / 3, rel=1e-7)
    assert per_leaf["c"] is None
    assert float(overall) == pytest.approx(4 / 7)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(rate=0.0), "rate"),
        (dict(rate=1.0), "rate"),
        (dict(momentum=1.0), "momentum"),
        (dict(momentum=-0.1), "momentum"),
        (dict(cutoff="median"), "cutoff"),
        (dict(variant="centre"), "variant"),
        (dict(variant="init"), "center"),
        (dict(scope="row"), "scope"),
        (dict(degree=0.0), "degree"),
    ],
)
def test_prune_only_bad_input(kwargs, name):
    with pytest.raises(ValueError, match=name):
        nte.pruning.prune_only(**kwargs)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(target_sparsity=1.5), "target_sparsity"),
        (dict(target_sparsity=-0.1), "target_sparsity"),
        (dict(target_sparsity=0.5, initial_sparsity=2.0), "initial_sparsity"),
        (dict(target_sparsity=0.5, frequency=0), "frequency"),
        (dict(target_sparsity=0.5, begin_step=5, end_step=2), "end_step"),
        (dict(target_sparsity=0.5, scope="row"), "scope"),
    ],
)
def test_magnitude_bad_input(kwargs, name):
    with pytest.raises(ValueError, match=name):
        nte.pruning.magnitude(optax.sgd(0.1), **kwargs)


def test_update_without_params_raises(getkey):
    params, _ = tiny_mlp_params(getkey())
    for opt in [nte.pruning.prune_only(), nte.pruning.magnitude(optax.sgd(0.1), 0.5)]:
        with pytest.raises(ValueError, match="params"):
            opt.update(params, opt.init(params))
