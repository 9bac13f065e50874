"""`nte.jacobian_distance` against Jacobians materialized with `jax.jacrev`."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import nte


def _perturb(model, key, scale=0.3):
    params, static = nte.split(model)
    leaves, treedef = jtu.tree_flatten(params)
    keys = jr.split(key, len(leaves))
    noisy = [a + scale * jr.normal(k, a.shape, a.dtype) for a, k in zip(leaves, keys)]
    return nte.merge(jtu.tree_unflatten(treedef, noisy), static)


def _jacobian(model, xi):
    """The whole (outputs, N) Jacobian of one example, materialized."""
    params, static = nte.split(model)
    jac = jax.jacrev(lambda p: ravel_pytree(nte.merge(p, static)(xi))[0])(params)
    return np.concatenate([np.reshape(j, (j.shape[0], -1)) for j in jtu.tree_leaves(jac)], 1)


def _reference(model_a, model_b, x):
    ja = [_jacobian(model_a, xi) for xi in x]
    jb = [_jacobian(model_b, xi) for xi in x]
    diff = np.mean([np.linalg.norm(a - b) for a, b in zip(ja, jb)])
    return diff, diff / np.mean([np.linalg.norm(b) for b in jb])


@pytest.fixture
def pair(x64, getkey):
    model_b = nte.nn.MLP(3, 5, 2, 4, key=getkey())
    return _perturb(model_b, getkey()), model_b, jr.normal(getkey(), (7, 3))


@pytest.mark.parametrize("batch_size", [None, 1, 3, 7])
def test_matches_jacrev(pair, batch_size):
    model_a, model_b, x = pair
    absolute, relative = _reference(model_a, model_b, x)
    got = nte.jacobian_distance(model_a, model_b, x, batch_size=batch_size)
    got_rel = nte.jacobian_distance(model_a, model_b, x, relative=True, batch_size=batch_size)
    assert got.dtype == jnp.float64 and absolute > 1e-2
    np.testing.assert_allclose(got, absolute, rtol=1e-11)
    np.testing.assert_allclose(got_rel, relative, rtol=1e-11)


def test_zero_for_identical_and_symmetric(pair):
    model_a, model_b, x = pair
    np.testing.assert_allclose(nte.jacobian_distance(model_b, model_b, x), 0.0, atol=1e-14)
    np.testing.assert_allclose(
        nte.jacobian_distance(model_b, model_b, x, relative=True), 0.0, atol=1e-14
    )
    np.testing.assert_allclose(
        nte.jacobian_distance(model_a, model_b, x),
        nte.jacobian_distance(model_b, model_a, x),
        rtol=1e-13,
    )


def test_linear_model_closed_form(x64, getkey):
    """f(x) = W x + b: J does not depend on (W, b), and ‖J(x)‖_F² = out · (‖x‖² + 1)."""
    a = eqx.nn.Linear(4, 3, key=getkey())
    b = _perturb(a, getkey(), scale=2.0)
    x = jr.normal(getkey(), (6, 4))
    np.testing.assert_allclose(nte.jacobian_distance(a, b, x), 0.0, atol=1e-14)
    norms = np.sqrt(3 * (np.sum(np.asarray(x) ** 2, axis=1) + 1))
    shift = _perturb(a, getkey())  # any other Linear: distance 0, denominator closed form
    assert float(nte.jacobian_distance(shift, a, x, relative=True)) < 1e-14
    # the denominator alone: distance from a model whose Jacobian is zero (0 · W) to `a`
    zero = eqx.tree_at(lambda m: m.weight, a, 0 * a.weight)
    scaled = _Scaled(zero, 0.0)
    np.testing.assert_allclose(nte.jacobian_distance(scaled, _Scaled(a, 1.0), x), np.mean(norms))


class _Scaled(eqx.Module):
    inner: eqx.nn.Linear
    factor: float  # not static: both models share one structure

    def __call__(self, x):
        return self.factor * self.inner(x)


def test_pytree_outputs_and_images(getkey):
    """Outputs are flattened: a tuple output `(f, 2f)` has the distance of `f` times √5."""

    class Two(eqx.Module):
        mlp: nte.nn.MLP

        def __call__(self, x):
            out = self.mlp(x)
            return out, 2 * out

    mlp = nte.nn.MLP(12, 4, 1, 3, key=getkey())
    other = _perturb(mlp, getkey())
    x = jr.uniform(getkey(), (5, 12))
    one = nte.jacobian_distance(other, mlp, x)
    both = nte.jacobian_distance(Two(other), Two(mlp), x)
    assert one.dtype == jnp.float32
    np.testing.assert_allclose(both, np.sqrt(5.0) * one, rtol=1e-5)


def test_bad_models(pair, getkey):
    model_a, model_b, x = pair
    wider = nte.nn.MLP(3, 6, 2, 4, key=getkey())
    with pytest.raises(ValueError, match="`model_b` must have the same structure"):
        nte.jacobian_distance(model_a, wider, x)
    as32 = jtu.tree_map(lambda a: a.astype(jnp.float32) if eqx.is_inexact_array(a) else a, model_b)
    with pytest.raises(
        ValueError, match="`model_b` must have the same parameter shapes and dtypes"
    ):
        nte.jacobian_distance(model_a, as32, x)
    with pytest.raises(TypeError, match="model_b"):
        nte.jacobian_distance(model_a, lambda v: v, x)


def test_bad_inputs(pair, getkey):
    model_a, model_b, x = pair
    with pytest.raises(ValueError, match="`x` must be a batch of examples"):
        nte.jacobian_distance(model_a, model_b, x[0])  # one example, no batch axis
    image_model = nte.nn.MLP(784, 4, 1, 3, key=getkey())
    image = jnp.zeros((28, 28, 1))
    with pytest.raises(ValueError, match="`x` must be a batch of examples"):
        nte.jacobian_distance(image_model, image_model, image)
    with pytest.raises(ValueError, match="`batch_size` must be None or an int >= 1"):
        nte.jacobian_distance(model_a, model_b, x, batch_size=0)
