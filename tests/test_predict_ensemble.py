"""`nte.predict.gradient_descent_mse_ensemble` against explicit solves and the single predictor."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nte

N, M, K = 12, 5, 3


@pytest.fixture
def problem(x64):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N + M, 2, 3))
    y = rng.normal(size=(N, K))
    model = nte.nn.MLP(6, 1, 2, K, parameterization="ntk", bias_std=0.3, key=jax.random.key(0))
    return model, x[:N], y, x[N:]


def _kernels(model, a, b):
    return np.asarray(nte.kernels.nngp(model, a, b)), np.asarray(nte.kernels.ntk(model, a, b))


def test_t_inf_is_kernel_regression_and_gp_posterior(problem):
    model, x, y, xt = problem
    predict = nte.predict.gradient_descent_mse_ensemble(model, x, y)
    k_dd, t_dd = _kernels(model, x, x)
    k_td, t_td = _kernels(model, xt, x)
    k_tt, _ = _kernels(model, xt, xt)
    out = predict(x_test=xt, get=("nngp", "ntk"), compute_cov=True)
    # NNGP: the exact GP posterior
    mean, cov = out["nngp"]
    np.testing.assert_allclose(mean, k_td @ np.linalg.solve(k_dd, y), rtol=1e-8, atol=1e-10)
    gp_cov = k_tt - k_td @ np.linalg.solve(k_dd, k_td.T)
    np.testing.assert_allclose(cov, gp_cov, rtol=1e-6, atol=1e-9)
    # NTK: kernel regression with Θ; covariance of Lee et al. eq. 16 at t = ∞
    mean, cov = out["ntk"]
    a = t_td @ np.linalg.inv(t_dd)
    np.testing.assert_allclose(mean, a @ y, rtol=1e-8, atol=1e-10)
    ref = k_tt + a @ k_dd @ a.T - a @ k_td.T - k_td @ a.T
    np.testing.assert_allclose(cov, ref, rtol=1e-6, atol=1e-9)
    assert np.linalg.eigvalsh(cov).min() >= -1e-8 * np.abs(cov).max()
    # defaults: t=None is ∞, x_test=None is the training set (interpolated at t = ∞)
    np.testing.assert_allclose(predict(), y, rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(predict(jnp.inf, xt, "ntk"), a @ y, rtol=1e-8, atol=1e-10)


def _linear_map(model, x, xt, t, lr):
    """The map (f0_train, f0_test, y) -> f_t(test) of one linearized network, as a matrix,
    built column by column from the single-network `nte.predict.gradient_descent_mse`."""
    t_dd, t_td = nte.kernels.ntk(model, x), nte.kernels.ntk(model, xt, x)
    cols = []
    for i in range(N + M + N):
        e = np.zeros(N + M + N)
        e[i] = 1.0
        f0, f0t, y = e[:N], e[N : N + M], e[N + M :]
        flow = nte.predict.gradient_descent_mse(t_dd, jnp.asarray(y), learning_rate=lr)
        cols.append(np.asarray(flow(t, jnp.asarray(f0), jnp.asarray(f0t), t_td)[1]))
    return np.stack(cols, 1)  # [M, N + M + N]


@pytest.mark.parametrize("t", [0.0, 0.7, 5.0])
def test_finite_t_matches_linearized_networks(problem, t):
    """Mean and covariance of f_t = map(f0, y) with f0 ~ GP(0, K): exact moments of the
    single-network predictor over initializations."""
    model, x, y, xt = problem
    lr = 0.3
    predict = nte.predict.gradient_descent_mse_ensemble(model, x, y, learning_rate=lr)
    mean, cov = predict(t, xt, "ntk", compute_cov=True)
    big = _linear_map(model, x, xt, t, lr)
    both = np.concatenate([x, xt])
    k_joint = np.asarray(nte.kernels.nngp(model, both))
    a0 = big[:, : N + M]  # acts on (f0_train, f0_test)
    np.testing.assert_allclose(mean, big[:, N + M :] @ y, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(cov, a0 @ k_joint @ a0.T, rtol=1e-6, atol=1e-9)


def test_finite_t_nngp_and_limit(problem):
    model, x, y, xt = problem
    predict = nte.predict.gradient_descent_mse_ensemble(model, x, y, learning_rate=0.5)
    k_dd, _ = _kernels(model, x, x)
    k_td, _ = _kernels(model, xt, x)
    k_tt, _ = _kernels(model, xt, xt)
    lam, v = np.linalg.eigh(k_dd)
    t = 3.0
    e_t = v @ np.diag(-np.expm1(-0.5 * lam * t)) @ v.T  # I − e^{−ηKt}
    e_2t = v @ np.diag(-np.expm1(-1.0 * lam * t)) @ v.T  # I − e^{−2ηKt}
    mean, cov = predict(t, xt, "nngp", compute_cov=True)
    np.testing.assert_allclose(mean, k_td @ np.linalg.solve(k_dd, e_t @ y), rtol=1e-7, atol=1e-9)
    ref = k_tt - k_td @ np.linalg.solve(k_dd, e_2t @ k_td.T)
    np.testing.assert_allclose(cov, ref, rtol=1e-6, atol=1e-9)
    # t -> ∞: finite times approach the t = ∞ formula; an array of times is stacked in front
    for get in ("nngp", "ntk"):
        lam_min = np.linalg.eigvalsh(_kernels(model, x, x)[get == "ntk"])[0]
        times = jnp.array([1.0, 10.0, 100.0]) / (0.5 * lam_min)  # e^{−ηλt} ≥ e^{−1}, e^{−10}, ...
        means, covs = predict(times, xt, get, compute_cov=True)
        assert means.shape == (3, M, K) and covs.shape == (3, M, M)
        inf_mean, inf_cov = predict(None, xt, get, compute_cov=True)
        errors = [np.abs(m - inf_mean).max() for m in means]
        assert errors[0] > 10 * errors[1] > 100 * errors[2]
        np.testing.assert_allclose(means[-1], inf_mean, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(covs[-1], inf_cov, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(predict(0.0, xt, "ntk"), 0.0, atol=1e-12)  # f_0 = 0 in mean


def test_kernel_fn_callable_and_diag_reg(problem):
    model, x, y, xt = problem
    calls = []

    def kernel_fn(a, b, get):
        calls.append(get)
        return getattr(nte.kernels, get)(model, a, b)

    predict = nte.predict.gradient_descent_mse_ensemble(kernel_fn, x, y[:, 0], diag_reg=0.1)
    mean, cov = predict(x_test=xt, get="nngp", compute_cov=True)
    k_dd, _ = _kernels(model, x, x)
    k_td, _ = _kernels(model, xt, x)
    k_tt, _ = _kernels(model, xt, xt)
    reg = k_dd + 0.1 * np.eye(N)  # the GP posterior with noise variance diag_reg
    np.testing.assert_allclose(mean, k_td @ np.linalg.solve(reg, y[:, 0]), rtol=1e-8)
    np.testing.assert_allclose(cov, k_tt - k_td @ np.linalg.solve(reg, k_td.T), rtol=1e-6)
    n_calls = len(calls)
    predict(x_test=xt, get="nngp")  # the train kernel and its eigh are cached
    assert len(calls) == n_calls + 1  # only the test-train kernel


def test_bad_input(problem):
    model, x, y, xt = problem
    with pytest.raises(ValueError, match="y_train"):
        nte.predict.gradient_descent_mse_ensemble(model, x, y[:-1])
    with pytest.raises(ValueError, match="learning_rate"):
        nte.predict.gradient_descent_mse_ensemble(model, x, y, learning_rate=0.0)
    with pytest.raises(TypeError, match="kernel_fn"):
        nte.predict.gradient_descent_mse_ensemble(3, x, y)
    tanh = nte.nn.MLP(6, 1, 1, K, activation=jnp.tanh, key=jax.random.key(0))
    with pytest.raises(ValueError, match="`kernel_fn`: `model` has activation 'tanh'"):
        nte.predict.gradient_descent_mse_ensemble(tanh, x, y)
    standard = nte.nn.MLP(6, 1, 1, K, key=jax.random.key(0))
    predict = nte.predict.gradient_descent_mse_ensemble(standard, x, y)
    predict(get="nngp")  # the NNGP is defined for the standard parameterization
    with pytest.raises(ValueError, match="parameterization='standard'"):
        predict(get="ntk")
    predict = nte.predict.gradient_descent_mse_ensemble(model, x, y)
    with pytest.raises(ValueError, match="get"):
        predict(get="gp")
    with pytest.raises(ValueError, match="`t`"):
        predict(-1.0)
    bad = nte.predict.gradient_descent_mse_ensemble(lambda a, b, g: jnp.ones((2, 2)), x, y)
    with pytest.raises(ValueError, match="per-output kernel of shape"):
        bad()
