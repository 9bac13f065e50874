"""EWC: the Fisher estimators, the penalty, the merged multi-task quadratic, online EWC."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import nte
from nte.continual import Task, ewc_penalty, fisher_diagonal, make_learner


def ewc(lr, ewc_lambda=1.0, **kw):
    return make_learner("ewc", lr=lr, ewc_lambda=ewc_lambda, **kw)


def online_ewc(lr, ewc_lambda=1.0, gamma=1.0, **kw):
    return make_learner("online_ewc", lr=lr, ewc_lambda=ewc_lambda, gamma=gamma, **kw)


def _model(key, dtype=jnp.float64):
    model = nte.nn.MLP(4, 5, 1, 3, key=key)
    return jax.tree_util.tree_map(
        lambda a: a.astype(dtype) if eqx.is_inexact_array(a) else a, model
    )


def _data(key, n=7, dtype=jnp.float64):
    kx, ky = jr.split(key)
    return jr.normal(kx, (n, 4), dtype), jr.randint(ky, (n,), 0, 3)


def _loop_fisher(model, x, labels, mask):
    """Reference: a Python loop over examples of squared gradients of log-softmax."""
    params, static = nte.split(model)

    def loglik(p, xi, yi):
        logits = nte.merge(p, static)(xi)
        return jax.nn.log_softmax(jnp.where(mask, logits, -1e30))[yi]

    grad = jax.jit(jax.grad(loglik))
    total = jax.tree_util.tree_map(jnp.zeros_like, params)
    for i in range(x.shape[0]):
        g = grad(params, x[i], labels[i])
        total = jax.tree_util.tree_map(lambda t, gi: t + gi**2, total, g)
    return jax.tree_util.tree_map(lambda t: t / x.shape[0], total)


def _allclose(a, b, **kw):
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), **kw)


@pytest.mark.parametrize("chunk_size", [None, 3])
def test_empirical_fisher_matches_loop(x64, getkey, chunk_size):
    model = _model(getkey())
    x, y = _data(getkey())
    mask = jnp.array([True, False, True])
    y = jnp.where(y == 1, 2, y)  # labels must be unmasked classes
    fisher = fisher_diagonal(model, x, y, mask=mask, chunk_size=chunk_size)
    _allclose(fisher, _loop_fisher(model, x, y, mask), rtol=1e-10, atol=1e-14)


def test_true_fisher_matches_loop_with_the_same_samples(x64, getkey):
    model = _model(getkey())
    x, y = _data(getkey())
    mask = jnp.ones(3, bool)
    key = getkey()
    fisher = fisher_diagonal(model, x, y, variant="true", key=key, chunk_size=4)
    logp = jax.nn.log_softmax(jax.vmap(model)(x))
    sampled = jr.categorical(key, logp)
    _allclose(fisher, _loop_fisher(model, x, sampled, mask), rtol=1e-10, atol=1e-14)


def test_true_fisher_is_unbiased_for_the_expected_fisher(x64, getkey):
    """Averaged over many samples, the true-Fisher estimate → Σ_c p_c g_c² (exact expectation)."""
    model = _model(getkey())
    x, _ = _data(getkey(), n=2)
    mask = jnp.ones(3, bool)
    n = 6000
    xs = jnp.repeat(x, n // 2, axis=0)
    est = fisher_diagonal(
        model, xs, jnp.zeros(n, int), variant="true", key=getkey(), chunk_size=500
    )
    probs = jax.nn.softmax(jax.vmap(model)(x))
    exact = None
    for c in range(3):
        fc = [_loop_fisher(model, x[i : i + 1], jnp.array([c]), mask) for i in range(2)]
        p0, p1 = probs[0, c], probs[1, c]
        term = jax.tree_util.tree_map(lambda a, b, p0=p0, p1=p1: (p0 * a + p1 * b) / 2, *fc)
        exact = term if exact is None else jax.tree_util.tree_map(jnp.add, exact, term)
    for e, ex in zip(jax.tree_util.tree_leaves(est), jax.tree_util.tree_leaves(exact)):
        np.testing.assert_allclose(np.sum(e), np.sum(ex), rtol=0.06)


def test_penalty_zero_at_anchor_and_gradient_closed_form(x64, getkey):
    params, _ = nte.split(_model(getkey()))
    anchor, _ = nte.split(_model(getkey()))
    fisher = jax.tree_util.tree_map(lambda p: jr.uniform(getkey(), p.shape, p.dtype), params)
    lam = 3.7
    assert float(ewc_penalty(anchor, fisher, anchor, lam)) == 0.0
    grad = jax.grad(ewc_penalty)(params, fisher, anchor, lam)
    closed = jax.tree_util.tree_map(lambda f, p, a: lam * f * (p - a), fisher, params, anchor)
    _allclose(grad, closed, rtol=1e-12, atol=1e-14)
    value = sum(
        0.5 * lam * float(jnp.sum(f * (p - a) ** 2))
        for f, p, a in zip(*(jax.tree_util.tree_leaves(t) for t in (fisher, params, anchor)))
    )
    np.testing.assert_allclose(float(ewc_penalty(params, fisher, anchor, lam)), value, rtol=1e-12)


def _three_tasks(learner, getkey):
    """Run `end_task` at three different parameter vectors; return states and (F_t, θ_t)."""
    task = Task(jnp.int32(0), jnp.ones(3, bool))
    state = learner.init(_model(getkey()), key=getkey())
    end_task = eqx.filter_jit(learner.end_task)
    seen = []
    for t in range(3):
        model = _model(getkey())
        state = eqx.tree_at(lambda s: s.model, state, model)
        x, y = _data(getkey())
        state = end_task(state, jnp.int32(t), x, y, task, key=getkey())
        seen.append((fisher_diagonal(model, x, y), nte.split(model)[0]))
    return state, seen


def test_merged_quadratic_equals_sum_over_tasks(x64, getkey):
    learner = ewc(0.1, 2.5)
    state, seen = _three_tasks(learner, getkey)
    theta, _ = nte.split(_model(getkey()))

    def explicit(p):
        return sum(ewc_penalty(p, f, a, 2.5) for f, a in seen)

    np.testing.assert_allclose(learner.penalty(state, theta), explicit(theta), rtol=1e-10)
    _allclose(
        jax.grad(lambda p: learner.penalty(state, p))(theta), jax.grad(explicit)(theta), rtol=1e-9
    )
    assert int(state.tasks) == 3


def test_online_ewc_decays_the_running_fisher(x64, getkey):
    gamma = 0.6
    learner = online_ewc(0.1, 2.0, gamma)
    state, seen = _three_tasks(learner, getkey)
    (f1, _), (f2, _), (f3, a3) = seen
    expected = jax.tree_util.tree_map(lambda a, b, c: gamma**2 * a + gamma * b + c, f1, f2, f3)
    _allclose(state.fisher, expected, rtol=1e-12)
    _allclose(state.anchor, a3, rtol=0, atol=0)
    theta, _ = nte.split(_model(getkey()))
    np.testing.assert_allclose(
        learner.penalty(state, theta), ewc_penalty(theta, expected, a3, 2.0), rtol=1e-12
    )


def test_step_is_sgd_on_loss_plus_penalty(x64, getkey):
    lr, lam = 0.05, 4.0
    learner = ewc(lr, lam)
    state, _ = _three_tasks(learner, getkey)
    x, y = _data(getkey())
    task = Task(jnp.int32(3), jnp.ones(3, bool))
    new, aux = learner.step(state, x, y, task)
    params, static = nte.split(state.model)
    g = jax.grad(
        lambda p: jnp.mean(
            jax.vmap(lambda xi, yi: -jax.nn.log_softmax(nte.merge(p, static)(xi))[yi])(x, y)
        )
    )(params)
    expected = jax.tree_util.tree_map(
        lambda p, gi, f, a: p - lr * (gi + lam * f * (p - a)), params, g, state.fisher, state.anchor
    )
    _allclose(nte.split(new.model)[0], expected, rtol=1e-10, atol=1e-13)
    assert set(aux) >= {"loss", "penalty"}


@pytest.fixture(scope="module")
def harness_runs():
    """EWC with λ = 10 and with λ = 0 (plain SGD) on the same tasks, seed and batches."""

    def once(lam):
        config = nte.continual.Config(
            dataset="digits", tasks=2, learner="ewc", lr=0.1, width=32, depth=1, epochs=3,
            seeds=1, progress=False, ewc_lambda=lam, fisher_examples=256,
        )  # fmt: skip
        return nte.continual.run(config)

    return once(10.0), once(0.0)


@pytest.mark.slow
def test_ewc_forgets_less_than_lambda_zero(harness_runs):
    ewc_run, plain = harness_runs
    assert ewc_run.finished and plain.finished
    # the first task is trained identically (no penalty before the first task boundary)
    np.testing.assert_array_equal(ewc_run.R[0, 0], plain.R[0, 0])
    assert ewc_run.R[0, 0, 0] > 0.7
    # measured: forgetting of task 1 is 0.059 with λ = 10 and 0.154 with λ = 0
    assert ewc_run.metrics.mean_forgetting[0] < plain.metrics.mean_forgetting[0] - 0.05
    assert ewc_run.R[0, 1, 0] > plain.R[0, 1, 0] + 0.05


def test_ewc_penalty_of_the_run_equals_a_hand_computation(harness_runs):
    ewc_run, _ = harness_runs
    state = jax.tree_util.tree_map(lambda v: v[0] if isinstance(v, jax.Array) else v, ewc_run.state)
    assert int(state.tasks) == 2
    params = nte.split(state.model)[0]
    leaves = [jax.tree_util.tree_leaves(t) for t in (params, state.fisher, state.anchor)]
    quad = sum(
        float(np.sum(np.asarray(f, np.float64) * (np.asarray(p, np.float64) - a) ** 2))
        for p, f, a in zip(*leaves)
    )
    hand = 0.5 * 10.0 * (quad + float(state.offset))
    learner = make_learner(ewc_run.config.learner)
    assert hand > 0
    np.testing.assert_allclose(float(learner.penalty(state, params)), hand, rtol=1e-5)


def test_bad_input():
    with pytest.raises(ValueError, match="ewc_lambda"):
        ewc(0.1, -1.0)
    with pytest.raises(ValueError, match="gamma"):
        online_ewc(0.1, 1.0, 0.0)
    with pytest.raises(ValueError, match="gamma"):
        online_ewc(0.1, 1.0, 1.5)
    with pytest.raises(ValueError, match="fisher"):
        ewc(0.1, fisher="diagonal")
    with pytest.raises(ValueError, match="fisher_examples"):
        ewc(0.1, fisher_examples=0)
    with pytest.raises(ValueError, match="lr"):
        ewc(0.0)
    model = nte.nn.MLP(4, 5, 1, 3, key=jr.key(0))
    x, y = jnp.ones((4, 4)), jnp.zeros(4, int)
    with pytest.raises(ValueError, match="key"):
        fisher_diagonal(model, x, y, variant="true")
    with pytest.raises(ValueError, match="variant"):
        fisher_diagonal(model, x, y, variant="exact")
    with pytest.raises(ValueError, match="chunk_size"):
        fisher_diagonal(model, x, y, chunk_size=0)
    learner = ewc(0.1, fisher_examples=8)
    state = learner.init(model, key=jr.key(1))
    with pytest.raises(ValueError, match="fisher_examples"):
        learner.end_task(
            state, jnp.int32(0), x, y, Task(jnp.int32(0), jnp.ones(3, bool)), key=jr.key(2)
        )
