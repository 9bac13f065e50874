"""Per-parameter homogeneity degrees found from the network (nte/_homogeneity.py, nte/_euler.py)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
import pytest
from _homogeneous_models import FAMILIES, FAMILY_PARAMS, scale_by_degrees

import nte
from nte._euler import _verify


@pytest.mark.parametrize("use_bias", [False, True])
@pytest.mark.parametrize("family", FAMILY_PARAMS)
def test_detected_degrees_and_the_scaling_identity(x64, getkey, family, use_bias):
    """The degrees found are the hand-derived ones, and f(x; c^d ⊙ θ) = c^L f(x; θ) (float64)."""
    model, x, expected, L = FAMILIES[family](getkey(), use_bias)
    degrees = nte.parameter_degrees(model, x)
    params = nte.split(model)[0]
    assert jtu.tree_structure(degrees) == jtu.tree_structure(params)
    assert jtu.tree_leaves(degrees) == expected
    assert all(type(d) is int for d in jtu.tree_leaves(degrees))
    assert nte.homogeneity_degree(model, x) == L
    f = jax.vmap(model)(x)
    assert f.dtype == jnp.float64 and np.abs(f).max() > 1e-3
    for c in (0.5, 3.0):
        scaled = jax.vmap(scale_by_degrees(model, expected, c))(x)
        np.testing.assert_allclose(scaled, c**L * f, rtol=1e-12, atol=1e-12 * c**L)
    # with one bias degree off by one the identity fails: the degrees are not arbitrary
    if use_bias:
        wrong = list(expected)
        wrong[-1] += 1
        scaled = jax.vmap(scale_by_degrees(model, wrong, 3.0))(x)
        assert np.abs(scaled - 3.0**L * f).max() > 1e-6 * np.abs(f).max()


@pytest.mark.slow
def test_degrees_without_x_when_the_input_shape_is_known(getkey):
    for family in ("nte.nn.MLP", "eqx.nn.MLP-relu", "Sequential-Linear", "nte.nn.CNN"):
        model, x, expected, L = FAMILIES[family](getkey(), True)
        assert nte.homogeneity_degree(model) == L
        assert jtu.tree_leaves(nte.parameter_degrees(model)) == expected


def test_parameter_independent_preprocessing_is_allowed(x64, getkey):
    """tanh or `+ 1` on the raw input does not involve θ: f stays homogeneous in θ."""
    k = jr.split(getkey(), 3)
    model = eqx.nn.Sequential(
        [
            eqx.nn.Lambda(lambda x: jnp.tanh(x) + 1.0),
            eqx.nn.Linear(4, 5, key=k[0]),
            eqx.nn.Lambda(jax.nn.relu),
            eqx.nn.Linear(5, 2, key=k[1]),
        ]
    )
    x = jr.normal(k[2], (6, 4))
    assert nte.homogeneity_degree(model, x) == 2
    degrees = jtu.tree_leaves(nte.parameter_degrees(model, x))
    assert degrees == [1, 1, 1, 2]
    f = jax.vmap(model)(x)
    np.testing.assert_allclose(
        jax.vmap(scale_by_degrees(model, degrees, 3.0))(x), 9.0 * f, rtol=1e-12
    )


def test_weight_sharing_and_unused_parameters(getkey):
    class Tied(eqx.Module):
        lin: eqx.nn.Linear
        unused: jax.Array

        def __call__(self, x):
            return self.lin(jax.nn.relu(self.lin(x)))

    model = Tied(eqx.nn.Linear(3, 3, key=getkey()), jnp.ones(2))
    x = jr.normal(getkey(), (4, 3))
    # W used twice: f(cW, c^2 b) = c^2 f; the bias meets degrees 1 and 2, so it is refused
    with pytest.raises(ValueError, match="different degrees"):
        nte.homogeneity_degree(model, x)
    model = Tied(eqx.nn.Linear(3, 3, use_bias=False, key=getkey()), jnp.ones(2))
    assert nte.homogeneity_degree(model, x) == 2
    assert jtu.tree_leaves(nte.parameter_degrees(model, x)) == [1, 1]  # unused: degree 1


def _sequential(middle, key):
    k1, k2 = jr.split(key)
    return eqx.nn.Sequential(
        [
            eqx.nn.Linear(4, 3, key=k1),
            eqx.nn.Lambda(jax.nn.relu),
            middle,
            eqx.nn.Linear(3, 2, key=k2),
        ]
    )


@pytest.mark.parametrize(
    "middle, message",
    [
        (eqx.nn.Lambda(jnp.tanh), r"`model\.layers\[2\]\.fn`, `tanh`"),
        (eqx.nn.Lambda(jax.nn.sigmoid), r"`model\.layers\[2\]\.fn`, `logistic`"),
        (eqx.nn.Lambda(lambda h: h + 1), r"`model\.layers\[2\]\.fn`, `add` .* non-zero constant"),
        (eqx.nn.Lambda(lambda h: jnp.maximum(h, 0.1)), r"layers\[2\].*`max`"),
        (eqx.nn.LayerNorm(3), r"`model\.layers\[2\]`, `add` .* non-zero constant"),
    ],
)
def test_non_homogeneous_layer_is_named(getkey, middle, message):
    model = _sequential(middle, getkey())
    x = jr.normal(getkey(), (3, 4))
    for fn in (
        lambda: nte.homogeneity_degree(model),
        lambda: nte.parameter_degrees(model, x),
        lambda: nte.euler_residual(model, x),
        lambda: nte.tangent_experts(model, x),
    ):
        with pytest.raises(ValueError, match=message):
            fn()


def test_non_homogeneous_models_are_refused(getkey):
    with pytest.raises(ValueError, match=r"`model\.activation`, `tanh`"):
        nte.homogeneity_degree(nte.nn.MLP(4, 6, 1, 3, activation=jnp.tanh, key=getkey()))
    with pytest.raises(ValueError, match=r"`model\.activation`, `tanh`"):
        nte.homogeneity_degree(eqx.nn.MLP(4, 3, 5, 2, activation=jnp.tanh, key=getkey()))
    sig = eqx.nn.MLP(4, 3, 5, 2, final_activation=jax.nn.sigmoid, key=getkey())
    with pytest.raises(ValueError, match=r"`model\.final_activation`, `logistic`"):
        nte.homogeneity_degree(sig)

    class Residual(eqx.Module):
        a: eqx.nn.Linear
        b: eqx.nn.Linear

        def __call__(self, x):
            h = jax.nn.relu(self.a(x))
            return self.b(h) + h

    with pytest.raises(ValueError, match=r"does not follow `scan`"):
        nte.homogeneity_degree(eqx.nn.MLP(4, 3, 5, 3, scan=True, key=getkey()))

    res = Residual(eqx.nn.Linear(3, 3, key=getkey()), eqx.nn.Linear(3, 3, key=getkey()))
    with pytest.raises(ValueError, match=r"`model` itself .* different degrees \[1, 2\]"):
        nte.homogeneity_degree(res)


def test_bias_before_any_weight_layer_is_named(getkey):
    class Shifted(eqx.Module):
        shift: jax.Array
        lin: eqx.nn.Linear

        def __call__(self, x):
            return self.lin(x + self.shift)

    model = Shifted(jnp.ones(3), eqx.nn.Linear(3, 2, key=getkey()))
    with pytest.raises(ValueError, match=r"`model\.shift` enters `add` with a value of degree 0"):
        nte.parameter_degrees(model, jnp.ones((2, 3)))


def test_stateful_models_are_refused(getkey):
    make = eqx.nn.make_with_state(eqx.nn.Sequential)
    model, _ = make([eqx.nn.Linear(4, 3, key=getkey()), eqx.nn.BatchNorm(3, "batch", mode="batch")])
    x, y = jnp.ones((2, 4)), jnp.zeros(2, int)
    loss = lambda m, x, y: jnp.sum(m(x))  # noqa: E731
    signs = jax.tree.map(jnp.sign, eqx.filter(model, eqx.is_inexact_array))
    for fn in (
        nte.homogeneity_degree,
        lambda m: nte.tangent_experts(m, x),
        lambda m: nte.empirical_ntk(m, x, method="structured"),
        lambda m: nte.empirical_nngp(m, x),
        lambda m: nte.per_example_grads(loss, m, x, y),
        lambda m: nte.expert_log_likelihoods(loss, m, x, y, signs=signs, inv_temperature=0.1),
    ):
        with pytest.raises(TypeError, match=r"`model\.layers\[1\]` \(BatchNorm\).*State"):
            fn(model)


def test_wrong_input_shape_names_x_and_the_expected_shape(getkey):
    model, x, _, _ = FAMILIES["Sequential-Conv2d-AvgPool"](getkey(), True)
    with pytest.raises(ValueError, match=r"`x`.*\(1, H, W\).*`model\.layers\[0\]` is a Conv2d"):
        nte.euler_residual(model, jnp.ones((2, 3, 8, 8)))
    with pytest.raises(ValueError, match=r"`x`.*\(1, H, W\)"):
        nte.tangent_experts(model, jnp.ones((2, 3, 8, 8)))
    with pytest.raises(ValueError, match=r"`x`: the input shape of `model` cannot be inferred"):
        nte.homogeneity_degree(model)  # a conv first: the spatial size is unknown
    mlp = eqx.nn.MLP(4, 3, 5, 2, key=getkey())
    with pytest.raises(ValueError, match=r"`x`.*shape \(4,\)"):
        nte.homogeneity_degree(mlp, jnp.ones((2, 5)))
    with pytest.raises(ValueError, match=r"`x`.*shape \(1, 8, 8\)"):
        nte.parameter_degrees(nte.nn.CNN((1, 8, 8), 3, key=getkey()), jnp.ones((2, 1, 4, 4)))
    with pytest.raises(TypeError, match="model"):
        nte.homogeneity_degree(object())


def test_the_numerical_check_catches_wrong_degrees(getkey):
    model, x, expected, L = FAMILIES["Sequential-Conv2d-MaxPool"](getkey(), True)
    params, static = nte.split(model)
    treedef = jtu.tree_structure(params)
    _verify(params, static, jtu.tree_unflatten(treedef, expected), L, x)  # the right ones pass
    wrong = list(expected)
    wrong[3] = 1  # the bias of the second conv has degree 2
    with pytest.raises(ValueError, match="not positively homogeneous.*c = 0.5"):
        _verify(params, static, jtu.tree_unflatten(treedef, wrong), L, x)
