import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import optax
import pytest

import nte


def _perturbed(model, key, scale):
    params, static = nte.split(model)
    leaves, treedef = jtu.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    noisy = [p + scale * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)]
    return nte.merge(jtu.tree_unflatten(treedef, noisy), static)


@pytest.fixture
def setup(getkey):
    model0 = nte.nn.MLP(5, 8, 2, 3, key=getkey())
    model = _perturbed(model0, getkey(), 0.1)
    x = jax.random.normal(getkey(), (6, 5))
    return model, model0, x


def test_linearize_at_seed_is_the_model(setup):
    _, model0, x = setup
    lin = nte.linearize(model0, model0)
    np.testing.assert_allclose(jax.vmap(lin)(x), jax.vmap(model0)(x), rtol=1e-6, atol=1e-6)


def test_linearized_change_equals_jvp_and_finite_difference(setup):
    model, model0, x = setup
    params, static = nte.split(model0)
    delta = jtu.tree_map(jnp.subtract, nte.split(model)[0], params)
    lin = nte.linearize(model, model0)
    change = jax.vmap(lin)(x) - jax.vmap(model0)(x)
    # independent reference 1: jvp of the batched network in the direction θ - θ0
    _, jvp = jax.jvp(lambda p: jax.vmap(nte.merge(p, static))(x), (params,), (delta,))
    np.testing.assert_allclose(change, jvp, rtol=1e-5, atol=1e-6)
    # independent reference 2: a central finite difference of the true network, in float64
    with jax.enable_x64(True):
        p64 = jtu.tree_map(lambda a: a.astype(jnp.float64), params)
        d64 = jtu.tree_map(lambda a: a.astype(jnp.float64), delta)
        x64 = x.astype(jnp.float64)
        h = 1e-4

        def f(t):
            p = jtu.tree_map(lambda a, d: a + t * d, p64, d64)
            return jax.vmap(nte.merge(p, static))(x64)

        fd = (f(h) - f(-h)) / (2 * h)
    np.testing.assert_allclose(change, fd, rtol=1e-4, atol=1e-5)


def test_small_step_linearization_error_is_second_order(setup):
    _, model0, x = setup
    errors = []
    for scale in (1e-1, 1e-2):
        model = _perturbed(model0, jax.random.key(7), scale)
        lin = nte.linearize(model, model0)
        errors.append(float(jnp.max(jnp.abs(jax.vmap(lin)(x) - jax.vmap(model)(x)))))
    assert errors[1] < errors[0] / 30  # O(|Δ|²): 100× smaller in exact arithmetic


def test_taylor_degree_one_equals_linearize(setup):
    model, model0, x = setup
    lin = jax.vmap(nte.linearize(model, model0))(x)
    tay = jax.vmap(nte.taylor_expand(model, model0, 1))(x)
    np.testing.assert_allclose(tay, lin, rtol=1e-6, atol=1e-6)


def test_taylor_degree_two_matches_hessian_and_is_exact_for_quadratics(getkey):
    # a tanh network: second-order term against an explicit Hessian-vector product
    model0 = nte.nn.MLP(3, 4, 1, 2, activation=jnp.tanh, key=getkey())
    model = _perturbed(model0, getkey(), 0.2)
    x = jax.random.normal(getkey(), (3,))
    params, static = nte.split(model0)
    delta = jtu.tree_map(jnp.subtract, nte.split(model)[0], params)
    f = lambda p: nte.merge(p, static)(x)
    hvp = jax.jvp(lambda p: jax.jvp(f, (p,), (delta,))[1], (params,), (delta,))[1]
    expected = nte.linearize(model, model0)(x) + 0.5 * hvp
    np.testing.assert_allclose(nte.taylor_expand(model, model0, 2)(x), expected, rtol=1e-5)
    # a 2-layer linear network is quadratic in θ: the degree-2 expansion is exact
    lin0 = nte.nn.MLP(3, 4, 1, 2, activation=lambda v: v, key=getkey())
    lin1 = _perturbed(lin0, getkey(), 0.5)
    np.testing.assert_allclose(nte.taylor_expand(lin1, lin0, 2)(x), lin1(x), rtol=1e-5, atol=1e-6)


def test_linearized_trains_with_optax_and_theta0_is_frozen(setup):
    model, model0, x = setup
    y = jnp.arange(6) % 3
    lin = nte.linearize(model, model0)
    params, static = nte.split(lin)
    opt = optax.adam(1e-2)
    state = opt.init(params)

    def loss(p):
        logits = jax.vmap(nte.merge(p, static))(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    grads = jax.grad(loss)(params)

    @jax.jit
    def step(params, state):
        updates, state = opt.update(jax.grad(loss)(params), state)
        return optax.apply_updates(params, updates), state

    # θ0 and the frozen rest get exactly zero gradient
    assert all(np.all(g == 0) for g in jtu.tree_leaves(grads.params0))
    assert all(np.all(g == 0) for g in jtu.tree_leaves(grads.static))
    loss0 = loss(params)
    for _ in range(10):
        params, state = step(params, state)
    trained = nte.merge(params, static)
    assert loss(params) < loss0
    for a, b in zip(jtu.tree_leaves(trained.params0), jtu.tree_leaves(lin.params0)):
        np.testing.assert_array_equal(a, b)
    assert any(
        np.any(a != b) for a, b in zip(jtu.tree_leaves(trained.params), jtu.tree_leaves(lin.params))
    )


def test_linearize_filter_spec_freezes_unselected(setup):
    model, model0, x = setup
    spec = eqx.tree_at(lambda m: m.layers[-1], jtu.tree_map(lambda _: False, model0), replace=True)
    lin = nte.linearize(model, model0, filter_spec=spec)
    # only the last layer moves: reference = model0 with its last layer replaced, linearized
    hybrid = eqx.tree_at(lambda m: m.layers[-1], model0, model.layers[-1])
    ref = jax.vmap(nte.linearize(hybrid, model0))(x)
    np.testing.assert_allclose(jax.vmap(lin)(x), ref, rtol=1e-5, atol=1e-6)
    # the last layer enters linearly: the linearization is exact in it
    np.testing.assert_allclose(jax.vmap(lin)(x), jax.vmap(hybrid)(x), rtol=1e-5, atol=1e-6)


def test_linearized_model_properties(setup):
    model, model0, x = setup
    lin = nte.linearize(model, model0)
    np.testing.assert_allclose(jax.vmap(lin.model)(x), jax.vmap(model)(x), rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(lin.model0)(x), jax.vmap(model0)(x), rtol=1e-6)


def test_linearize_bad_input(setup, getkey):
    model, model0, _ = setup
    with pytest.raises(TypeError, match="model0"):
        nte.linearize(model, object())
    with pytest.raises(TypeError, match="model"):
        nte.linearize("not a module", model0)
    with pytest.raises(ValueError, match="model0"):
        nte.linearize(model, nte.nn.MLP(5, 9, 2, 3, key=getkey()))
    for degree in (0, -1, 1.5, True):
        with pytest.raises((ValueError, TypeError), match="degree"):
            nte.taylor_expand(model, model0, degree)
