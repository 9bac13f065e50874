"""Tests of pruning in the NTE posterior update (nte/_posterior.py, nte/_posterior_pruning.py):
every cause prunes to exactly 0 (θ0) and is counted, against NumPy float64 references; pruned
experts never come back; the edge cases of issue 15 (exact logs for valid experts, non-finite
gradients)."""

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import optax
import pytest
from hypothesis import given, settings, strategies as st

import nte
from nte.likelihood import _kernels as kernels


def _params(key):
    k1, k2 = jax.random.split(key)
    return {"w": jax.random.normal(k1, (4, 3)), "v": jax.random.normal(k2, (5,))}


def _grads(key, params, batch, scale=1.0):
    leaves, treedef = jtu.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    return treedef.unflatten(
        [scale * jax.random.normal(k, (batch,) + p.shape) for k, p in zip(keys, leaves)]
    )


def _step(opt, state, params, grads):
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state


def _lik(tree):
    """An ExpertLogLikelihoods with the given L (the data term fixed by hand)."""
    return nte.ExpertLogLikelihoods(jtu.tree_map(jnp.asarray, tree), jnp.int32(0), jnp.asarray(1.0))


def _f64(tree):
    return {k: np.asarray(v, np.float64) for k, v in tree.items()}


def _reference(params, grads, beta, tau=None):
    """NumPy float64: L with −inf wherever some 1 − βsg ≤ 0 (invalid="prune"), renormalize,
    then remove weights below τ and renormalize again. Returns (new Δ, likelihood-pruned,
    threshold-pruned) as dicts."""
    p, g = _f64(params), _f64(grads)
    z = sum(np.abs(v).sum() for v in p.values())
    lam, by_lik = {}, {}
    for k in p:
        u = beta * np.sign(p[k]) * g[k]
        dead = np.any(u >= 1, axis=0)
        L = np.where(dead, -np.inf, np.sum(np.log1p(-np.where(u < 1, u, 0)), axis=0))
        lam[k], by_lik[k] = np.log(np.abs(p[k])) + L, dead

    def renorm(lam):
        lse = np.log(sum(np.exp(v).sum() for v in lam.values()))
        return {k: v + np.log(z) - lse for k, v in lam.items()}

    lam = renorm(lam)
    by_thr = {k: np.zeros(v.shape, bool) for k, v in lam.items()}
    if tau is not None:
        by_thr = {k: np.isfinite(v) & (np.exp(v) / z < tau) for k, v in lam.items()}
        lam = renorm({k: np.where(by_thr[k], -np.inf, v) for k, v in lam.items()})
    new = {k: np.sign(p[k]) * np.exp(v) for k, v in lam.items()}
    return new, by_lik, by_thr


def _total(tree):
    return sum(int(np.sum(v)) for v in tree.values())


def _consistent(state, params, origin=None):
    """num_pruned = Σ pruned_by = #(λ = −inf) = #(params == θ0) = #pruned(state)."""
    by = state.pruned_by
    lam = jtu.tree_leaves(state.log_magnitudes)
    minus_inf = sum(int(jnp.sum(v == -jnp.inf)) for v in lam)
    targets = jtu.tree_leaves(origin) if origin is not None else [0.0] * len(lam)
    at = sum(int(jnp.sum(p == t)) for p, t in zip(jtu.tree_leaves(params), targets))
    flagged = sum(int(m.sum()) for m in jtu.tree_leaves(nte.pruning.pruned(state)))
    total = int(by.likelihood) + int(by.threshold) + int(by.zero)
    assert int(state.num_pruned) == total == minus_inf == at == flagged
    assert all(c.dtype == jnp.int32 for c in (state.num_pruned, *by))


def test_invalid_prune_exact_zero_and_counted(getkey):
    params = _params(getkey())
    grads = _grads(getkey(), params, 4)
    beta = 1.0  # β s g ≥ 1 for several experts
    opt = nte.nte(beta, invalid="prune")
    state = opt.init(params)
    new, state = _step(opt, state, params, grads)
    ref, by_lik, _ = _reference(params, grads, beta)
    expected = _total(by_lik)
    assert expected > 0
    for k in params:
        assert bool(jnp.all((new[k] == 0) == by_lik[k])), k
        np.testing.assert_allclose(new[k], ref[k], rtol=2e-5, atol=1e-7)
    invalid = sum(int(np.sum(np.any(beta * np.sign(params[k]) * grads[k] > 1, 0))) for k in params)
    assert int(state.pruned_by.likelihood) == expected and int(state.num_invalid) == invalid
    _consistent(state, new)


def test_prune_below_exact_zero_and_counted(getkey):
    params = _params(getkey())
    grads = _grads(getkey(), params, 3, scale=0.3)
    beta, tau = 0.5, 0.03
    opt = nte.nte(beta, prune_below=tau)
    state = opt.init(params)
    new, state = _step(opt, state, params, grads)
    ref, by_lik, by_thr = _reference(params, grads, beta, tau)
    assert _total(by_lik) == 0 and _total(by_thr) > 0
    for k in params:
        assert bool(jnp.all((new[k] == 0) == by_thr[k])), k
        np.testing.assert_allclose(new[k], ref[k], rtol=2e-5, atol=1e-7)
    assert int(state.pruned_by.threshold) == _total(by_thr)
    l1 = sum(float(jnp.abs(v).sum()) for v in new.values())
    assert abs(l1 - sum(float(jnp.abs(v).sum()) for v in params.values())) / l1 < 1e-5
    _consistent(state, new)


def test_underflow_is_pruned_and_never_revived():
    """exp(λ) underflows in float32 for one expert: it reads exactly 0, λ = −inf, counted."""
    params = {"w": jnp.array([1.0, -2.0, 1e-30, 3.0])}
    opt = nte.nte()
    state = opt.init(params)
    L = np.array([0.0, 0.0, -60.0, 0.0])
    new, state = _step(opt, state, params, _lik({"w": L}))
    # float64 reference: Z = 6 and the renormalization shift ≈ 0, Δ = 1e-30·e^-60 ≈ 9e-57
    assert np.float32(1e-30 * np.exp(-60.0)) == 0 and np.float32(1e-30) != 0
    assert new["w"][2] == 0.0 and state.log_magnitudes["w"][2] == -jnp.inf
    assert int(state.pruned_by.zero) == 1 and int(state.num_pruned) == 1
    for _ in range(3):  # a strongly positive likelihood for it: it stays at 0
        new, state = _step(opt, state, new, _lik({"w": np.array([0.0, 0.0, 50.0, 0.0])}))
        assert new["w"][2] == 0.0
    _consistent(state, new)


def test_rounding_against_theta0_is_pruned_in_the_init_variant(getkey):
    """Init variant: θ0 + s·exp(λ) rounds to θ0 for a tiny Δ (float64 reference of the float32
    rounding); it reads θ0 exactly and is pruned by cause `zero`."""
    params = {"w": jnp.array([1.0, -1.5, 2.0, 0.7])}
    opt = nte.nte(init_scale=1e-3, key=getkey())
    state = opt.init(params)
    L = np.array([-20.0, 0.0, 0.0, -1.0])
    new, state = _step(opt, state, params, _lik({"w": L}))
    origin = np.asarray(state.origin["w"])
    lam0 = np.log(np.abs(np.asarray(params["w"], np.float64) - origin))
    lam = lam0 + L
    lam += np.log(np.exp(lam0).sum()) - np.log(np.exp(lam).sum())
    target = np.sign(np.asarray(params["w"]) - origin) * np.exp(lam)
    lands = np.float32(origin + target) == origin
    assert lands.tolist() == [True, False, False, False]
    assert bool(jnp.all((new["w"] == state.origin["w"]) == lands))
    assert int(state.pruned_by.zero) == 1
    _consistent(state, new, state.origin)


def test_parameter_set_to_zero_from_outside_is_pruned(getkey):
    params = _params(getkey())
    opt = nte.nte(0.05)
    state = opt.init(params)
    params = {**params, "v": params["v"].at[2].set(0.0)}
    for _ in range(3):
        params, state = _step(opt, state, params, _grads(getkey(), params, 3))
        assert params["v"][2] == 0.0 and state.log_magnitudes["v"][2] == -jnp.inf
    assert int(state.pruned_by.zero) == 1
    _consistent(state, params)


def test_exact_log_for_valid_experts_under_cap(x64):
    """Edge case 1: 0 < 1 − βsg < ε gets log(1 − βsg), not log ε (float32 and float64)."""
    for dtype, gap in [(jnp.float32, 2.0**-23), (jnp.float64, 1e-9)]:
        params = {"w": jnp.array([1.0, -1.0, 2.0], dtype)}
        grads = {"w": jnp.array([[2 * (1 - gap), 0.1, 0.2]], dtype)}  # β s g = 1 − gap
        opt = nte.nte(0.5, renormalize=False)
        state = opt.init(params)
        _, state = opt.update(grads, state, params)
        expected = np.log1p(-0.5 * np.array([1, -1, 1]) * np.asarray(grads["w"][0], np.float64))
        np.testing.assert_allclose(
            state.log_magnitudes["w"] - jnp.log(jnp.abs(params["w"])), expected, rtol=1e-6
        )
        assert int(state.num_invalid) == 0 and int(state.num_pruned) == 0
    floor = nte.nte(0.5, renormalize=False, invalid="floor")  # the floor policy still floors
    _, state = floor.update(grads, floor.init(params), params)
    np.testing.assert_allclose(state.log_magnitudes["w"][0], np.log(1e-6), rtol=1e-6)


def test_kernel_log1m_policies():
    u = jnp.array([0.5, 1 - 1e-7, 1.0, 1.5, jnp.nan, jnp.inf, -jnp.inf])
    exact = np.log1p(-np.asarray(u[:2], np.float64))
    out = kernels.log1m(u)
    np.testing.assert_allclose(out[:2], exact, rtol=1e-6)
    assert out[2] == out[3] == -jnp.inf and bool(jnp.all(jnp.isnan(out[4:])))
    with kernels.flooring(True):
        floored = kernels.log1m(u)
    # float32 rounds 1 − ε: log(fl(ε)) = −13.802 vs log ε = −13.816
    np.testing.assert_allclose(floored[:2], [np.log(0.5), np.log(1e-6)], rtol=2e-3)
    assert floored[2] == -jnp.inf and bool(jnp.all(jnp.isnan(floored[4:])))
    np.testing.assert_allclose(floored[3], np.log(1e-6), rtol=2e-3)
    assert float(kernels.capped_beta(2.0, jnp.asarray(jnp.inf))) == 2.0  # +inf never caps β to 0


@pytest.mark.parametrize("bad", [jnp.nan, jnp.inf, -jnp.inf])
@pytest.mark.parametrize("invalid", ["cap", "floor", "prune"])
def test_non_finite_gradient_skips_the_step(getkey, bad, invalid):
    """Edge cases 2 and 3: nothing changes, the step is counted as skipped."""
    params = _params(getkey())
    opt = nte.nte(0.1, invalid=invalid, prune_below=1e-3)
    state = opt.init(params)
    grads = _grads(getkey(), params, 3)
    grads["v"] = grads["v"].at[1, 2].set(bad)
    updates, new_state = opt.update(grads, state, params)
    assert all(bool(jnp.all(u == 0)) for u in jtu.tree_leaves(updates))
    assert int(new_state.num_skipped) == 1
    kept = new_state._replace(num_skipped=state.num_skipped)
    for a, b in zip(jtu.tree_leaves(kept), jtu.tree_leaves(state)):
        np.testing.assert_array_equal(a, b)
    new, state = _step(opt, new_state, params, _grads(getkey(), params, 3))  # goes on
    assert int(state.num_skipped) == 1 and bool(jnp.any(new["v"] != params["v"]))


def test_non_finite_gradient_raises_naming_the_leaf(getkey):
    params = _params(getkey())
    opt = nte.nte(1e-3, invalid="raise")
    state = opt.init(params)
    grads = _grads(getkey(), params, 3)
    grads["v"] = grads["v"].at[0, 1].set(jnp.nan)
    with pytest.raises(Exception, match=r"\['v'\]"):
        jax.block_until_ready(opt.update(grads, state, params))
    with pytest.raises(Exception, match=r"\['v'\]"):
        jax.block_until_ready(jax.jit(opt.update)(grads, state, params))


@pytest.mark.slow
def test_expert_log_likelihoods_prune_policy_all_methods(getkey):
    """`invalid="prune"`: −inf exactly where some 1 − βsg ≤ 0, the same for every method."""
    model = nte.nn.MLP(4, 6, 1, 3, key=getkey())
    x, y = 3 * jax.random.normal(getkey(), (5, 4)), jnp.arange(5) % 3
    signs = nte.sign_mask(nte.split(model)[0])
    kw = dict(signs=signs, inv_temperature=20.0, invalid="prune")
    outs = {
        m: nte.expert_log_likelihoods(_loss, model, x, y, method=m, **kw)
        for m in ["vmap", "chunked", "series", "auto"]
    }
    grads = nte.per_example_grads(_loss, model, x, y)
    g, s = jtu.tree_leaves(grads), jtu.tree_leaves(signs)
    dead = [
        np.any(20.0 * np.asarray(si, np.float64) * np.asarray(gi) >= 1, 0) for gi, si in zip(g, s)
    ]
    assert sum(int(d.sum()) for d in dead) > 0
    for m, out in outs.items():
        assert int(out.num_invalid) == int(outs["vmap"].num_invalid) > 0, m
        for L, d in zip(jtu.tree_leaves(out.log_likelihoods), dead):
            assert bool(jnp.all((L == -jnp.inf) == d)), m
            assert bool(jnp.all(jnp.isfinite(L) | d)), m


def _loss(model, x, y):
    return -jax.nn.log_softmax(model(x))[y]


@pytest.mark.slow
@settings(max_examples=30, deadline=None)
@given(
    log_beta=st.floats(-3, 2),
    seed=st.integers(0, 2**16),
    tau=st.one_of(st.none(), st.floats(1e-4, 0.05)),
    invalid=st.sampled_from(["cap", "floor", "prune"]),
    init=st.booleans(),
)
def test_pruned_never_revived_signs_never_flip(log_beta, seed, tau, invalid, init):
    k1, k2, k3, k4 = jax.random.split(jax.random.key(seed), 4)
    params = {"w": jax.random.normal(k1, (3, 4)) * jnp.exp(2 * jax.random.normal(k2, (3, 4)))}
    opt = nte.nte(
        10.0**log_beta, invalid=invalid, prune_below=tau, init_scale=1e-3 if init else 0.0, key=k4
    )
    state = opt.init(params)
    origin = state.origin["w"] if init else jnp.zeros((3, 4))
    signs = state.signs["w"]
    pruned = np.zeros((3, 4), bool)
    for k in jax.random.split(k3, 4):
        grads = {"w": 10.0 * jax.random.normal(k, (5, 3, 4))}
        params, state = _step(opt, state, params, grads)
        w = params["w"]
        assert not bool(jnp.any(jnp.isnan(w)))
        now = np.asarray(state.log_magnitudes["w"] == -jnp.inf)
        assert not np.any(pruned & ~now), "a pruned expert came back"
        assert np.array_equal(now, np.asarray(w == origin))
        side = jnp.sign(w - origin).astype(jnp.int8)
        assert bool(jnp.all((side == signs) | (side == 0))), "a sign flipped"
        pruned = now
        _consistent(state, params, state.origin)


@pytest.mark.parametrize("tau", [0.0, 1.0, -0.1, 1.5, 1])
def test_bad_prune_below(tau):
    with pytest.raises(ValueError, match="prune_below"):
        nte.nte(0.1, prune_below=tau)


@pytest.mark.parametrize("tau", [True, "0.1", [0.1]])
def test_prune_below_of_the_wrong_type(tau):
    with pytest.raises(Exception, match="prune_below"):  # the annotation check, or ours
        nte.scale_by_nte(0.1, prune_below=tau)


def test_bad_invalid():
    with pytest.raises(ValueError, match="invalid"):
        nte.nte(0.1, invalid="remove")
    with pytest.raises(ValueError, match="invalid"):
        nte.scale_by_nte(0.1, invalid="Prune")
