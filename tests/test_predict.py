"""Tests for `nte.predict`: closed forms against ODE solves, loops and real linearized training."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import nte


def _mse(f, y):
    return 0.5 * jnp.sum((f - y) ** 2)


def _random_problem(key, n=6, m=4, k=3, p=9, full=False):
    """A random PSD kernel from random features (full rank since p > n), targets and outputs."""
    keys = jax.random.split(key, 5)
    if full:
        jac = jax.random.normal(keys[0], (n + m, k, p + n * k)) / np.sqrt(p)
        ntk = jnp.einsum("iap,jbp->ijab", jac, jac)
        k_train, k_test = ntk[:n, :n], ntk[n:, :n]
    else:
        feats = jax.random.normal(keys[0], (n + m, p)) / np.sqrt(p)
        ntk = feats @ feats.T
        k_train, k_test = ntk[:n, :n], ntk[n:, :n]
    y = jax.random.normal(keys[1], (n, k))
    f0 = 0.3 * jax.random.normal(keys[2], (n, k))
    f0_test = 0.3 * jax.random.normal(keys[3], (m, k))
    return k_train, k_test, y, f0, f0_test


def _apply(ntk, g):
    return ntk @ g if ntk.ndim == 2 else jnp.einsum("mnab,nb->ma", ntk, g)


def _np_apply(ntk, g):
    return ntk @ g if ntk.ndim == 2 else np.einsum("mnab,nb->ma", ntk, g)


def _rk4_reference(k_train, k_test, y, f0, f0_test, lr, t_end, steps=4000):
    """Fine fixed-step RK4 of df/dt = −η Θ (f − y), df*/dt = −η Θ_* (f − y), in numpy."""
    kt, ks = np.asarray(k_train), np.asarray(k_test)
    y = np.asarray(y)

    def field(state):
        f, _ = state
        return -lr * _np_apply(kt, f - y), -lr * _np_apply(ks, f - y)

    state, h = (np.asarray(f0), np.asarray(f0_test)), t_end / steps
    for _ in range(steps):
        k1 = field(state)
        k2 = field(tuple(s + 0.5 * h * d for s, d in zip(state, k1)))
        k3 = field(tuple(s + 0.5 * h * d for s, d in zip(state, k2)))
        k4 = field(tuple(s + h * d for s, d in zip(state, k3)))
        state = tuple(
            s + h / 6 * (a + 2 * b + 2 * c + d) for s, a, b, c, d in zip(state, k1, k2, k3, k4)
        )
    return state


# --- a tiny network, its linearization and its NTK (independent references) -----------------


def _tiny_model(key, out_size=3):
    k1, k2 = jax.random.split(key)
    model = nte.nn.MLP(4, 8, 1, out_size, parameterization="ntk", key=k1)
    x = jax.random.normal(k2, (10, 4))
    return model, x[:6], x[6:]


def _run_linearized(model, x_train, x_test, y, optimizer, steps):
    """`steps` optax updates of MSE on `nte.linearize(model, model)`; outputs before and after."""
    params0, static = nte.split(nte.linearize(model, model))
    outputs = lambda p, x: jax.vmap(nte.merge(p, static))(x)
    loss = lambda p: _mse(outputs(p, x_train), y)

    @jax.jit
    def train(params):
        def step(carry, _):
            params, state = carry
            updates, state = optimizer.update(jax.grad(loss)(params), state)
            return (optax.apply_updates(params, updates), state), None

        return jax.lax.scan(step, (params, optimizer.init(params)), length=steps)[0][0]

    params = train(params0)
    before = outputs(params0, x_train), outputs(params0, x_test)
    return outputs(params, x_train), outputs(params, x_test), *before


def _kernels(model, x_train, x_test, trace=False):
    return (
        nte.empirical_ntk(model, x_train, trace=trace),
        nte.empirical_ntk(model, x_test, x_train, trace=trace),
    )


# --- closed form -----------------------------------------------------------------------------


@pytest.mark.parametrize("full", [False, True])
def test_closed_form_matches_fine_ode_solve(x64, getkey, full):
    k_train, k_test, y, f0, f0_test = _random_problem(getkey(), full=full)
    lr, t_end = 0.7, 2.5
    predict = nte.predict.gradient_descent_mse(k_train, y, learning_rate=lr)
    train, test = predict(t_end, f0, f0_test, k_test)
    ref_train, ref_test = _rk4_reference(k_train, k_test, y, f0, f0_test, lr, t_end)
    np.testing.assert_allclose(train, ref_train, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(test, ref_test, rtol=1e-4, atol=1e-6)


def test_t0_returns_initial_outputs(getkey):
    k_train, k_test, y, f0, f0_test = _random_problem(getkey())
    predict = nte.predict.gradient_descent_mse(k_train, y, learning_rate=0.5)
    train, test = predict(0.0, f0, f0_test, k_test)
    np.testing.assert_allclose(train, f0, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(test, f0_test, rtol=1e-5, atol=1e-6)


def test_t_inf_returns_targets_and_kernel_regression(x64, getkey):
    k_train, k_test, y, f0, f0_test = _random_problem(getkey())
    predict = nte.predict.gradient_descent_mse(k_train, y, learning_rate=0.5)
    train, test = predict(jnp.inf, f0, f0_test, k_test)
    np.testing.assert_allclose(train, y, rtol=1e-8, atol=1e-10)
    ref = f0_test + k_test @ np.linalg.solve(k_train, y - f0)
    np.testing.assert_allclose(test, ref, rtol=1e-8, atol=1e-10)
    # with a ridge, t = inf is kernel ridge regression
    reg = 0.3
    predict = nte.predict.gradient_descent_mse(k_train, y, learning_rate=0.5, diag_reg=reg)
    _, test = predict(jnp.inf, f0, f0_test, k_test)
    ref = f0_test + k_test @ np.linalg.solve(k_train + reg * np.eye(6), y - f0)
    np.testing.assert_allclose(test, ref, rtol=1e-8, atol=1e-10)


def test_array_of_times_stacks_and_jits(getkey):
    k_train, k_test, y, f0, f0_test = _random_problem(getkey())
    predict = nte.predict.gradient_descent_mse(k_train, y, learning_rate=0.5)
    ts = jnp.array([[0.0, 1.0], [3.0, jnp.inf]])
    train, test = jax.jit(predict)(ts, f0, f0_test, k_test)
    assert train.shape == (2, 2, 6, 3) and test.shape == (2, 2, 4, 3)
    single_train, single_test = predict(3.0, f0, f0_test, k_test)
    np.testing.assert_allclose(train[1, 0], single_train, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(test[1, 0], single_test, rtol=1e-5, atol=1e-6)
    # one-dimensional targets and no test points
    predict_1d = nte.predict.gradient_descent_mse(k_train, y[:, 0], learning_rate=0.5)
    out, none = predict_1d(1.0, f0[:, 0])
    np.testing.assert_allclose(out, predict(1.0, f0)[0][:, 0], rtol=1e-5, atol=1e-6)
    assert none is None


# --- discrete steps vs real training of the linearized network -------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("out_size", [1, 3])
def test_discrete_matches_gd_on_linearized_network(x64, getkey, out_size):
    model, x_train, x_test = _tiny_model(getkey(), out_size)
    y = jax.random.normal(getkey(), (6, out_size))
    lr, steps = 0.05, 25
    train, test, f0, f0_test = _run_linearized(model, x_train, x_test, y, optax.sgd(lr), steps)
    # a traced kernel is exact for one output; several outputs need the full kernel
    k_train, k_test = _kernels(model, x_train, x_test, trace=out_size == 1)
    assert float(jnp.max(jnp.abs(train - f0))) > 1e-2  # training did move the outputs
    predict = nte.predict.discrete_gradient_descent_mse(k_train, y, learning_rate=lr)
    p_train, p_test = predict(steps, f0, f0_test, k_test)
    np.testing.assert_allclose(p_train, train, rtol=1e-4, atol=1e-8)
    np.testing.assert_allclose(p_test, test, rtol=1e-4, atol=1e-8)


def test_discrete_matches_loop_and_tends_to_continuous(x64, getkey):
    k_train, k_test, y, f0, f0_test = _random_problem(getkey(), full=True)
    lr = 0.9 * float(nte.predict.max_learning_rate(k_train))
    f, ft = f0, f0_test
    for _ in range(7):
        f, ft = f - lr * _apply(k_train, f - y), ft - lr * _apply(k_test, f - y)
    predict = nte.predict.discrete_gradient_descent_mse(k_train, y, learning_rate=lr)
    p_train, p_test = predict(7, f0, f0_test, k_test)
    np.testing.assert_allclose(p_train, f, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(p_test, ft, rtol=1e-8, atol=1e-10)
    # tiny steps: k steps of size η ≈ gradient flow for time k
    small = nte.predict.discrete_gradient_descent_mse(k_train, y, learning_rate=1e-4)
    flow = nte.predict.gradient_descent_mse(k_train, y, learning_rate=1e-4)
    np.testing.assert_allclose(small(20000, f0)[0], flow(20000.0, f0)[0], rtol=1e-3, atol=1e-4)


def test_max_learning_rate_is_the_stability_edge(x64, getkey):
    k_train, _, y, f0, _ = _random_problem(getkey())
    lr_max = float(nte.predict.max_learning_rate(k_train))
    np.testing.assert_allclose(lr_max, 2 / np.linalg.eigvalsh(np.asarray(k_train))[-1], rtol=1e-10)
    stable = nte.predict.discrete_gradient_descent_mse(k_train, y, learning_rate=0.99 * lr_max)
    unstable = nte.predict.discrete_gradient_descent_mse(k_train, y, learning_rate=1.01 * lr_max)
    assert float(jnp.max(jnp.abs(stable(5000, f0)[0] - y))) < 1e-3
    assert float(jnp.max(jnp.abs(unstable(5000, f0)[0] - y))) > 1e3


# --- arbitrary loss by ODE solve ----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("full", [False, True])
def test_ode_with_mse_equals_closed_form(x64, getkey, full):
    k_train, k_test, y, f0, f0_test = _random_problem(getkey(), full=full)
    ts = jnp.array([2.0, 0.0, 0.5])
    ode = nte.predict.gradient_descent(_mse, k_train, y, learning_rate=0.7, rtol=1e-9, atol=1e-9)
    closed = nte.predict.gradient_descent_mse(k_train, y, learning_rate=0.7)
    (a_train, a_test), (b_train, b_test) = (
        ode(ts, f0, f0_test, k_test),
        closed(ts, f0, f0_test, k_test),
    )
    np.testing.assert_allclose(a_train, b_train, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(a_test, b_test, rtol=1e-6, atol=1e-8)


def test_ode_cross_entropy_matches_euler_loop(x64, getkey):
    k_train, k_test, _, f0, f0_test = _random_problem(getkey())
    labels = jax.nn.one_hot(jnp.array([0, 1, 2, 0, 1, 2]), 3)
    xent = lambda f, y: -jnp.sum(y * jax.nn.log_softmax(f))
    lr, steps = 1e-3, 2000

    def step(carry, _):
        f, ft = carry
        g = jax.grad(xent)(f, labels)
        return (f - lr * k_train @ g, ft - lr * k_test @ g), None

    f, ft = jax.jit(lambda c: jax.lax.scan(step, c, length=steps)[0])((f0, f0_test))
    ode = nte.predict.gradient_descent(xent, k_train, labels, learning_rate=lr)
    p_train, p_test = jax.jit(ode)(float(steps), f0, f0_test, k_test)
    np.testing.assert_allclose(p_train, f, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(p_test, ft, rtol=2e-3, atol=2e-3)


@pytest.mark.slow
def test_momentum_matches_heavy_ball_on_linearized_network(x64, getkey):
    model, x_train, x_test = _tiny_model(getkey())
    y = jax.random.normal(getkey(), (6, 3))
    lr, m, steps = 1e-4, 0.99, 300  # γ = (1 − m)/√η = 1
    optimizer = optax.sgd(lr, momentum=m)  # v ← m v + g; θ ← θ − η v (heavy ball)
    train, test, f0, f0_test = _run_linearized(model, x_train, x_test, y, optimizer, steps)
    k_train, k_test = _kernels(model, x_train, x_test)
    ode = nte.predict.gradient_descent(_mse, k_train, y, learning_rate=lr, momentum=m)
    p_train, p_test = ode(float(steps), f0, f0_test, k_test)
    moved = float(jnp.max(jnp.abs(train - f0)))
    assert moved > 0.05
    # the ODE is the η → 0 limit: O(√η) = 1e-2 relative differences remain
    assert float(jnp.max(jnp.abs(p_train - train))) < 0.03 * moved
    assert float(jnp.max(jnp.abs(p_test - test))) < 0.03 * moved
    # and it is not plain gradient descent
    plain, _ = nte.predict.gradient_descent_mse(k_train, y, learning_rate=lr)(float(steps), f0)
    assert float(jnp.max(jnp.abs(plain - train))) > 0.2 * moved


# --- bad input -----------------------------------------------------------------------------------


def test_bad_kernels_and_targets(getkey):
    k_train, k_test, y, f0, _ = _random_problem(getkey())
    for fn in (nte.predict.gradient_descent_mse, nte.predict.discrete_gradient_descent_mse):
        with pytest.raises(ValueError, match="ntk_train_train"):
            fn(k_train[:, :5], y)
        with pytest.raises(ValueError, match="ntk_train_train"):
            fn(k_train.at[0, 1].add(0.1), y)
        with pytest.raises(ValueError, match="y_train"):
            fn(k_train, y[:5])
        with pytest.raises(ValueError, match="learning_rate"):
            fn(k_train, y, learning_rate=-0.1)
        with pytest.raises(ValueError, match="diag_reg"):
            fn(k_train, y, diag_reg=-1.0)
    with pytest.raises(ValueError, match="ntk_train_train"):
        nte.predict.max_learning_rate(jnp.ones((3, 4)))
    with pytest.raises(ValueError, match="ntk_train_train"):
        nte.predict.gradient_descent(_mse, jnp.ones((3, 3, 2, 1)), y)
    with pytest.raises(ValueError, match="y_train"):  # full kernel with k = 3 outputs
        nte.predict.gradient_descent(_mse, jnp.zeros((6, 6, 3, 3)), y[:, :2])
    with pytest.raises(ValueError, match="learning_rate"):
        nte.predict.gradient_descent(_mse, k_train, y, learning_rate=-1.0)
    with pytest.raises(ValueError, match="momentum"):
        nte.predict.gradient_descent(_mse, k_train, y, momentum=1.0)
    with pytest.raises(TypeError, match="loss_fn"):
        nte.predict.gradient_descent(None, k_train, y)


def test_bad_times_and_outputs(getkey):
    k_train, k_test, y, f0, f0_test = _random_problem(getkey())
    predict = nte.predict.gradient_descent_mse(k_train, y)
    with pytest.raises(ValueError, match="`t`"):
        predict(-1.0, f0)
    with pytest.raises(ValueError, match="`t`"):
        predict(jnp.array([1.0, -2.0]), f0)
    with pytest.raises(ValueError, match="fx_train_0"):
        predict(1.0, f0[:, :2])
    with pytest.raises(ValueError, match="ntk_test_train"):
        predict(1.0, f0, f0_test)
    with pytest.raises(ValueError, match="ntk_test_train"):
        predict(1.0, f0, f0_test, k_test[:, :5])
    with pytest.raises(ValueError, match="fx_test_0"):
        predict(1.0, f0, f0_test[:3], k_test)
    discrete = nte.predict.discrete_gradient_descent_mse(k_train, y)
    with pytest.raises(ValueError, match="`k`"):
        discrete(2.5, f0)
    ode = nte.predict.gradient_descent(_mse, k_train, y)
    with pytest.raises(ValueError, match="`t`"):
        ode(jnp.inf, f0)
    with pytest.raises(ValueError, match="`t`"):
        ode(-0.5, f0)


def test_singular_kernel_warns_and_stays_finite(getkey):
    feats = jax.random.normal(getkey(), (6, 2))
    singular = feats @ feats.T  # rank 2
    y = jax.random.normal(getkey(), (6, 2))
    with pytest.warns(UserWarning, match="diag_reg"):
        predict = nte.predict.gradient_descent_mse(singular.at[0, 0].add(-1.0), y)
    with pytest.warns(UserWarning, match="smallest eigenvalue"):
        predict = nte.predict.gradient_descent_mse(singular - 1e-3 * jnp.eye(6), y)
    train, test = predict(jnp.inf, jnp.zeros((6, 2)), None, singular[:3])
    assert bool(jnp.all(jnp.isfinite(train))) and bool(jnp.all(jnp.isfinite(test)))
