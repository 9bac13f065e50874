"""Conv layers in the fast paths: the conv tap rule, the structured NTK of conv layers and the
exact conv likelihood path, against `"jacobian"` / `nte.likelihood.Vmap` references."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import pytest
from helpers import astype, cross_entropy, slow_except

import nte
from nte import _ntk, _taps as taps
from nte.likelihood import _base, _compute, _layers


def _seq_cnn2d(key, use_bias=True):
    """An `eqx.nn.Sequential` CNN on 1×8×8 inputs: stride 2 / "SAME", then VALID with
    dilation, then a Linear head."""
    k1, k2, k3 = jax.random.split(key, 3)
    return eqx.nn.Sequential(
        [
            eqx.nn.Lambda(lambda x: jnp.reshape(x, (1, 8, 8))),
            eqx.nn.Conv2d(1, 3, 3, stride=2, padding="SAME", use_bias=use_bias, key=k1),
            eqx.nn.Lambda(jax.nn.relu),
            eqx.nn.Conv2d(3, 4, 2, padding=((1, 0), (0, 1)), dilation=2, use_bias=use_bias, key=k2),
            eqx.nn.Lambda(jax.nn.relu),
            eqx.nn.Lambda(jnp.ravel),
            eqx.nn.Linear(4 * 3 * 3, 3, use_bias=use_bias, key=k3),
        ]
    )


def _seq_cnn1d(key, use_bias=True):
    """A Conv1d CNN on 2×10 inputs: stride 2 with dilation and padding 2, then a circular
    padding mode; the output is the flattened last feature map."""
    k1, k2 = jax.random.split(key)
    return eqx.nn.Sequential(
        [
            eqx.nn.Lambda(lambda x: jnp.reshape(x, (2, 10))),
            eqx.nn.Conv1d(2, 4, 3, stride=2, padding=2, dilation=2, use_bias=use_bias, key=k1),
            eqx.nn.Lambda(jax.nn.relu),
            eqx.nn.Conv1d(4, 2, 2, padding=1, padding_mode="CIRCULAR", use_bias=use_bias, key=k2),
            eqx.nn.Lambda(jnp.ravel),
        ]
    )


MODELS = {
    "nte.nn.CNN": (lambda key, use_bias: nte.nn.CNN((1, 8, 8), 3, key=key), 64),
    "Sequential-Conv2d": (_seq_cnn2d, 64),
    "Sequential-Conv1d": (_seq_cnn1d, 20),
}


def _model(name, key, dtype, use_bias=True):
    make, size = MODELS[name]
    return astype(make(key, use_bias), dtype), size


def _rel(a, b):
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


# ------------------------------------------------------------------------------- the tap rule


@pytest.mark.parametrize(
    "conv",
    [
        dict(num_spatial_dims=1, kernel_size=3, stride=2, padding=2, dilation=2),
        dict(num_spatial_dims=1, kernel_size=2, padding=1, padding_mode="REFLECT"),
        dict(num_spatial_dims=2, kernel_size=3, stride=2, padding=1),
        dict(num_spatial_dims=2, kernel_size=(2, 3), stride=(1, 2), padding="SAME", dilation=2),
        dict(num_spatial_dims=2, kernel_size=3, padding="VALID", padding_mode="REPLICATE"),
    ],
)
def test_patches_reproduce_the_convolution(getkey, x64, conv):
    """weight.reshape(out, -1) @ P[p] + bias is the conv output at every position p."""
    layer = astype(eqx.nn.Conv(in_channels=3, out_channels=4, key=getkey(), **conv), jnp.float64)
    x = jax.random.normal(getkey(), (3,) + (9,) * conv["num_spatial_dims"], jnp.float64)
    patches = taps.conv_patches(layer, x)
    y = layer(x)
    assert patches.shape == (np.prod(y.shape[1:]), 3 * np.prod(layer.kernel_size))
    out = patches @ layer.weight.reshape(4, -1).T + layer.bias.reshape(1, 4)
    np.testing.assert_allclose(out.T.reshape(y.shape), y, rtol=1e-12, atol=1e-12)


def test_cnn_layers_are_tapped_in_call_order(getkey):
    model = nte.nn.CNN((1, 8, 8), 3, key=getkey())
    assert [type(n) for n in taps.nodes(model)] == [eqx.nn.Conv2d, eqx.nn.Conv2d, eqx.nn.Linear]
    rec = taps.discover(lambda: taps.tap(model)(jnp.zeros(64)))
    assert rec.calls == [0, 1, 2]
    assert [a.shape for a in rec.inputs] == [(16, 9), (4, 72), (64,)]


def test_grouped_conv_is_not_tapped(getkey):
    layer = eqx.nn.Conv2d(4, 4, 3, groups=2, key=getkey())
    assert not taps.is_tappable(layer)
    with pytest.raises(ValueError, match="groups"):
        taps.conv_patches(layer, jnp.zeros((4, 5, 5)))


# ----------------------------------------------------------------------------- structured NTK


@pytest.mark.parametrize("name", slow_except(list(MODELS), ("Sequential-Conv1d",)))
@pytest.mark.parametrize("use_bias", [True, False])
def test_structured_conv_ntk_matches_jacobian_float64(getkey, x64, name, use_bias):
    """Both forms of the conv kernel: traced on one batch, full on two: to 1e-10."""
    model, size = _model(name, getkey(), jnp.float64, use_bias)
    x1 = jax.random.normal(getkey(), (5, size), jnp.float64)
    x2 = jax.random.normal(getkey(), (3, size), jnp.float64)
    params, static = nte.split(model)
    for second, trace in ((None, True), (x2, False)):
        ref = nte.empirical_ntk(model, x1, second, method="jacobian", trace=trace)
        for form in ("pairs", "jacobian"):
            got = _ntk._kernel(params, static, x1, second, "structured", trace, form)
            assert got.shape == ref.shape
            assert _rel(got, ref) < 1e-10


@pytest.mark.parametrize("name", slow_except(list(MODELS), ("Sequential-Conv1d",)))
def test_structured_conv_ntk_matches_jacobian_float32(getkey, name):
    model, size = _model(name, getkey(), jnp.float32)
    x1 = jax.random.normal(getkey(), (6, size))
    ref = nte.empirical_ntk(model, x1, method="jacobian", trace=False)
    for method in ("structured", "auto"):
        assert _rel(nte.empirical_ntk(model, x1, method=method, trace=False), ref) < 1e-5


@pytest.mark.slow
def test_structured_conv_ntk_respects_filter_spec(getkey, x64):
    """Weight-only and bias-only selections of the conv layers."""
    model, size = _model("nte.nn.CNN", getkey(), jnp.float64)
    x1 = jax.random.normal(getkey(), (4, size), jnp.float64)
    for leaf in ("weight", "bias"):
        spec = jtu.tree_map(lambda _: False, model)
        spec = eqx.tree_at(
            lambda m, leaf=leaf: [getattr(c, leaf) for c in m.convs], spec, [True] * 2
        )
        ref = nte.empirical_ntk(model, x1, method="jacobian", filter_spec=spec)
        got = nte.empirical_ntk(model, x1, method="structured", filter_spec=spec)
        assert _rel(got, ref) < 1e-10


def test_a_conv_layer_called_twice(getkey, x64):
    """The same conv applied twice: the kernel sums over pairs of calls (positions of both
    calls concatenated)."""

    class Twice(eqx.Module):
        conv: eqx.nn.Conv1d

        def __call__(self, x):
            h = jax.nn.relu(self.conv(jnp.reshape(x, (2, 9))))
            return jnp.ravel(self.conv(h[:2]))

    model = astype(Twice(eqx.nn.Conv1d(2, 3, 3, padding=1, key=getkey())), jnp.float64)
    x1 = jax.random.normal(getkey(), (4, 18), jnp.float64)
    ref = nte.empirical_ntk(model, x1, method="jacobian", trace=False)
    assert _rel(nte.empirical_ntk(model, x1, method="structured", trace=False), ref) < 1e-10


# ------------------------------------------------------------------------------- likelihood


def _lik(model, x, y, beta, method, invalid="cap"):
    params = nte.split(model)[0]
    return nte.expert_log_likelihoods(
        cross_entropy, model, x, y, signs=nte.sign_mask(params), inv_temperature=beta,
        method=method, invalid=invalid,
    )  # fmt: skip


def _check_lik(got, ref, rtol):
    assert int(got.num_invalid) == int(ref.num_invalid)
    np.testing.assert_allclose(got.inv_temperature, ref.inv_temperature, rtol=rtol)
    for a, b in zip(jtu.tree_leaves(got.log_likelihoods), jtu.tree_leaves(ref.log_likelihoods)):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * float(jnp.max(jnp.abs(b))))


def _labelled(model, size, n, key, dtype):
    x = jax.random.normal(key, (n, size), dtype)
    k = jax.eval_shape(model, x[0]).shape[0]
    return x, jnp.arange(n) % k


@pytest.mark.parametrize("name", slow_except(list(MODELS), ("Sequential-Conv1d",)))
@pytest.mark.parametrize("use_bias", slow_except([True, False], (False,)))
def test_conv_likelihood_matches_vmap_float64(getkey, x64, name, use_bias):
    """Chunked, Auto (conv weights exact, the head by the series) against Vmap, with valid
    (small β) and floored (large β) experts: to 1e-10 (the capped β in float32 below)."""
    model, size = _model(name, getkey(), jnp.float64, use_bias)
    x, y = _labelled(model, size, 37, getkey(), jnp.float64)
    params, static = nte.split(model)
    batch = _base.Batch(cross_entropy, params, static, x, y, nte.sign_mask(params))
    kinds = [layer.conv for layer in _layers.find_layers(batch)]
    assert sum(kinds) == 2 and (name == "Sequential-Conv1d") == (len(kinds) == 2)
    for beta, invalid in ((0.01, "cap"), (3.0, "floor")):
        ref = _lik(model, x, y, beta, "vmap", invalid)
        if beta > 1:
            assert int(ref.num_invalid) > 0
        for method in ("chunked", "auto"):
            _check_lik(_lik(model, x, y, beta, method, invalid), ref, 1e-10)


@pytest.mark.parametrize("name", slow_except(list(MODELS), ("Sequential-Conv1d",)))
def test_conv_likelihood_matches_vmap_float32(getkey, name):
    model, size = _model(name, getkey(), jnp.float32)
    x, y = _labelled(model, size, 21, getkey(), jnp.float32)
    ref = _lik(model, x, y, 3.0, "vmap")  # capped
    assert int(ref.num_invalid) > 0
    _check_lik(_lik(model, x, y, 3.0, "chunked"), ref, 1e-5)


@pytest.mark.slow
def test_conv_likelihood_never_holds_batch_times_params(getkey):
    """The compiled Chunked pass on a CNN whose layers are wider than their patches needs
    less scratch memory than half of B×N floats; Vmap (per-example gradients) needs more."""
    model = nte.nn.CNN((1, 8, 8), 10, channels=(16, 64), key=getkey())
    x, y = _labelled(model, 64, 256, getkey(), jnp.float32)
    params, _ = nte.split(model)
    n_params = sum(p.size for p in jtu.tree_leaves(params))
    signs = jtu.tree_map(lambda s: jnp.asarray(s, jnp.int8), nte.sign_mask(params))
    hyper = (jnp.asarray(0.01), jnp.asarray(1.0))

    def temp(method):
        args = (cross_entropy, model, x, y, signs, hyper, eqx.is_inexact_array, method, "cap")
        lowered = _compute._compute.lower(*args)
        return lowered.compile().compiled.memory_analysis().temp_size_in_bytes

    full = 256 * n_params * 4
    assert temp(nte.likelihood.Vmap()) >= full
    assert temp(nte.likelihood.Chunked()) < full / 2
