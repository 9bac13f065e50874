import dataclasses
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import nte
from nte import continual


def test_masked_cross_entropy_finite_and_zero_grad_on_masked_logits(getkey):
    logits = 30.0 * jax.random.normal(getkey(), (7,))
    mask = jnp.array([False, True, False, True, True, False, False])
    label = jnp.int32(3)
    model = lambda z: z  # the "model" returns its input: gradients are w.r.t. logits

    loss = continual.cross_entropy(model, logits, (label, mask))
    grad = jax.grad(lambda z: continual.cross_entropy(model, z, (label, mask)))(logits)
    kept = jnp.array([1, 3, 4])
    # Reference: the plain softmax cross-entropy of the kept logits only.
    ref_loss, ref_grad = jax.value_and_grad(
        lambda z: optax.softmax_cross_entropy_with_integer_labels(z, jnp.int32(1))
    )(logits[kept])
    assert jnp.isfinite(loss)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
    np.testing.assert_array_equal(grad[~mask], 0.0)
    np.testing.assert_allclose(grad[kept], ref_grad, rtol=1e-6, atol=1e-7)


def test_cross_entropy_unmasked_is_plain_cross_entropy(getkey):
    logits = jax.random.normal(getkey(), (5,))
    loss = continual.cross_entropy(lambda z: z, logits, (jnp.int32(2), jnp.ones(5, bool)))
    ref = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.int32(2))
    np.testing.assert_allclose(loss, ref, rtol=1e-6)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_learner_step_matches_manual_update(getkey, momentum):
    model = nte.nn.MLP(6, 5, 1, 4, key=getkey())
    x, y = jax.random.normal(getkey(), (8, 6)), jnp.arange(8) % 4
    mask = jnp.array([True, True, False, True])
    y = jnp.where(y == 2, 0, y)
    task = continual.Task(jnp.int32(0), mask)
    learner = continual.make_learner("sgd", lr=0.1, momentum=momentum)
    state = learner.init(model, key=getkey())
    for _ in range(2):
        state, aux = eqx.filter_jit(learner.step)(state, x, y, task)

    def loss(m):
        logp = jax.vmap(lambda xi: jax.nn.log_softmax(jnp.where(mask, m(xi), -jnp.inf)))(x)
        return -jnp.mean(logp[jnp.arange(8), y])

    ref, velocity = model, None
    for _ in range(2):
        g = eqx.filter_grad(loss)(ref)
        velocity = (
            g if velocity is None else jax.tree.map(lambda v, gi: momentum * v + gi, velocity, g)
        )
        ref = eqx.apply_updates(ref, jax.tree.map(lambda v: -0.1 * v, velocity))
    for a, b in zip(
        jax.tree.leaves(eqx.filter(state.model, eqx.is_array)),
        jax.tree.leaves(eqx.filter(ref, eqx.is_array)),
    ):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert aux["loss"].shape == ()


@pytest.mark.parametrize("reset", [False, True])
def test_sgd_momentum_buffer_is_reset_at_task_ends_only_when_asked(getkey, reset):
    model = nte.nn.MLP(6, 5, 1, 4, key=getkey())
    x, y = jax.random.normal(getkey(), (8, 6)), jnp.arange(8) % 4
    task = continual.Task(jnp.int32(0), jnp.ones(4, bool))
    learner = continual.make_learner("sgd", lr=0.1, momentum=0.9, reset_momentum=reset)
    state = learner.init(model, key=getkey())
    step = eqx.filter_jit(learner.step)
    state, _ = step(state, x, y, task)
    state = learner.end_task(state, jnp.int32(0), x, y, task, key=getkey())
    trace = jax.tree.leaves(state.opt_state)
    assert all(bool(jnp.all(t == 0)) for t in trace) == reset  # zero buffer iff reset
    after, _ = step(state, x, y, task)

    def loss(m):
        return -jnp.mean(jax.vmap(lambda xi: jax.nn.log_softmax(m(xi)))(x)[jnp.arange(8), y])

    g0 = eqx.filter_grad(loss)(model)  # the reference: heavy ball by hand
    m1 = eqx.apply_updates(model, jax.tree.map(lambda g: -0.1 * g, g0))
    g1 = eqx.filter_grad(loss)(m1)
    v = g1 if reset else jax.tree.map(lambda a, b: 0.9 * a + b, g0, g1)
    ref = eqx.apply_updates(m1, jax.tree.map(lambda vi: -0.1 * vi, v))
    for a, b in zip(jax.tree.leaves(eqx.filter(after.model, eqx.is_array)),
                    jax.tree.leaves(eqx.filter(ref, eqx.is_array))):  # fmt: skip
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_registry_and_errors():
    assert {"sgd", "adam", "nte", "scaled_sgd"} <= set(continual.available_learners())
    adam = continual.make_learner("adam", lr=0.01)
    assert isinstance(adam, continual.OptaxLearner)
    assert isinstance(adam.source, continual.MeanGradient)
    nte_learner = continual.make_learner(continual.NTEConfig(beta=0.2), eta=0.5)
    assert isinstance(nte_learner.source, continual.TangentLikelihoods)
    assert (nte_learner.source.inv_temperature, nte_learner.source.eta) == (0.2, 0.5)
    assert not nte_learner.vmap_seeds and adam.vmap_seeds
    with pytest.raises(ValueError, match="learner"):
        continual.make_learner("nope")
    with pytest.raises(ValueError, match="already"):

        @continual.register_learner
        @dataclasses.dataclass(frozen=True)
        class Other(continual.LearnerConfig):
            name: ClassVar[str] = "sgd"

    with pytest.raises(ValueError, match="lr"):
        continual.make_learner("sgd", lr=-1.0)
    with pytest.raises(ValueError, match="momentum"):
        continual.make_learner("sgd", lr=0.1, momentum=1.0)
    with pytest.raises(ValueError, match="beta"):
        continual.make_learner("sgd", beta=0.1)


def test_public_names_do_not_shadow_the_library():
    for name in ("nte", "prune_only", "magnitude", "magnitude_sgd", "sgd", "adam", "ewc"):
        assert not hasattr(continual, name)
    import pathlib

    root = pathlib.Path(nte.__file__).parent
    for path in root.rglob("*.py"):
        lines = path.read_text().splitlines()
        assert not [ln for ln in lines if ln.startswith(("import nte", "from nte"))], path
