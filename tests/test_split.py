import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import pytest

import nte


def test_split_merge_roundtrip(getkey):
    model = nte.nn.MLP(3, 5, 2, 4, key=getkey())
    params, static = nte.split(model)
    x = jax.random.normal(getkey(), (3,))
    np.testing.assert_array_equal(nte.merge(params, static)(x), model(x))
    # every parameter is a float array, and they are exactly the model's float arrays
    leaves = jtu.tree_leaves(params)
    assert len(leaves) == 6 and all(eqx.is_inexact_array(p) for p in leaves)


def test_split_filter_spec_last_layer(getkey):
    model = nte.nn.MLP(3, 5, 2, 4, key=getkey())
    spec = jtu.tree_map(lambda _: False, model)
    spec = eqx.tree_at(lambda m: m.layers[-1], spec, replace=eqx.is_inexact_array)
    params, static = nte.split(model, spec)
    assert len(jtu.tree_leaves(params)) == 2
    assert params.layers[-1].weight.shape == (4, 5)
    assert params.layers[0].weight is None
    x = jax.random.normal(getkey(), (3,))
    np.testing.assert_array_equal(nte.merge(params, static)(x), model(x))


def test_split_never_selects_non_float(getkey):
    model = nte.nn.MLP(3, 5, 1, 2, key=getkey())
    params, _ = nte.split(model, lambda _: True)
    assert all(eqx.is_inexact_array(p) for p in jtu.tree_leaves(params))


def test_split_rejects_non_module():
    with pytest.raises(TypeError, match="model"):
        nte.split({"w": jnp.ones(3)})
