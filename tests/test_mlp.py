import equinox as eqx
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
    """σ_w/√fan_in · W x + σ_b · b with W, b ~ N(0, 1) the stored parameters."""
    model = nte.nn.MLP(4, 6, 1, 3, parameterization="ntk", bias_std=0.3, key=getkey())
    x = jax.random.normal(getkey(), (4,))
    l0, l1 = model.layers
    h = jax.nn.relu(np.sqrt(2) / np.sqrt(4) * l0.weight @ x + 0.3 * l0.bias)
    expected = 1.0 / np.sqrt(6) * l1.weight @ h + 0.3 * l1.bias
    np.testing.assert_allclose(model(x), expected, rtol=1e-5, atol=1e-6)
    assert model.weight_gains == (np.sqrt(2.0), 1.0)


@pytest.mark.parametrize("use_bias", [True, False])
def test_mlp_ntk_deep_forward_and_unit_parameters(getkey, use_bias):
    model = nte.nn.MLP(
        5, 300, 2, 300, parameterization="ntk", activation="erf", use_bias=use_bias,
        bias_std=0.5, key=getkey(),
    )  # fmt: skip
    x = jax.random.normal(getkey(), (5,))
    h = x
    for i, layer in enumerate(model.layers):
        gain = 1.0 if i == 2 else np.sqrt(2.0)
        h = gain / np.sqrt(layer.in_features) * layer.weight @ h
        h = h + 0.5 * layer.bias if use_bias else h
        h = jax.scipy.special.erf(h) if i < 2 else h
    np.testing.assert_allclose(model(x), h, rtol=1e-4, atol=1e-5)
    for layer in model.layers[1:]:  # W, b ~ N(0, 1)
        np.testing.assert_allclose(np.var(layer.weight), 1.0, rtol=0.02)
        if use_bias:
            np.testing.assert_allclose(np.var(layer.bias), 1.0, rtol=0.25)


def test_mlp_ntk_bias_gradient_is_sigma_b(getkey):
    model = nte.nn.MLP(3, 4, 0, 1, parameterization="ntk", bias_std=0.3, key=getkey())
    grad = eqx.filter_grad(lambda m: m(jnp.ones(3))[0])(model)
    np.testing.assert_allclose(grad.layers[0].bias, [0.3], rtol=1e-6)
    np.testing.assert_allclose(grad.layers[0].weight, np.full((1, 3), 1 / np.sqrt(3)), rtol=1e-6)


def test_mlp_activation_names(getkey):
    x = jnp.linspace(-2, 2, 5)
    expected = {
        "relu": jax.nn.relu(x), "leaky_relu": jnp.where(x > 0, x, 0.01 * x),
        "erf": jax.scipy.special.erf(x), "abs": jnp.abs(x), "identity": x,
    }  # fmt: skip
    for name, want in expected.items():
        model = nte.nn.MLP(5, 5, 1, 1, activation=name, key=getkey())
        np.testing.assert_allclose(model.activation(x), want, rtol=1e-6)
    model = nte.nn.MLP(5, 5, 1, 1, activation=jnp.tanh, key=getkey())  # callables still work
    assert model.activation is jnp.tanh
    image = nte.nn.MLP(6, 5, 1, 2, key=getkey())
    z = jax.random.normal(getkey(), (2, 3))
    np.testing.assert_array_equal(image(z), image(z.reshape(6)))  # examples are flattened


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(in_size=0, width=3, depth=1, out_size=2), "in_size"),
        (dict(in_size=2, width=3, depth=-1, out_size=2), "depth"),
        (dict(in_size=2, width=3, depth=1, out_size=2, parameterization="mup"), "parameterization"),
        (dict(in_size=2, width=3, depth=1, out_size=2, activation="gelu"), "activation"),
        (dict(in_size=2, width=3, depth=1, out_size=2, bias_std=-1.0), "bias_std"),
        (
            dict(in_size=2, width=3, depth=1, out_size=2, parameterization="ntk", bias_std=0.0),
            "bias_std",
        ),
    ],
)
def test_mlp_bad_input(getkey, kwargs, name):
    with pytest.raises(ValueError, match=name):
        nte.nn.MLP(**kwargs, key=getkey())


def test_mlp_activation_must_be_callable_or_name(getkey):
    with pytest.raises(TypeError, match="activation"):
        nte.nn.MLP(2, 3, 1, 2, activation=3, key=getkey())
    nte.nn.MLP(2, 3, 1, 2, parameterization="ntk", use_bias=False, bias_std=0.0, key=getkey())
