import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import pytest

import nte


def _loss(model, x, y):
    return -jax.nn.log_softmax(model(x))[y]


def test_per_example_grads_equal_python_loop(getkey):
    model = nte.nn.MLP(4, 6, 2, 3, key=getkey())
    x = jax.random.normal(getkey(), (5, 4))
    y = jnp.array([0, 1, 2, 1, 0])
    grads = nte.per_example_grads(_loss, model, x, y)
    params, static = nte.split(model)
    for b in range(5):
        ref = jax.grad(lambda p, xb, yb: _loss(nte.merge(p, static), xb, yb))(params, x[b], y[b])
        for g, r in zip(jtu.tree_leaves(grads), jtu.tree_leaves(ref)):
            np.testing.assert_allclose(g[b], r, rtol=1e-6, atol=1e-7)


def test_per_example_grads_subset(getkey):
    model = nte.nn.MLP(4, 6, 1, 3, key=getkey())
    spec = eqx.tree_at(lambda m: m.layers[-1], jtu.tree_map(lambda _: False, model), replace=True)
    grads = nte.per_example_grads(
        _loss, model, jnp.ones((2, 4)), jnp.array([0, 1]), filter_spec=spec
    )
    assert grads.layers[0].weight is None and grads.layers[1].weight.shape == (2, 3, 6)


def test_per_example_grads_bad_batch(getkey):
    model = nte.nn.MLP(4, 6, 1, 3, key=getkey())
    with pytest.raises(ValueError, match="same batch size"):
        nte.per_example_grads(_loss, model, jnp.ones((3, 4)), jnp.zeros(2, int))
    with pytest.raises(TypeError, match="loss_fn"):
        nte.per_example_grads(None, model, jnp.ones((3, 4)), jnp.zeros(3, int))
