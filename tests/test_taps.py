"""Tests of nte/_taps.py: one tap mechanism for the structured NTK and the likelihood."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np

import nte
from nte import _ntk, _taps as taps
from nte.likelihood import _base, _layers


def _loss(model, x, y):
    return -jax.nn.log_softmax(model(x))[y]


def test_signals_are_the_per_example_gradients(getkey, x64):
    """δ_b a_bᵀ from the taps equals the per-example weight gradient (jax.grad per example, a
    Python loop), δ_b the bias gradient; every Linear of an MLP is tapped, in call order."""
    model = nte.nn.MLP(5, 7, 2, 3, key=getkey())
    x, y = jax.random.normal(getkey(), (4, 5)), jnp.arange(4) % 3
    params, static = nte.split(model)
    batch = _base.Batch(_loss, params, static, x, y, nte.sign_mask(params))
    layers = _layers.find_layers(batch)
    assert [layer.index for layer in layers] == [0, 1, 2]
    signals = _layers.layer_signals(batch, layers)
    for b in range(4):
        g = jax.grad(lambda p, b=b: _loss(nte.merge(p, static), x[b], y[b]))(params)
        for lin, (D, A) in zip(g.layers, signals):
            np.testing.assert_allclose(np.outer(D[b], A[b]), lin.weight, rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(D[b], lin.bias, rtol=1e-12, atol=1e-14)


def test_both_users_share_the_tap_module():
    """The structured NTK and the likelihood read layers through the same module."""
    assert _ntk.taps is taps and _layers.taps is taps


def test_a_tapped_model_outside_a_recording_is_the_model(getkey):
    model = nte.nn.MLP(3, 4, 1, 2, key=getkey())
    tapped = taps.tap(model)
    assert len(taps.nodes(model)) == 2
    assert [type(layer) for layer in tapped.layers] == [taps._Tap, taps._Tap]
    x = jax.random.normal(getkey(), (3,))
    np.testing.assert_array_equal(tapped(x), model(x))
    out, rec = taps.run(lambda: tapped(x))
    np.testing.assert_array_equal(out, model(x))
    assert rec.calls == [0, 1] and [a.shape for a in rec.inputs] == [(3,), (4,)]
    only_last = taps.tap(model, [1])
    assert isinstance(only_last.layers[1], taps._Tap) and isinstance(
        only_last.layers[0], eqx.nn.Linear
    )
    mask = taps.layer_mask(nte.split(model)[0], [1])
    assert jtu.tree_leaves(mask) == [False, False, True, True]
