"""Tests of nte/nn/_cnn.py: nte.nn.CNN against an independent NumPy loop convolution, its
shapes, its initialization statistics and its gradients against finite differences."""

import math

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import pytest
from helpers import assert_trees_close, astype, finite_difference_grad

import nte


def _numpy_conv(x, weight, bias, stride=2, pad=1):
    """A plain loop convolution: `x` (c_in, h, w), `weight` (c_out, c_in, k, k), `bias`
    (c_out, 1, 1); zero padding `pad` on each side, then every `stride`-th window."""
    c_out, _, k, _ = weight.shape
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    h_out = (xp.shape[1] - k) // stride + 1
    w_out = (xp.shape[2] - k) // stride + 1
    out = np.zeros((c_out, h_out, w_out))
    for o in range(c_out):
        for i in range(h_out):
            for j in range(w_out):
                window = xp[:, i * stride : i * stride + k, j * stride : j * stride + k]
                out[o, i, j] = np.sum(weight[o] * window) + bias[o, 0, 0]
    return out


def _numpy_forward(model, x, activation=lambda z: np.maximum(z, 0)):
    """The CNN's documented computation, in float64 NumPy with the module's own weights."""
    h = np.asarray(x, np.float64).reshape(model.in_shape)
    for conv in model.convs:
        w, b = (np.asarray(a, np.float64) for a in (conv.weight, conv.bias))
        h = activation(_numpy_conv(h, w, b))
    head_w, head_b = (np.asarray(a, np.float64) for a in (model.head.weight, model.head.bias))
    return head_w @ h.ravel() + head_b


@pytest.mark.parametrize(
    "in_shape, channels",
    [
        ((2, 9, 7), (3,)),
        pytest.param((1, 8, 8), (8, 16), marks=pytest.mark.slow),
        pytest.param((3, 5, 6), (2, 4, 5), marks=pytest.mark.slow),
    ],
)
def test_forward_matches_numpy_loop_convolution(getkey, in_shape, channels):
    model = nte.nn.CNN(in_shape, 4, channels=channels, key=getkey())
    x = jax.random.normal(getkey(), (3,) + in_shape)
    out = jax.vmap(model)(x)
    assert out.shape == (3, 4)
    for i in range(3):
        np.testing.assert_allclose(out[i], _numpy_forward(model, x[i]), rtol=1e-5, atol=1e-5)


def test_forward_float64_and_other_activation(getkey, x64):
    model = astype(
        nte.nn.CNN((2, 7, 7), 3, channels=(3, 2), activation=jnp.tanh, key=getkey()), jnp.float64
    )
    x = jax.random.normal(getkey(), (2, 7, 7), jnp.float64)
    out = model(x)
    assert out.dtype == jnp.float64
    np.testing.assert_allclose(out, _numpy_forward(model, x, np.tanh), rtol=1e-12, atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("in_shape", [(1, 8, 8), (2, 9, 7), (1, 1, 1), (3, 28, 28)])
def test_shapes_flat_input_batches_and_jit(getkey, in_shape):
    channels = (4, 6, 5)
    model = nte.nn.CNN(in_shape, 5, channels=channels, key=getkey())
    c, h, w = in_shape
    for c_out, conv in zip(channels, model.convs):
        assert conv.weight.shape == (c_out, c, 3, 3) and conv.bias.shape == (c_out, 1, 1)
        c, h, w = c_out, (h - 1) // 2 + 1, (w - 1) // 2 + 1  # stride 2, padding 1
    assert model.head.weight.shape == (5, c * h * w)
    assert model.in_size == math.prod(in_shape)
    x = jax.random.normal(getkey(), (3,) + in_shape)
    out = jax.vmap(model)(x)
    assert out.shape == (3, 5)
    np.testing.assert_array_equal(jax.vmap(model)(x.reshape(3, -1)), out)
    np.testing.assert_allclose(jax.jit(jax.vmap(model))(x), out, rtol=1e-5, atol=1e-6)
    for i in range(3):  # a loop over examples is the reference for the vmapped call
        np.testing.assert_allclose(model(x[i]), out[i], rtol=1e-5, atol=1e-6)


def test_init_statistics_and_independent_keys(getkey):
    model = nte.nn.CNN((16, 9, 9), 64, channels=(16, 16, 16), key=getkey())
    for leaf in jtu.tree_leaves(nte.split(model)[0]):
        assert np.all(np.asarray(leaf) != 0)
    # He init: weights N(0, 2 / fan_in), fan_in = 16·3·3; n = 2304 draws per layer, so the
    # sample variance has a relative standard deviation √(2/n) ≈ 0.03: allow 5 of them
    for conv in model.convs:
        w = np.asarray(conv.weight, np.float64)
        assert abs(np.mean(w)) < 5 * math.sqrt(2 / 144 / w.size)
        np.testing.assert_allclose(np.var(w), 2 / 144, rtol=5 * math.sqrt(2 / w.size))
    head = np.asarray(model.head.weight, np.float64)  # gain 1: N(0, 1 / fan_in)
    np.testing.assert_allclose(np.var(head), 1 / head.shape[1], rtol=5 * math.sqrt(2 / head.size))
    # biases N(0, 0.01²): 16·3 + 64 = 112 draws, relative sd of the std ≈ 1/√(2n) ≈ 0.07
    biases = np.concatenate([np.ravel(c.bias) for c in model.convs] + [np.ravel(model.head.bias)])
    np.testing.assert_allclose(np.std(biases), 0.01, rtol=5 / math.sqrt(2 * biases.size))
    # a fresh key per layer: equal-shaped layers are uncorrelated (|r| < 5/√n, n = 2304)
    w1, w2 = (np.ravel(c.weight) for c in model.convs[1:])
    assert abs(np.corrcoef(w1, w2)[0, 1]) < 5 / math.sqrt(w1.size)
    zero = nte.nn.CNN((1, 8, 8), 3, zero_bias=True, key=getkey())
    assert all(np.all(c.bias == 0) for c in zero.convs) and np.all(zero.head.bias == 0)


def test_gradients_match_finite_differences(getkey, x64):
    model = astype(nte.nn.CNN((1, 6, 5), 3, channels=(2, 3), key=getkey()), jnp.float64)
    params, static = nte.split(model)
    x = jax.random.normal(getkey(), (1, 6, 5), jnp.float64)
    loss = jax.jit(lambda p: -jax.nn.log_softmax(nte.merge(p, static)(x))[1])
    grads = jax.grad(loss)(params)
    numeric = finite_difference_grad(loss, params, eps=1e-6)
    assert_trees_close(grads, numeric, rtol=1e-6, atol=1e-8)
    assert all(np.any(np.asarray(g) != 0) for g in jtu.tree_leaves(grads))


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(in_shape=(8, 8), out_size=3), "in_shape"),
        (dict(in_shape=(1, 0, 8), out_size=3), "in_shape"),
        (dict(in_shape=(1, 8, 8), out_size=0), "out_size"),
        (dict(in_shape=(1, 8, 8), out_size=3, channels=()), "channels"),
    ],
)
def test_cnn_bad_input(getkey, kwargs, name):
    with pytest.raises(ValueError, match=name):
        nte.nn.CNN(**kwargs, key=getkey())
