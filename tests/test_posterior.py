"""Tests of nte/_posterior.py: the NTE posterior update (docs/math.md, properties 1–6, 9, 10)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import optax
import pytest
from hypothesis import given, settings, strategies as st

import nte


def _params(key, dtype=jnp.float32):
    k1, k2 = jax.random.split(key)
    return {
        "w": jax.random.normal(k1, (4, 3), dtype),
        "v": jax.random.normal(k2, (5,), dtype),
    }


def _grads(key, params, batch):
    leaves, treedef = jtu.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    return treedef.unflatten(
        [jax.random.normal(k, (batch,) + p.shape, p.dtype) for k, p in zip(keys, leaves)]
    )


def _step(opt, state, params, grads):
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state


def _reference_step(delta, grads, beta, eta, z):
    """Independent NumPy float64 implementation of the posterior update (no clip)."""
    out = {}
    for k, d in delta.items():
        s = np.sign(d)
        g = np.asarray(grads[k], np.float64)
        lam = np.log(np.abs(d)) + eta * np.sum(np.log(1 - beta * s * g), axis=0)
        out[k] = (s, lam)
    lse = np.log(sum(np.sum(np.exp(lam)) for _, lam in out.values()))
    return {k: s * np.exp(lam + np.log(z) - lse) for k, (s, lam) in out.items()}


def _l1(tree):
    return float(sum(np.sum(np.abs(np.asarray(v, np.float64))) for v in jtu.tree_leaves(tree)))


def test_matches_numpy_reference(getkey):
    params = _params(getkey())
    grads = _grads(getkey(), params, 6)
    opt = nte.scale_by_nte(0.05)
    new, _ = _step(opt, opt.init(params), params, grads)
    ref = _reference_step(
        {k: np.asarray(v, np.float64) for k, v in params.items()}, grads, 0.05, 1.0, _l1(params)
    )
    for k in params:
        np.testing.assert_allclose(new[k], ref[k], rtol=2e-6, atol=1e-7)


def test_signs_preserved_over_many_steps(getkey):  # §6.1
    params = _params(getkey())
    opt = nte.nte(0.3)  # large β: invalid experts get capped every step
    state = opt.init(params)
    signs = nte.sign_mask(params)
    for _ in range(30):
        params, state = _step(opt, state, params, _grads(getkey(), params, 8))
        assert int(nte.sign_violations(params, signs)) == 0
    assert int(state.num_invalid) > 0
    assert jtu.tree_all(jtu.tree_map(lambda a, b: bool(jnp.all(a == b)), state.signs, signs))


def test_l1_norm_without_clip(getkey):  # §6.2
    params = _params(getkey())
    z = _l1(params)
    opt = nte.nte(0.1)
    state = opt.init(params)
    for _ in range(10):
        params, state = _step(opt, state, params, _grads(getkey(), params, 4))
        assert abs(_l1(params) - z) / z <= 1e-6


def test_l1_norm_with_clip(getkey):  # §6.2
    params = _params(getkey())
    z = _l1(params)
    opt = nte.nte(0.1, max_delta=0.4)
    state = opt.init(params)
    for _ in range(10):
        params, state = _step(opt, state, params, _grads(getkey(), params, 4))
        assert _l1(params) <= z * (1 + 1e-6)
        assert max(float(jnp.max(jnp.abs(v))) for v in jtu.tree_leaves(params)) <= 0.4 * (1 + 1e-6)


@pytest.mark.parametrize("beta, eta", [(1e-12, 1.0), (0.1, 1e-12)])
def test_tiny_beta_or_eta_is_identity(getkey, beta, eta):  # §6.3
    params = _params(getkey())
    opt = nte.nte(beta, eta=eta)
    new, _ = _step(opt, opt.init(params), params, _grads(getkey(), params, 4))
    for a, b in zip(jtu.tree_leaves(new), jtu.tree_leaves(params)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=0)


def test_first_order(getkey, x64):  # §6.4
    params = _params(getkey(), jnp.float64)
    grads = _grads(getkey(), params, 5)
    z = _l1(params)
    G = jtu.tree_map(lambda g: g.sum(0), grads)
    inner = sum(jnp.sum(params[k] * G[k]) for k in params)
    errors = []
    for beta in [1e-2, 1e-3, 1e-4, 1e-5]:
        opt = nte.nte(beta, eta=1.5)
        new, _ = _step(opt, opt.init(params), params, grads)
        pred = {
            k: -1.5 * beta * jnp.abs(params[k]) * G[k] + 1.5 * beta * params[k] * inner / z
            for k in params
        }
        num = sum(jnp.sum((new[k] - params[k] - pred[k]) ** 2) for k in params) ** 0.5
        den = sum(jnp.sum(pred[k] ** 2) for k in params) ** 0.5
        errors.append(float(num / den))
    ratios = np.array(errors[:-1]) / np.array(errors[1:])
    assert np.all((ratios > 7) & (ratios < 13)), (errors, ratios)


def test_batch_equals_sequence(getkey):  # §6.5
    params = _params(getkey())
    grads = _grads(getkey(), params, 6)
    opt = nte.nte(0.05)
    state0 = opt.init(params)
    batch, _ = _step(opt, state0, params, grads)
    for order in [np.arange(6), np.array([3, 1, 5, 0, 2, 4])]:
        p, state = params, state0
        for b in order:
            single = jtu.tree_map(lambda g, b=b: g[b : b + 1], grads)
            p, state = _step(opt, state, p, single)
        for a, r in zip(jtu.tree_leaves(p), jtu.tree_leaves(batch)):
            np.testing.assert_allclose(a, r, rtol=1e-6, atol=0)


def test_eta_is_a_power(getkey):  # §6.6
    params = _params(getkey())
    grads = _grads(getkey(), params, 4)
    doubled = jtu.tree_map(lambda g: jnp.concatenate([g, g]), grads)
    a, _ = _step(nte.nte(0.05, eta=2.0), nte.nte(0.05, eta=2.0).init(params), params, grads)
    b, _ = _step(nte.nte(0.05), nte.nte(0.05).init(params), params, doubled)
    for u, v in zip(jtu.tree_leaves(a), jtu.tree_leaves(b)):
        np.testing.assert_allclose(u, v, rtol=1e-6, atol=0)


def test_pruning_is_exact_and_permanent(getkey):  # §6.9
    params = _params(getkey())
    beta = 0.5
    grads = jtu.tree_map(lambda g: 0.2 * jnp.tanh(g), _grads(getkey(), params, 3))
    s = jnp.sign(params["w"][1, 2])
    grads["w"] = grads["w"].at[1, 1, 2].set(2.0 * s)  # β s g = 1 exactly for one example
    opt = nte.nte(beta)
    state = opt.init(params)
    params, state = _step(opt, state, params, grads)
    assert params["w"][1, 2] == 0.0 and int(state.num_pruned) == 1
    assert state.log_magnitudes["w"][1, 2] == -jnp.inf
    for _ in range(5):
        params, state = _step(opt, state, params, _grads(getkey(), params, 3))
        assert params["w"][1, 2] == 0.0
        finite = jnp.concatenate([params["w"].ravel(), params["v"]])
        assert bool(jnp.all(jnp.isfinite(finite))) and int(jnp.sum(finite == 0)) == 1


@pytest.mark.parametrize("invalid", ["cap", "floor"])
def test_invalid_experts_stay_finite(getkey, invalid):  # §6.10
    params = _params(getkey())
    grads = _grads(getkey(), params, 4)
    opt = nte.nte(5.0, invalid=invalid)  # βsg > 1 for many elements
    state = opt.init(params)
    expected = sum(
        int(jnp.sum(jnp.any(5.0 * jnp.sign(params[k]) * grads[k] > 1, axis=0))) for k in params
    )
    new, state = _step(opt, state, params, grads)
    assert expected > 0 and int(state.num_invalid) == expected
    assert all(bool(jnp.all(jnp.isfinite(v))) for v in jtu.tree_leaves(new))
    assert int(nte.sign_violations(new, state.signs)) == 0
    assert abs(_l1(new) - _l1(params)) / _l1(params) <= 1e-6


def test_cap_lowers_beta_to_the_worst_expert(getkey, x64):
    params = _params(getkey(), jnp.float64)
    grads = _grads(getkey(), params, 3)
    beta = 2.0
    max_u = max(float(jnp.max(beta * jnp.sign(params[k]) * grads[k])) for k in params)
    assert max_u > 1
    capped, _ = _step(nte.nte(beta), nte.nte(beta).init(params), params, grads)
    beta_cap = beta * (1 - 1e-6) / max_u
    ref, _ = _step(nte.nte(beta_cap), nte.nte(beta_cap).init(params), params, grads)
    for a, b in zip(jtu.tree_leaves(capped), jtu.tree_leaves(ref)):
        np.testing.assert_allclose(a, b, rtol=1e-9)


def test_invalid_raise(getkey):
    params = _params(getkey())
    grads = _grads(getkey(), params, 4)
    opt = nte.nte(5.0, invalid="raise")
    state = opt.init(params)
    with pytest.raises(Exception, match="inv_temperature"):
        opt.update(grads, state, params)
    with pytest.raises(Exception, match="inv_temperature"):
        jax.block_until_ready(jax.jit(opt.update)(grads, state, params))
    ok = nte.nte(1e-4, invalid="raise")
    ok.update(grads, ok.init(params), params)  # valid experts: no error


@settings(max_examples=15, deadline=None)
@given(
    beta=st.floats(1e-6, 1e3),
    seed=st.integers(0, 2**16),
    invalid=st.sampled_from(["cap", "floor"]),
)
def test_fuzz_never_nan_never_flips(beta, seed, invalid):
    key = jax.random.key(seed)
    k1, k2, k3 = jax.random.split(key, 3)
    params = {"w": jax.random.normal(k1, (3, 4)) * jnp.exp(jax.random.normal(k2, (3, 4)))}
    opt = nte.nte(beta, invalid=invalid, max_delta=None if seed % 2 else 1.0)
    state = opt.init(params)
    signs = nte.sign_mask(params)
    for k in jax.random.split(k3, 3):
        grads = {"w": 10.0 * jax.random.normal(k, (5, 3, 4))}
        params, state = _step(opt, state, params, grads)
        assert not bool(jnp.any(jnp.isnan(params["w"])))
        assert bool(jnp.all(jnp.isfinite(state.log_magnitudes["w"]) | (params["w"] == 0)))
        assert int(nte.sign_violations(params, signs)) == 0


def test_init_scale_uses_a_fresh_key_per_leaf(getkey):
    params = {"a": jnp.ones((50,)), "b": jnp.ones((50,))}
    opt = nte.nte(0.01, init_scale=0.1, key=getkey())
    state = opt.init(params)
    da = jnp.exp(state.log_magnitudes["a"]) * state.signs["a"]
    db = jnp.exp(state.log_magnitudes["b"]) * state.signs["b"]
    assert not bool(jnp.allclose(da, db))
    assert 0.05 < float(jnp.std(da)) < 0.2
    np.testing.assert_allclose(state.origin["a"] + da, params["a"], rtol=1e-6)
    with pytest.raises(ValueError, match="key"):
        nte.nte(0.01, init_scale=0.1).init(params)
    # a zero-likelihood step returns θ0 + Δ = θ
    zero = {k: jnp.zeros((2, 50)) for k in params}
    new, _ = _step(opt, state, params, zero)
    np.testing.assert_allclose(new["a"], params["a"], rtol=1e-6)


@pytest.mark.slow
def test_with_expert_log_likelihoods(getkey):
    model = nte.nn.MLP(4, 6, 1, 3, key=getkey())
    params, _ = nte.split(model)
    x, y = jax.random.normal(getkey(), (7, 4)), jnp.arange(7) % 3

    def loss(m, xi, yi):
        return -jax.nn.log_softmax(m(xi))[yi]

    opt = nte.nte(0.05, eta=2.0)  # β, η here: per-example gradients
    state = opt.init(params)
    grads = nte.per_example_grads(loss, model, x, y)
    a, _ = opt.update(grads, state, params)
    lik = nte.expert_log_likelihoods(
        loss, model, x, y, signs=state.signs, inv_temperature=0.05, eta=2.0, method="chunked"
    )
    b, _ = nte.nte().update(lik, state, params)  # β, η in the likelihood
    for u, v in zip(jtu.tree_leaves(a), jtu.tree_leaves(b)):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-7)
    # the per-example-gradient path computes its likelihood as the Vmap method does
    vmap = nte.expert_log_likelihoods(
        loss, model, x, y, signs=state.signs, inv_temperature=0.05, eta=2.0, method="vmap"
    )
    c, _ = nte.nte().update(vmap, state, params)
    for u, v in zip(jtu.tree_leaves(a), jtu.tree_leaves(c)):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(inv_temperature=0.05), "inv_temperature"),
        (dict(eta=2.0), "eta"),
        (dict(invalid="floor"), "invalid"),
        (dict(inv_temperature=0.05, invalid="cap"), "inv_temperature"),
    ],
)
def test_ignored_data_terms_raise(getkey, kwargs, name):
    """β, η and the invalid policy of an ExpertLogLikelihoods come from its own call: giving
    them to the optimizer as well is an error naming the argument, not silently ignored."""
    model = nte.nn.MLP(4, 6, 1, 3, key=getkey())
    params, _ = nte.split(model)
    x, y = jax.random.normal(getkey(), (5, 4)), jnp.arange(5) % 3
    loss = lambda m, xi, yi: -jax.nn.log_softmax(m(xi))[yi]
    for factory in (nte.nte, nte.scale_by_nte):
        opt = factory(**kwargs)
        state = opt.init(params)
        lik = nte.expert_log_likelihoods(loss, model, x, y, signs=state.signs, inv_temperature=0.05)
        with pytest.raises(ValueError, match=f"`{name}` was given"):
            opt.update(lik, state, params)
        with pytest.raises(ValueError, match=f"`{name}` was given"):
            jax.jit(opt.update)(lik, state, params)


def test_per_example_grads_need_beta(getkey):
    params = _params(getkey())
    grads = _grads(getkey(), params, 3)
    for opt in (nte.nte(), nte.scale_by_nte(eta=2.0), nte.nte(max_delta=1.0)):
        with pytest.raises(ValueError, match="`inv_temperature`.*required"):
            opt.update(grads, opt.init(params), params)
    # η defaults to 1 and the policy to "cap"
    a, _ = _step(nte.nte(0.3), nte.nte(0.3).init(params), params, grads)
    b, _ = _step(nte.nte(0.3, eta=1.0, invalid="cap"), nte.nte(0.3).init(params), params, grads)
    for u, v in zip(jtu.tree_leaves(a), jtu.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


# --- optax integration -------------------------------------------------------------------------


def test_dtypes_and_no_recompilation(getkey, x64):
    for dtype in (jnp.float32, jnp.float64):
        params = _params(getkey(), dtype)
        opt = nte.nte(0.05, max_delta=1.0)
        state = opt.init(params)

        @eqx.debug.assert_max_traces(max_traces=1)
        def step(params, state, grads, opt=opt):
            updates, state = opt.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        step = jax.jit(step)
        for _ in range(3):
            params, state = step(params, state, _grads(getkey(), params, 4))
        assert all(v.dtype == dtype for v in jtu.tree_leaves(params))
        assert all(v.dtype == dtype for v in jtu.tree_leaves(state.log_magnitudes))
        assert state.signs["w"].dtype == jnp.int8


def test_chain_and_inject_hyperparams(getkey):
    params = _params(getkey())
    grads = _grads(getkey(), params, 4)
    ref, _ = _step(nte.nte(0.05, eta=1.5), nte.nte(0.05, eta=1.5).init(params), params, grads)
    chained = optax.chain(nte.scale_by_nte(0.05, eta=1.5), optax.identity())
    a, _ = _step(chained, chained.init(params), params, grads)
    injected = optax.inject_hyperparams(nte.scale_by_nte)(inv_temperature=0.05, eta=1.5)
    state = injected.init(params)
    b, state = jax.jit(lambda p, s, g: _step(injected, s, p, g))(params, state, grads)
    for u, v, w in zip(jtu.tree_leaves(a), jtu.tree_leaves(b), jtu.tree_leaves(ref)):
        np.testing.assert_allclose(u, w, rtol=1e-6)
        np.testing.assert_allclose(v, w, rtol=1e-6)
    # changing the injected β changes the step without retracing
    state.hyperparams["inv_temperature"] = jnp.asarray(1e-9)
    c, _ = _step(injected, state, b, grads)
    for u, v in zip(jtu.tree_leaves(c), jtu.tree_leaves(b)):
        np.testing.assert_allclose(u, v, rtol=1e-6)


def test_masked_weights_nte_biases_sgd(getkey):
    model = nte.nn.MLP(4, 6, 1, 3, key=getkey())
    params, _ = nte.split(model)
    x, y = jax.random.normal(getkey(), (5, 4)), jnp.arange(5) % 3

    def loss(m, xi, yi):
        return -jax.nn.log_softmax(m(xi))[yi]

    is_weight = jtu.tree_map(lambda _: False, params)
    is_weight = eqx.tree_at(lambda m: [lin.weight for lin in m.layers], is_weight, [True] * 2)
    is_bias = jtu.tree_map(lambda w: not w, is_weight)
    sum_batch = optax.stateless(lambda u, p: jtu.tree_map(lambda g: g.sum(0), u))
    opt = optax.chain(
        optax.masked(nte.nte(0.05), is_weight),
        optax.masked(optax.chain(sum_batch, optax.sgd(0.1)), is_bias),
    )
    state = opt.init(params)
    grads = nte.per_example_grads(loss, model, x, y)
    new, state = _step(opt, state, params, grads)
    signs = nte.sign_mask(params)
    for i in range(2):
        old, lin = params.layers[i], new.layers[i]
        np.testing.assert_allclose(
            lin.bias, old.bias - 0.1 * grads.layers[i].bias.sum(0), rtol=1e-6, atol=1e-7
        )
        assert int(nte.sign_violations(lin.weight, signs.layers[i].weight)) == 0
    z = sum(float(jnp.sum(jnp.abs(lin.weight))) for lin in params.layers)
    z_new = sum(float(jnp.sum(jnp.abs(lin.weight))) for lin in new.layers)
    assert abs(z_new - z) / z <= 1e-6


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(inv_temperature=0.0), "inv_temperature"),
        (dict(inv_temperature=-1.0), "inv_temperature"),
        (dict(inv_temperature=0.1, eta=0.0), "eta"),
        (dict(inv_temperature=0.1, max_delta=0.0), "max_delta"),
        (dict(inv_temperature=0.1, init_scale=-0.1), "init_scale"),
        (dict(inv_temperature=0.1, invalid="ignore"), "invalid"),
    ],
)
def test_bad_hyperparameters(kwargs, name):
    with pytest.raises(ValueError, match=name):
        nte.scale_by_nte(**kwargs)


def test_bad_updates(getkey):
    params = _params(getkey())
    opt = nte.nte(0.1)
    state = opt.init(params)
    with pytest.raises(ValueError, match="batch axis"):
        opt.update(params, state, params)  # no batch axis
    with pytest.raises(ValueError, match="updates"):
        opt.update({"w": jnp.zeros((2, 4, 3))}, state, params)  # tree mismatch
    with pytest.raises(ValueError, match="params"):
        opt.update(_grads(getkey(), params, 2), state)


# --- a real dataset ----------------------------------------------------------------------------


@pytest.mark.slow
def test_bias_free_mlp_learns_sklearn_digits():
    """A 64-32-10 bias-free ReLU MLP trained only by the NTE posterior update (origin variant,
    per-example gradients, β = 0.01, batch 32, 300 steps) on scikit-learn's digits."""
    data = nte.data.load("digits")  # the library's fixed train/test split
    x_train = jnp.asarray(data.x_train.reshape(data.n_train, -1))
    x_test = jnp.asarray(data.x_test.reshape(data.n_test, -1))
    y_train, y_test = jnp.asarray(data.y_train), jnp.asarray(data.y_test)

    def loss(m, xi, yi):
        return -jax.nn.log_softmax(m(xi))[yi]

    model = nte.nn.MLP(64, 32, 1, 10, use_bias=False, key=jax.random.key(0))
    params, static = nte.split(model)
    opt = nte.nte(0.01)
    state = opt.init(params)

    @eqx.filter_jit
    def step(params, state, key):
        idx = jax.random.randint(key, (32,), 0, x_train.shape[0])
        grads = nte.per_example_grads(loss, nte.merge(params, static), x_train[idx], y_train[idx])
        return _step(opt, state, params, grads)

    for k in jax.random.split(jax.random.key(1), 300):
        params, state = step(params, state, k)
    logits = jax.vmap(nte.merge(params, static))(x_test)
    accuracy = float(jnp.mean(jnp.argmax(logits, -1) == y_test))
    assert accuracy >= 0.85, accuracy
    assert int(nte.sign_violations(params, state.signs)) == 0


def test_hyperparameters_must_be_finite_numbers():
    # under the tests' runtime type checking the annotation check names it first; without it,
    # nte's own check does ("`inv_temperature` must be a number, got str '0.01'")
    with pytest.raises(TypeError, match="inv_temperature"):
        nte.nte("0.01")
    with pytest.raises(TypeError, match="`max_delta` must be a number, got bool"):
        nte.nte(max_delta=True)
    for bad in (float("inf"), float("nan"), -1.0):
        with pytest.raises(ValueError, match="`eta` must be a finite number > 0"):
            nte.nte(0.01, eta=bad)
