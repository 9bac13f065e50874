import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import pytest

import nte


def test_cnn_shapes_batches_and_jit(getkey):
    model = nte.nn.CNN((1, 8, 8), 5, key=getkey())
    x = jax.random.normal(getkey(), (3, 1, 8, 8))
    out = jax.vmap(model)(x)
    assert out.shape == (3, 5) and model.in_size == 64
    np.testing.assert_allclose(jax.vmap(model)(x.reshape(3, 64)), out, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(jax.vmap(model))(x), out, rtol=1e-5, atol=1e-6)
    # a loop over examples is the reference for the vmapped call
    for i in range(3):
        np.testing.assert_allclose(model(x[i]), out[i], rtol=1e-5, atol=1e-6)


def test_cnn_init_no_zeros_independent_keys_and_scale(getkey):
    model = nte.nn.CNN((2, 9, 9), 4, channels=(6, 6, 6), key=getkey())
    leaves = jtu.tree_leaves(nte.split(model)[0])
    assert len(leaves) == 8
    for leaf in leaves:
        assert np.all(np.asarray(leaf) != 0)
    ws = [np.asarray(c.weight).ravel() for c in model.convs[1:]]
    assert abs(np.corrcoef(ws[0], ws[1])[0, 1]) < 0.5
    w, b = np.asarray(model.convs[1].weight), np.asarray(model.convs[1].bias).ravel()
    np.testing.assert_allclose(np.var(w), 2 / (6 * 9), rtol=0.3)
    assert abs(np.corrcoef(w.ravel()[:6], b)[0, 1]) < 0.99
    zero = nte.nn.CNN((1, 8, 8), 3, zero_bias=True, key=getkey())
    assert all(np.all(c.bias == 0) for c in zero.convs) and np.all(zero.head.bias == 0)


def test_cnn_gradients_are_finite_and_nonzero(getkey):
    model = nte.nn.CNN((1, 8, 8), 3, key=getkey())
    x = jax.random.normal(getkey(), (1, 8, 8))
    grads = jax.grad(lambda p: jnp.sum(nte.merge(p, nte.split(model)[1])(x) ** 2))(
        nte.split(model)[0]
    )
    for g in jtu.tree_leaves(grads):
        assert np.all(np.isfinite(g)) and np.any(g != 0)


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
