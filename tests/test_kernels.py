"""`nte.kernels`: closed forms vs numerical integration, the recursion vs wide networks."""

import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, special

import nte
from nte.kernels import _dual, _mlp

ACTS = ["relu", "leaky_relu", "erf", "abs", "identity"]
NUMPY_PHI = {  # (φ, φ') in numpy, written independently of the closed forms
    "relu": (lambda u: np.maximum(u, 0), lambda u: (u > 0).astype(float)),
    "leaky_relu": (lambda u: np.where(u > 0, u, 0.2 * u), lambda u: np.where(u > 0, 1.0, 0.2)),
    "erf": (special.erf, lambda u: 2 / np.sqrt(np.pi) * np.exp(-(u**2))),
    "abs": (np.abs, np.sign),
    "identity": (lambda u: u, np.ones_like),
}
ACTIVATION = {name: _dual.Activation(name, 0.2 if name == "leaky_relu" else 0.0) for name in ACTS}
COVS = [(1.0, 1.0, 0.3), (0.7, 2.5, -0.9), (2.0, 0.5, 0.999), (1.3, 1.3, 1.3), (0.4, 3.0, 0.0)]


@functools.cache
def _nodes(n):
    z, w = np.polynomial.hermite_e.hermegauss(n)
    return z, w / np.sqrt(2 * np.pi)


def _gauss_hermite(g, a, b, c, n=250):
    """E[g(u, v)] for (u, v) ~ N(0, [[a, c], [c, b]]): 2-D Gauss–Hermite (probabilists')."""
    z, w = _nodes(n)
    rho = np.clip(c / np.sqrt(a * b), -1, 1)
    z1, z2 = np.meshgrid(z, z, indexing="ij")
    u = np.sqrt(a) * z1
    v = np.sqrt(b) * (rho * z1 + np.sqrt(1 - rho**2) * z2)
    return float(np.sum(np.outer(w, w) * g(u, v)))


def _polar(g, a, b, c, degree):
    """E[g(u, v)] for a positively homogeneous g of `degree` (0 or 2) in polar coordinates.

    `E = (1/2π) ∫ g(ω) dω · E[r^degree]` with `E[r²] = 2`; the angular integral is done by
    adaptive quadrature split at the kinks (where u or v changes sign), to ~1e-12.
    """
    rho = np.clip(c / np.sqrt(a * b), -1, 1)
    s = np.sqrt(max(1 - rho**2, 0.0))
    uv = lambda om: (np.sqrt(a) * np.cos(om), np.sqrt(b) * (rho * np.cos(om) + s * np.sin(om)))
    zero_v = np.arctan2(-rho, s) % np.pi
    kinks = [p for p in (np.pi / 2, 3 * np.pi / 2, zero_v, zero_v + np.pi) if 0 < p < 2 * np.pi]
    f = lambda om: g(*uv(om))
    value, _ = integrate.quad(f, 0, 2 * np.pi, points=sorted(kinks), epsabs=1e-13, limit=200)
    return value / (2 * np.pi) * (2.0 if degree == 2 else 1.0)


def _expectations(name, a, b, c):
    phi, dphi = NUMPY_PHI[name]
    if name in ("erf", "identity"):  # smooth: Gauss–Hermite converges exponentially
        t = _gauss_hermite(lambda u, v: phi(u) * phi(v), a, b, c)
        tdot = _gauss_hermite(lambda u, v: dphi(u) * dphi(v), a, b, c)
    else:  # kinks: Gauss–Hermite converges only algebraically; integrate exactly in angle
        t = _polar(lambda u, v: phi(u) * phi(v), a, b, c, degree=2)
        tdot = _polar(lambda u, v: dphi(u) * dphi(v), a, b, c, degree=0)
    return t, tdot


@pytest.mark.parametrize("name", ACTS)
@pytest.mark.parametrize("cov", COVS)
def test_dual_matches_numerical_integration(x64, name, cov):
    a, b, c = cov
    c = min(c, math.sqrt(a * b))
    t, tdot = _dual.dual(ACTIVATION[name], jnp.float64(a), jnp.float64(b), jnp.float64(c))
    t_ref, tdot_ref = _expectations(name, a, b, c)
    np.testing.assert_allclose(float(t), t_ref, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(float(tdot), tdot_ref, rtol=1e-9, atol=1e-10)


def test_recognise_callables():
    assert _dual.recognise(jax.nn.relu) == _dual.Activation("relu")
    assert _dual.recognise(jax.lax.erf).name == "erf"
    leaky = functools.partial(jax.nn.leaky_relu, negative_slope=0.3)
    assert _dual.recognise(leaky) == _dual.Activation("leaky_relu", 0.3)
    assert _dual.recognise(jax.nn.leaky_relu) == _dual.Activation("leaky_relu", 0.01)
    assert _dual.recognise(jnp.tanh) is None


# ---------------------------------------------------------------------------------------------
# The layer recursion.


def _model(act="relu", depth=2, width=8, out=1, **kw):
    kw.setdefault("parameterization", "ntk")
    return nte.nn.MLP(6, width, depth, out, activation=act, key=jax.random.key(0), **kw)


def _diagonal_chain(name, gains, x, bias_var):
    q = [gains[0] ** 2 * (x @ x) / len(x) + bias_var]
    for gain in gains[1:-1]:
        q.append(gain**2 * _expectations(name, q[-1], q[-1], q[-1])[0] + bias_var)
    return q


def _reference(name, depth, x1, x2, bias_var, bias_grad):
    """NNGP and NTK by the recursion with every expectation done by numerical integration."""
    gains = [math.sqrt(2.0)] * depth + [1.0]
    q1 = [_diagonal_chain(name, gains, xa, bias_var) for xa in x1]
    q2 = [_diagonal_chain(name, gains, xb, bias_var) for xb in x2]
    k_out, t_out = np.zeros((len(x1), len(x2))), np.zeros((len(x1), len(x2)))
    for i, xa in enumerate(x1):
        for j, xb in enumerate(x2):
            lin = gains[0] ** 2 * (xa @ xb) / len(xa)
            k, theta = lin + bias_var, lin + bias_grad
            for layer, gain in enumerate(gains[1:]):
                t, tdot = _expectations(name, q1[i][layer], q2[j][layer], k)
                theta = gain**2 * (t + tdot * theta) + bias_grad
                k = gain**2 * t + bias_var
            k_out[i, j], t_out[i, j] = k, theta
    return k_out, t_out


@pytest.mark.parametrize("name", ACTS)
def test_kernels_match_integrated_recursion(x64, name):
    act = functools.partial(jax.nn.leaky_relu, negative_slope=0.2) if name == "leaky_relu" else name
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=(2, 6)), rng.normal(size=(2, 6))
    model = _model(act, depth=2, bias_std=0.4)
    k_ref, t_ref = _reference(name, 2, x1, x2, bias_var=0.16, bias_grad=0.16)
    np.testing.assert_allclose(nte.kernels.nngp(model, x1, x2), k_ref, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(nte.kernels.ntk(model, x1, x2), t_ref, rtol=1e-8, atol=1e-10)


def test_linear_network_closed_form(x64):
    """Identity activation, no bias, gains (√2, √2, 1): K = 4⟨x,x'⟩/d and Θ = 12⟨x,x'⟩/d."""
    x = np.random.default_rng(1).normal(size=(5, 6))
    model = _model("identity", depth=2, use_bias=False)
    np.testing.assert_allclose(nte.kernels.nngp(model, x), 4 * x @ x.T / 6, rtol=1e-13)
    np.testing.assert_allclose(nte.kernels.ntk(model, x), 12 * x @ x.T / 6, rtol=1e-13)


def test_relu_diagonal_exact(x64):
    """Depth 1, no bias: K(x, x) = σ_w,2² · σ_w,1² |x|²/d / 2 = |x|²/d exactly."""
    x = np.random.default_rng(2).normal(size=(4, 6))
    model = _model("relu", depth=1, use_bias=False)
    k = nte.kernels.nngp(model, x)
    np.testing.assert_allclose(np.diag(k), np.sum(x * x, 1) / 6, rtol=1e-14)
    # Θ = K² + Ṫ Θ¹ = |x|²/d + ½ · 2|x|²/d on the diagonal
    np.testing.assert_allclose(np.diag(nte.kernels.ntk(model, x)), 2 * np.sum(x * x, 1) / 6)


@pytest.mark.parametrize("name", ACTS)
@pytest.mark.parametrize("kind", ["nngp", "ntk"])
def test_psd_and_symmetric(x64, name, kind):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(12, 6))
    x[5] = x[2]  # a duplicate row: a singular but PSD kernel
    x[7] = 1e-3 * x[1]
    k = np.asarray(getattr(nte.kernels, kind)(_model(name, depth=3), x))
    np.testing.assert_allclose(k, k.T, rtol=1e-12, atol=0)
    eig = np.linalg.eigvalsh(k)
    assert eig[0] >= -1e-10 * eig[-1]


def test_nngp_same_for_both_parameterizations(x64):
    x = np.random.default_rng(4).normal(size=(4, 6))
    ntk_param = nte.kernels.nngp(_model("erf", bias_std=0.2), x)
    standard = nte.kernels.nngp(_model("erf", bias_std=0.2, parameterization="standard"), x)
    np.testing.assert_allclose(ntk_param, standard, rtol=1e-14)


def test_tiling_and_jit(monkeypatch):
    rng = np.random.default_rng(5)
    x1, x2 = rng.normal(size=(7, 2, 3)).astype(np.float32), rng.normal(size=(5, 6))
    model = _model("relu", depth=2)
    rows = np.concatenate([nte.kernels.ntk(model, x1[i : i + 1], x2) for i in range(7)])
    assert _mlp._block_size(10_000, 10_000) == 200  # a divisor of n1 near 2**21 / n2
    monkeypatch.setattr(_mlp, "_BLOCK_ENTRIES", 15)  # blocks of 3 rows and a remainder of 1
    assert _mlp._block_size(7, 5) == 3
    tiled = nte.kernels.ntk(model, x1, x2)
    np.testing.assert_allclose(tiled, rows, rtol=1e-6)
    flat = nte.kernels.ntk(model, x1.reshape(7, 6), x2)  # images are flattened as the MLP does
    np.testing.assert_allclose(flat, tiled, rtol=1e-6)
    jitted = eqx.filter_jit(nte.kernels.ntk)(model, jnp.asarray(x1), jnp.asarray(x2))
    np.testing.assert_allclose(jitted, tiled, rtol=1e-6)
    under_jit = jax.jit(lambda a: nte.kernels.nngp(model, a))(jnp.asarray(x2))
    np.testing.assert_allclose(under_jit, nte.kernels.nngp(model, x2), rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Wide networks reach the limit (Monte Carlo over initializations, within standard errors).


def _assert_within_stderr(mean, stderr, expected, *, bias_rtol):
    """Every entry within 6 standard errors (+ a small allowance for the O(1/n) mean bias),
    and the standardized errors of RMS size (≲ 2; ≈ 1 when only noise remains)."""
    mean, stderr, expected = map(np.asarray, (mean, stderr, expected))
    allowance = bias_rtol * np.abs(expected).max()
    z = np.abs(mean - expected) / (stderr + allowance)
    assert z.max() < 6, z.max()
    assert np.sqrt(np.mean(z**2)) < 2.5, np.sqrt(np.mean(z**2))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["relu", "erf", "abs"])
def test_empirical_ntk_converges_to_ntk(x64, name):
    x = np.random.default_rng(6).normal(size=(4, 6))
    make = lambda k: nte.nn.MLP(
        6, 1024, 2, 2, activation=name, parameterization="ntk", bias_std=0.5, key=k
    )
    mean, se = nte.kernels.monte_carlo(
        nte.empirical_ntk, make, x, n_samples=8, key=jax.random.key(1), stderr=True
    )
    expected = nte.kernels.ntk(make(jax.random.key(0)), x)
    _assert_within_stderr(mean / 2, se / 2, expected, bias_rtol=0.005)
    assert np.linalg.norm(mean / 2 - expected) < 0.05 * np.linalg.norm(expected)


@pytest.mark.slow
@pytest.mark.parametrize("parameterization", ["standard", "ntk"])
def test_empirical_nngp_converges_to_nngp(x64, parameterization):
    x = np.random.default_rng(7).normal(size=(4, 2, 3))
    make = lambda k: nte.nn.MLP(
        6, 512, 2, 128, activation="leaky_relu", parameterization=parameterization,
        bias_std=0.5, key=k,
    )  # fmt: skip
    mean, se = nte.kernels.monte_carlo(
        nte.empirical_nngp, make, x, n_samples=8, key=jax.random.key(2), stderr=True
    )
    expected = nte.kernels.nngp(make(jax.random.key(0)), x)
    _assert_within_stderr(mean / 128, se / 128, expected, bias_rtol=0.005)


def test_zero_bias_ntk_keeps_bias_gradient(x64):
    """zero_bias: no bias in K (the init), but σ_b² per layer in Θ (the gradient)."""
    x = np.random.default_rng(8).normal(size=(3, 6))
    make = lambda k: nte.nn.MLP(
        6, 1024, 1, 1, parameterization="ntk", zero_bias=True, bias_std=1.0, key=k
    )
    model = make(jax.random.key(0))
    mean, se = nte.kernels.monte_carlo(
        nte.empirical_ntk, make, x, n_samples=8, key=jax.random.key(3), stderr=True
    )
    _assert_within_stderr(mean, se, nte.kernels.ntk(model, x), bias_rtol=0.005)
    no_bias = nte.kernels.nngp(_model("relu", depth=1, use_bias=False), x)
    np.testing.assert_allclose(nte.kernels.nngp(model, x), no_bias, rtol=1e-14)


# ---------------------------------------------------------------------------------------------
# Bad input: one clear error naming the argument.


def test_bad_model_and_activation():
    x = np.ones((2, 6))
    with pytest.raises(TypeError, match="`model` must be an nte.nn.MLP"):
        nte.kernels.nngp(eqx.nn.Linear(6, 1, key=jax.random.key(0)), x)
    tanh = nte.nn.MLP(6, 4, 1, 1, activation=jnp.tanh, key=jax.random.key(0))
    with pytest.raises(ValueError, match="`model` has activation 'tanh'"):
        nte.kernels.nngp(tanh, x)
    with pytest.raises(ValueError, match="parameterization='standard'"):
        nte.kernels.ntk(_model(parameterization="standard"), x)


def test_bad_inputs():
    model = _model()
    with pytest.raises(ValueError, match="`x1` has examples of shape"):
        nte.kernels.nngp(model, np.ones((2, 5)))
    with pytest.raises(ValueError, match="`x2` has examples of shape .* but `x1` has 6"):
        nte.kernels.ntk(model, np.ones((2, 6)), np.ones((3, 4)))
    with pytest.raises(ValueError, match="`x1` must be an array"):
        nte.kernels.nngp(model, np.ones((0, 6)))
