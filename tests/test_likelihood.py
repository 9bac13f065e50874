"""Tests of nte/likelihood/: expert log-likelihoods and their methods (property 11: the
memory-saving methods equal the per-example computation)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import pytest

import nte
from nte.likelihood import (
    Auto,
    Chunked,
    Series,
    Sharded,
    Vmap,
    _kernels as kernels,
    _series as series,
)

NAMES = ["vmap", "chunked", "series", "auto"]


def _method(name, chunk_size=None):
    """The method object of a name, with `chunk_size` where the method has one."""
    if name == "vmap":
        return Vmap()
    return {"chunked": Chunked, "series": Series, "auto": Auto}[name](chunk_size=chunk_size)


def _loss(model, x, y):
    return -jax.nn.log_softmax(model(x))[y]


class _Scaled(eqx.Module):
    """A model with a non-Linear parameter (`gain`) and a Linear layer: exercises the fallback."""

    gain: jax.Array
    mlp: nte.nn.MLP

    def __call__(self, x):
        return self.mlp(self.gain * x)


def _reference(model, x, y, signs, beta, eta, loss=_loss):
    """Python loop over examples in NumPy float64 (no invalid experts in these tests)."""
    params, static = nte.split(model)
    total = None
    for b in range(x.shape[0]):
        g = jax.grad(lambda p, b=b: loss(nte.merge(p, static), x[b], y[b]))(params)
        term = jtu.tree_map(
            lambda gi, s: eta * np.log1p(-beta * np.asarray(s, np.float64) * np.asarray(gi)),
            g,
            signs,
        )
        total = term if total is None else jtu.tree_map(np.add, total, term)
    return total


def _assert_close(a, b, rtol):
    for u, v in zip(jtu.tree_leaves(a), jtu.tree_leaves(b)):
        scale = float(np.max(np.abs(np.asarray(v))))
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=rtol, atol=rtol * scale)


@pytest.mark.slow
@pytest.mark.parametrize("parameterization", ["standard", "ntk"])
def test_methods_agree_float32(getkey, parameterization):  # §6.11
    model = nte.nn.MLP(6, 8, 2, 4, parameterization=parameterization, key=getkey())
    x, y = jax.random.normal(getkey(), (11, 6)), jnp.arange(11) % 4
    signs = nte.sign_mask(nte.split(model)[0])
    ref = _reference(model, x, y, signs, 0.05, 1.5)
    for name in NAMES:
        out = nte.expert_log_likelihoods(
            _loss,
            model,
            x,
            y,
            signs=signs,
            inv_temperature=0.05,
            eta=1.5,
            method=_method(name, 4),  # 11 = 4 + 4 + 3: padded, masked chunk
        )
        assert int(out.num_invalid) == 0
        _assert_close(out.log_likelihoods, ref, 1e-5)


@pytest.mark.slow
def test_methods_agree_float64_with_fallback_leaf(getkey, x64):
    mlp = nte.nn.MLP(5, 7, 1, 3, key=getkey())
    model = _Scaled(jnp.linspace(0.5, 1.5, 5), mlp)
    x, y = jax.random.normal(getkey(), (6, 5)), jnp.arange(6) % 3
    signs = nte.sign_mask(nte.split(model)[0])
    ref = _reference(model, x, y, signs, 0.1, 1.0)
    for name in NAMES:
        out = nte.expert_log_likelihoods(
            _loss, model, x, y, signs=signs, inv_temperature=0.1, method=_method(name, 4)
        )
        assert out.log_likelihoods.gain.dtype == jnp.float64
        _assert_close(out.log_likelihoods, ref, 1e-10)


@pytest.mark.slow
def test_series_fixed_terms_truncation(getkey, x64):
    """With M terms the error is the series remainder: tiny for small |βsg|, visible for few
    terms with larger |βsg|."""
    model = nte.nn.MLP(5, 7, 1, 3, use_bias=False, key=getkey())
    x, y = jax.random.normal(getkey(), (6, 5)), jnp.arange(6) % 3
    signs = nte.sign_mask(nte.split(model)[0])
    beta = 0.3
    ref = _reference(model, x, y, signs, beta, 1.0)
    errs = []
    for terms in [1, 2, 4, 8]:
        out = nte.expert_log_likelihoods(
            _loss,
            model,
            x,
            y,
            signs=signs,
            inv_temperature=beta,
            method=Series(terms=terms),
        )
        errs.append(
            max(
                float(np.max(np.abs(a - b)))
                for a, b in zip(jtu.tree_leaves(out.log_likelihoods), jtu.tree_leaves(ref))
            )
        )
    assert errs[0] > errs[1] > errs[2] > errs[3], errs


@pytest.mark.slow
def test_series_falls_back_where_it_diverges(getkey):
    """β large enough that U ≥ 1 (and some experts invalid): series = chunked = vmap."""
    model = nte.nn.MLP(4, 6, 1, 3, key=getkey())
    x, y = 3 * jax.random.normal(getkey(), (5, 4)), jnp.arange(5) % 3
    signs = nte.sign_mask(nte.split(model)[0])
    outs = {
        m: nte.expert_log_likelihoods(
            _loss, model, x, y, signs=signs, inv_temperature=20.0, method=_method(m, 2)
        )
        for m in NAMES
    }
    assert int(outs["vmap"].num_invalid) > 0
    assert float(outs["vmap"].inv_temperature) < 20.0  # capped
    for m in ["chunked", "series", "auto"]:
        assert int(outs[m].num_invalid) == int(outs["vmap"].num_invalid)
        np.testing.assert_allclose(outs[m].inv_temperature, outs["vmap"].inv_temperature, 1e-6)
        _assert_close(outs[m].log_likelihoods, outs["vmap"].log_likelihoods, 1e-5)
        leaves = jtu.tree_leaves(outs[m].log_likelihoods)
        assert all(bool(jnp.all(jnp.isfinite(v))) for v in leaves)


@pytest.mark.parametrize("method", ["vmap", "chunked", "series"])
def test_invalid_policies(getkey, method):
    model = nte.nn.MLP(4, 6, 1, 3, key=getkey())
    x, y = 3 * jax.random.normal(getkey(), (5, 4)), jnp.arange(5) % 3
    signs = nte.sign_mask(nte.split(model)[0])
    kw = dict(signs=signs, inv_temperature=20.0, method=_method(method, 2))
    floor = nte.expert_log_likelihoods(_loss, model, x, y, invalid="floor", **kw)
    assert int(floor.num_invalid) > 0 and float(floor.inv_temperature) == 20.0
    leaves = jtu.tree_leaves(floor.log_likelihoods)
    assert all(bool(jnp.all(jnp.isfinite(v))) for v in leaves)
    with pytest.raises(Exception, match="inv_temperature"):
        jax.block_until_ready(nte.expert_log_likelihoods(_loss, model, x, y, invalid="raise", **kw))


@pytest.mark.slow
def test_pruned_expert_gives_minus_inf():
    """A linear model where β s g = 1 exactly for one weight."""
    lin = eqx.nn.Linear(2, 1, use_bias=False, key=jax.random.key(0))
    lin = eqx.tree_at(lambda m: m.weight, lin, jnp.array([[1.0, -1.0]]))
    loss = lambda m, x, y: m(x)[0]  # gradient = x
    x = jnp.array([[2.0, 0.5], [0.1, 0.2]])
    signs = nte.sign_mask(nte.split(lin)[0])
    for method in NAMES:
        out = nte.expert_log_likelihoods(
            loss, lin, x, jnp.zeros(2), signs=signs, inv_temperature=0.5, method=method
        )
        w = out.log_likelihoods.weight
        assert w[0, 0] == -jnp.inf and bool(jnp.isfinite(w[0, 1])), method
        np.testing.assert_allclose(w[0, 1], np.log(1.25) + np.log(1.1), rtol=1e-6)


def test_no_recompilation_under_jit(getkey):
    model = nte.nn.MLP(4, 6, 1, 3, key=getkey())
    signs = nte.sign_mask(nte.split(model)[0])

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def f(model, x, y, beta):
        return nte.expert_log_likelihoods(
            _loss, model, x, y, signs=signs, inv_temperature=beta, method="auto"
        )

    for _ in range(3):
        x, y = jax.random.normal(getkey(), (5, 4)), jnp.arange(5) % 3
        out = f(model, x, y, jnp.asarray(0.01))
        assert all(v.dtype == jnp.float32 for v in jtu.tree_leaves(out.log_likelihoods))


def test_bad_input(getkey):
    model = nte.nn.MLP(4, 6, 1, 3, key=getkey())
    x, y = jnp.ones((3, 4)), jnp.zeros(3, int)
    signs = nte.sign_mask(nte.split(model)[0])
    kw = dict(signs=signs, inv_temperature=0.1)
    with pytest.raises(ValueError, match="method"):
        nte.expert_log_likelihoods(_loss, model, x, y, method="magic", **kw)
    with pytest.raises(ValueError, match="invalid"):
        nte.expert_log_likelihoods(_loss, model, x, y, invalid="ignore", **kw)
    with pytest.raises(ValueError, match="inv_temperature"):
        nte.expert_log_likelihoods(_loss, model, x, y, signs=signs, inv_temperature=0.0)
    with pytest.raises(ValueError, match="eta"):
        nte.expert_log_likelihoods(_loss, model, x, y, eta=-1.0, **kw)
    with pytest.raises(TypeError, match="method"):
        nte.expert_log_likelihoods(_loss, model, x, y, method=Chunked, **kw)  # the class
    with pytest.raises(TypeError, match="method"):
        nte.expert_log_likelihoods(_loss, model, x, y, method=3, **kw)
    with pytest.raises(TypeError, match=r"Chunked\(chunk_size=\.\.\.\)"):
        nte.expert_log_likelihoods(_loss, model, x, y, chunk_size=4, **kw)
    with pytest.raises(TypeError, match=r"Series\(terms=\.\.\.\)"):
        nte.expert_log_likelihoods(_loss, model, x, y, series_terms=4, **kw)
    with pytest.raises(TypeError, match="unexpected keyword `beta`"):
        nte.expert_log_likelihoods(_loss, model, x, y, beta=0.1, **kw)
    with pytest.raises(ValueError, match="signs"):
        nte.expert_log_likelihoods(_loss, model, x, y, signs={"a": 1}, inv_temperature=0.1)
    with pytest.raises(ValueError, match="batch size"):
        nte.expert_log_likelihoods(_loss, model, x, y[:2], **kw)


def _loop_log1m(D, A, s, beta):
    """Σ_b log(1 − β s δ_b a_bᵀ) in NumPy float64, one example at a time (no invalid u)."""
    D, A, s = (np.asarray(v, np.float64) for v in (D, A, s))
    return sum(np.log1p(-beta * s * np.outer(d, a)) for d, a in zip(D, A))


def test_exact_sum_mixes_product_and_per_factor_groups():
    """Groups of 16 examples: small ones take one log of the product, large ones every log;
    both agree with a float64 loop to a few ε·Σ_b|u_b|."""
    rng = np.random.default_rng(0)
    n, out, inp = 45, 7, 5  # 3 groups, the last one padded
    scale = np.where(np.arange(n) < 16, 1e-3, 0.1)[:, None]  # group 0 small, groups 1-2 large
    D = (rng.standard_normal((n, out)) * scale).astype(np.float32)
    A = rng.uniform(-1, 1, (n, inp)).astype(np.float32)
    s = rng.integers(-1, 2, (out, inp)).astype(np.int8)  # including dead experts (s = 0)
    beta = 1.5
    U = beta * np.abs(D).max(1) * np.abs(A).max(1)
    assert U[:16].max() * 16 <= 0.25 < U[16:32].max() * 16  # both kinds of group occur
    sums, max_u, bad = kernels.exact_sum(jnp.asarray(D), jnp.asarray(A), jnp.asarray(s), beta)
    ref = _loop_log1m(D, A, s, beta)
    scale_u = sum(np.abs(beta * s * np.outer(d, a)) for d, a in zip(D, A))
    np.testing.assert_array_less(np.abs(np.asarray(sums) - ref), 64 * 1.2e-7 * scale_u + 1e-12)
    assert np.all(np.asarray(sums)[s == 0] == 0)
    assert not np.asarray(bad).any()
    true_max = max(float(np.max(beta * s * np.outer(d, a))) for d, a in zip(D, A))
    assert true_max <= float(max_u) <= max(true_max, U[:16].max()) + 1e-7


def test_exact_max_and_series_sum_against_loops():
    rng = np.random.default_rng(1)
    D = rng.standard_normal((20, 6)).astype(np.float32)
    A = rng.standard_normal((20, 4)).astype(np.float32)
    s = rng.integers(-1, 2, (6, 4)).astype(np.int8)
    beta = 0.8  # some u > 1: invalid experts
    u = [beta * s * np.outer(d, a) for d, a in zip(D, A)]
    max_u, num_bad = kernels.exact_max(jnp.asarray(D), jnp.asarray(A), jnp.asarray(s), beta)
    np.testing.assert_allclose(float(max_u), max(float(v.max()) for v in u), rtol=1e-6)
    assert int(num_bad) == int(np.sum(np.any(np.stack(u) > 1, axis=0))) > 0
    # the series (odd and even orders stacked) at a small β, fixed and adaptive orders
    beta = 0.01
    U = kernels.layer_bound(beta, jnp.asarray(D), jnp.asarray(A))
    ref = _loop_log1m(D, A, s, beta)
    sum_u = sum(np.abs(beta * s * np.outer(d, a)) for d, a in zip(D, A))
    u_max, eps = float(U), 1.2e-7
    adaptive = series.series_order(U, jnp.float32)  # traced count: the switch over orders
    assert 1 <= int(adaptive) <= 8
    for terms in (adaptive, 3, 11):  # 11: more than one block of orders
        out = series.series_sum(jnp.asarray(D), jnp.asarray(A), jnp.asarray(s), beta, terms)
        # the truncation bound U^M/((M+1)(1-U)) (at most ε when adaptive) plus rounding
        m = int(terms)
        trunc = u_max**m / ((m + 1) * (1 - u_max))
        assert terms is not adaptive or trunc <= eps
        err = np.abs(np.asarray(out) - ref)
        np.testing.assert_array_less(err, (trunc + 16 * eps) * sum_u + 1e-12)
        assert np.all(np.asarray(out)[s == 0] == 0)
    assert float(np.max(err)) < 1e-7  # 11 orders: float precision
    # more than 8 orders: whole blocks in a loop, still below ε relative
    beta = 0.3 / (np.abs(D).max(1) * np.abs(A).max(1)).max()
    U = kernels.layer_bound(beta, jnp.asarray(D), jnp.asarray(A))
    M = series.series_order(U, jnp.float32)
    assert int(M) > 8
    out = series.looped_series_sum(jnp.asarray(D), jnp.asarray(A), jnp.asarray(s), beta, M)
    ref = _loop_log1m(D, A, s, beta)
    sum_u = sum(np.abs(beta * s * np.outer(d, a)) for d, a in zip(D, A))
    np.testing.assert_array_less(np.abs(np.asarray(out) - ref), 17 * eps * sum_u + 1e-12)


@pytest.mark.slow
def test_cap_sees_invalid_biases_when_weight_bounds_are_small(getkey):
    """Tiny inputs: every weight has |β s g| ≪ 1 but some bias gradients give β s δ > 1; the
    cap must still be taken from the biases (as `"vmap"` does)."""
    model = nte.nn.MLP(4, 6, 1, 3, key=getkey())
    x, y = 1e-3 * jax.random.normal(getkey(), (8, 4)), jnp.arange(8) % 3
    signs = nte.sign_mask(nte.split(model)[0])
    kw = dict(signs=signs, inv_temperature=5.0)
    ref = nte.expert_log_likelihoods(_loss, model, x, y, method="vmap", **kw)
    assert int(ref.num_invalid) > 0 and float(ref.inv_temperature) < 5.0
    for m in NAMES[1:]:
        out = nte.expert_log_likelihoods(_loss, model, x, y, method=m, **kw)
        assert int(out.num_invalid) == int(ref.num_invalid)
        np.testing.assert_allclose(out.inv_temperature, ref.inv_temperature, rtol=1e-6)
        _assert_close(out.log_likelihoods, ref.log_likelihoods, 1e-5)


@pytest.mark.parametrize("shape", [(), (7,), (5, 3), (2, 3, 4)])
def test_count_true_matches_numpy(shape):
    mask = np.random.default_rng(0).random(shape) < 0.4
    out = jax.jit(kernels.count_true)(jnp.asarray(mask))
    assert out.dtype == jnp.int32 and int(out) == int(np.sum(mask))


def test_count_true_stays_int32_in_x64(x64):
    """Under `jax_enable_x64` sums of int32 default to int64; the count must not."""
    mask = np.random.default_rng(1).random((5, 3)) < 0.4
    out = jax.jit(kernels.count_true)(jnp.asarray(mask))
    assert out.dtype == jnp.int32 and int(out) == int(np.sum(mask))


@pytest.mark.slow
def test_method_objects_equal_strings(getkey):
    """A string is its method with default knobs; `Sharded` on one device is its method."""
    model = nte.nn.MLP(5, 7, 1, 3, key=getkey())
    x, y = jax.random.normal(getkey(), (6, 5)), jnp.arange(6) % 3
    kw = dict(signs=nte.sign_mask(nte.split(model)[0]), inv_temperature=0.1, eta=1.5)
    for name in NAMES:
        by_name = nte.expert_log_likelihoods(_loss, model, x, y, method=name, **kw)
        for method in (_method(name), Sharded(name), Sharded(_method(name))):
            out = nte.expert_log_likelihoods(_loss, model, x, y, method=method, **kw)
            for a, b in zip(jtu.tree_leaves(out), jtu.tree_leaves(by_name)):
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


class _Twice(eqx.Module):
    """`shared` is called twice (not tapped: per-example gradients in chunks), `first` and
    `head` once (tapped)."""

    first: eqx.nn.Linear
    shared: eqx.nn.Linear
    head: eqx.nn.Linear

    def __init__(self, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.first = eqx.nn.Linear(4, 5, key=k1)
        self.shared = eqx.nn.Linear(5, 5, key=k2)
        self.head = eqx.nn.Linear(5, 3, key=k3)

    def __call__(self, x):
        h = jnp.tanh(self.shared(jnp.tanh(self.first(x))))
        return self.head(jnp.tanh(self.shared(h)))


def _scalar_model(key):
    """Linear layers with a scalar input and a scalar output (tapped, flattened to (1,))."""
    k1, k2 = jax.random.split(key)
    return eqx.nn.Sequential(
        [
            eqx.nn.Linear("scalar", 6, key=k1),
            eqx.nn.Lambda(jnp.tanh),
            eqx.nn.Linear(6, "scalar", key=k2),
        ]
    )


def _squared(model, x, y):
    return (model(x) - y) ** 2


@pytest.mark.slow
@pytest.mark.parametrize("case", ["twice", "scalar"])
def test_each_method_matches_float64_loop(getkey, x64, case):
    from nte.likelihood import _layers

    if case == "twice":
        model, loss = _Twice(getkey()), _loss
        x, y = jax.random.normal(getkey(), (7, 4)), jnp.arange(7) % 3
    else:
        model, loss = _scalar_model(getkey()), _squared
        x, y = jax.random.normal(getkey(), (7,)), jax.random.normal(getkey(), (7,))
    params, static = nte.split(model)
    signs = nte.sign_mask(params)
    batch = nte.likelihood._base.Batch(loss, params, static, x, y, signs)
    # which layers are read from taps: all but the one called twice
    assert (
        [layer.index for layer in _layers.find_layers(batch)] == [0, 2]
        if case == "twice"
        else [0, 1]
    )
    ref = _reference(model, x, y, signs, 0.2, 1.5, loss)
    for name in NAMES:
        for method in (_method(name), _method(name, 3)):
            out = nte.expert_log_likelihoods(
                loss, model, x, y, signs=signs, inv_temperature=0.2, eta=1.5, method=method
            )
            assert int(out.num_invalid) == 0
            _assert_close(out.log_likelihoods, ref, 1e-10)


def test_bad_method_knobs():
    for bad in (0, -1, True):
        with pytest.raises(ValueError, match="chunk_size"):
            Chunked(chunk_size=bad)
        with pytest.raises(ValueError, match="chunk_size"):
            Auto(chunk_size=bad)
        with pytest.raises(ValueError, match="terms"):
            Series(terms=bad)
    with pytest.raises(ValueError, match="method"):
        Sharded("magic")
