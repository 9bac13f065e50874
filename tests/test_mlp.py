import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import pytest

import nte


@pytest.mark.parametrize("parameterization", ["standard", "ntk"])
def test_mlp_shapes_and_no_exact_zeros(getkey, parameterization):
    model = nte.nn.MLP(6, 7, 3, 2, parameterization=parameterization, key=getkey())
    assert len(model.layers) == 4
    assert model(jnp.ones(6)).shape == (2,)
    for leaf in jtu.tree_leaves(nte.split(model)[0]):
        assert np.all(np.asarray(leaf) != 0)


def test_mlp_zero_bias_and_bias_free(getkey):
    model = nte.nn.MLP(6, 7, 1, 2, zero_bias=True, key=getkey())
    assert all(np.all(layer.bias == 0) for layer in model.layers)
    model = nte.nn.MLP(6, 7, 1, 2, use_bias=False, key=getkey())
    assert all(layer.bias is None for layer in model.layers)


def test_mlp_independent_keys_per_leaf(getkey):
    model = nte.nn.MLP(5, 5, 2, 5, key=getkey())
    w = [np.asarray(layer.weight).ravel() for layer in model.layers]
    # no two layers share their random draws (up to scale)
    for a in range(len(w)):
        for b in range(a + 1, len(w)):
            assert abs(np.corrcoef(w[a], w[b])[0, 1]) < 0.9


def test_mlp_standard_init_variance(getkey):
    model = nte.nn.MLP(400, 400, 1, 400, key=getkey())
    np.testing.assert_allclose(np.var(model.layers[0].weight), 2 / 400, rtol=0.05)
    np.testing.assert_allclose(np.var(model.layers[1].weight), 1 / 400, rtol=0.05)


def test_mlp_ntk_matches_manual_forward(getkey):
    model = nte.nn.MLP(4, 6, 1, 3, parameterization="ntk", key=getkey())
    x = jax.random.normal(getkey(), (4,))
    l0, l1 = model.layers
    h = jax.nn.relu(l0.weight @ (x * np.sqrt(2 / 4)) + l0.bias)
    expected = l1.weight @ (h / np.sqrt(6)) + l1.bias
    np.testing.assert_allclose(model(x), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(in_size=0, width=3, depth=1, out_size=2), "in_size"),
        (dict(in_size=2, width=3, depth=-1, out_size=2), "depth"),
        (dict(in_size=2, width=3, depth=1, out_size=2, parameterization="mup"), "parameterization"),
    ],
)
def test_mlp_bad_input(getkey, kwargs, name):
    with pytest.raises(ValueError, match=name):
        nte.nn.MLP(**kwargs, key=getkey())
