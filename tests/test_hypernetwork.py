"""Chunked hypernetwork bookkeeping and the hypernetwork continual learner."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import nte
from nte.continual import HypernetworkLearner, Task, make_learner
from nte.nn import ChunkedHypernetwork


def hypernetwork(lr, **kw):
    return make_learner("hypernetwork", lr=lr, **kw)


def _target(key):
    return nte.nn.MLP(5, 7, 1, 3, key=key)  # 5*7 + 7 + 7*3 + 3 = 66 weights


@pytest.mark.parametrize("chunk_size", [1, 8, 13, 66, 100])
def test_every_target_weight_generated_exactly_once(getkey, chunk_size):
    target = _target(getkey())
    hnet = ChunkedHypernetwork(target, 4, chunk_size=chunk_size, hidden=(6,), key=getkey())
    leaves = jax.tree_util.tree_leaves(nte.split(target)[0])
    n = sum(leaf.size for leaf in leaves)
    assert hnet.num_weights == n == 66
    assert hnet.num_chunks == -(-n // chunk_size)
    # Index map: assembling the flat vector 0..n-1 puts every index in exactly one leaf entry.
    assembled = hnet.assemble(jnp.arange(n, dtype=jnp.float32))
    ids = np.concatenate([np.ravel(a) for a in jax.tree_util.tree_leaves(nte.split(assembled)[0])])
    np.testing.assert_array_equal(np.sort(ids), np.arange(n))
    # Each generated entry is chunk c = i // chunk_size at offset i % chunk_size, times its scale.
    e = jr.normal(getkey(), (4,))
    chunks = np.asarray(hnet.chunks(e))
    assert chunks.shape == (hnet.num_chunks, chunk_size)
    scale = np.repeat(np.asarray(hnet.scales), [leaf.size for leaf in leaves])
    i = np.arange(n)
    expected = chunks[i // chunk_size, i % chunk_size] * scale
    generated = np.concatenate(
        [np.ravel(a) for a in jax.tree_util.tree_leaves(nte.split(hnet(e))[0])]
    )
    np.testing.assert_allclose(generated, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(hnet.weights_batch(e[None]))[0], expected, rtol=1e-6)


@pytest.mark.slow
def test_generated_network_runs_and_scales_follow_template(getkey):
    target = nte.nn.MLP(20, 30, 1, 4, key=getkey())
    hnet = ChunkedHypernetwork(target, 8, chunk_size=50, key=getkey())
    model = hnet(jr.normal(getkey(), (8,)))
    assert isinstance(model, nte.nn.MLP)
    assert model(jnp.ones(20)).shape == (4,)
    w = model.layers[0].weight
    ratio = float(jnp.std(w) / jnp.std(target.layers[0].weight))
    assert 0.3 < ratio < 3.0  # generated weights have the template's scale at init


def _learner(lr_tx, **kw):
    base = hypernetwork(1e-3, max_tasks=4, chunk_size=9, hidden=(8,), embedding_size=3, **kw)
    return eqx.tree_at(lambda h: h.optimizer, base, lr_tx)


def _batch(key):
    kx, ky = jr.split(key)
    return jr.normal(kx, (6, 5)), jr.randint(ky, (6,), 0, 3)


def _weights(learner, state, t):
    return jnp.concatenate(
        [
            jnp.ravel(a)
            for a in jax.tree_util.tree_leaves(
                nte.split(learner.eval_model(state, jnp.int32(t)))[0]
            )
        ]
    )


def test_snapshot_reproduced_exactly_with_zero_step_size(getkey):
    learner = _learner(optax.sgd(0.0), beta_output=1.0)
    task0, task1 = (Task(jnp.int32(t), jnp.ones(3, bool)) for t in range(2))
    state = learner.init(_target(getkey()), key=getkey())
    x, y = _batch(getkey())
    state = learner.end_task(state, jnp.int32(0), x, y, task0, key=getkey())
    assert int(state.count) == 1
    np.testing.assert_array_equal(_weights(learner, state, 0), state.snapshots[0])
    step = eqx.filter_jit(learner.step)
    for _ in range(3):
        state, aux = step(state, *_batch(getkey()), task1)
        assert float(aux["regularizer"]) == 0.0
    np.testing.assert_array_equal(_weights(learner, state, 0), state.snapshots[0])


def test_training_freezes_old_embeddings_and_regularizer_protects_outputs(getkey):
    task0, task1 = (Task(jnp.int32(t), jnp.ones(3, bool)) for t in range(2))

    def train(beta):
        learner = _learner(optax.adam(0.05), beta_output=beta)
        state = learner.init(_target(jr.key(0)), key=jr.key(1))
        x, y = _batch(jr.key(2))
        state = learner.end_task(state, jnp.int32(0), x, y, task0, key=jr.key(3))
        before = state.embeddings
        step = eqx.filter_jit(learner.step)
        for i in range(30):
            state, _ = step(state, *_batch(jr.key(10 + i)), task1)
        np.testing.assert_array_equal(state.embeddings[0], before[0])  # frozen
        np.testing.assert_array_equal(state.embeddings[2:], before[2:])  # untouched
        assert not np.array_equal(state.embeddings[1], before[1])  # current task trains
        return float(jnp.sum((_weights(learner, state, 0) - state.snapshots[0]) ** 2))

    drift_free, drift_reg = train(0.0), train(10.0)
    assert drift_reg < 0.2 * drift_free


@pytest.mark.slow
def test_lookahead_regularizer_gradient(getkey):
    """With SGD, the step equals θ − lr (∇L_task(θ) + β ∇reg(θ + Δθ)), Δθ = −lr ∇L_task(θ)."""
    lr, beta = 0.1, 0.7
    learner = _learner(optax.sgd(lr), beta_output=beta)
    task0, task1 = (Task(jnp.int32(t), jnp.ones(3, bool)) for t in range(2))
    state = learner.init(_target(getkey()), key=getkey())
    state = learner.end_task(state, jnp.int32(0), *_batch(getkey()), task0, key=getkey())
    state = eqx.tree_at(lambda s: s.snapshots, state, state.snapshots + 0.01)
    x, y = _batch(getkey())
    new, _ = learner.step(state, x, y, task1)
    params, static = eqx.partition(state.hnet, state.hnet.filter_spec())

    def task_loss(p):
        model = eqx.combine(p, static)(state.embeddings[1])
        return jnp.mean(jax.vmap(lambda xi, yi: -jax.nn.log_softmax(model(xi))[yi])(x, y))

    def reg(p):
        w = eqx.combine(p, static).weights(state.embeddings[0])
        return jnp.sum((w - state.snapshots[0]) ** 2)

    g = jax.grad(task_loss)(params)
    ahead = jax.tree_util.tree_map(lambda p, gi: p - lr * gi, params, g)
    g_reg = jax.grad(reg)(ahead)
    expected = jax.tree_util.tree_map(lambda p, a, b: p - lr * (a + beta * b), params, g, g_reg)
    got = eqx.filter(new.hnet, new.hnet.filter_spec())
    for u, v in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(expected)):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_three_task_digits_run_keeps_task_one():
    config = nte.continual.Config(
        dataset="digits",
        tasks=3,
        learner="hypernetwork",
        lr=1e-3,
        epochs=3,
        seeds=1,
        width=64,
        progress=False,
        learner_kwargs={"chunk_size": 500, "hidden": [50, 50], "beta_output": 0.1},
    )
    result = nte.continual.run(config)
    R = result.R[0]
    assert R[0, 0] > 0.8
    assert R[2, 0] >= R[0, 0] - 0.05, R


def test_bad_input(getkey):
    for kw, name in (
        ({"chunk_size": 0}, "chunk_size"),
        ({"chunk_embedding_size": -1}, "chunk_embedding_size"),
        ({"beta_output": -1.0}, "beta_output"),
        ({"max_reg_tasks": 0}, "max_reg_tasks"),
    ):
        with pytest.raises(ValueError, match=name):
            hypernetwork(1e-3, max_tasks=3, **kw)
    with pytest.raises(ValueError, match="max_tasks"):
        hypernetwork(1e-3, max_tasks=0)
    with pytest.raises(ValueError, match="chunk_size"):
        ChunkedHypernetwork(_target(getkey()), 4, chunk_size=0, key=getkey())
    learner = hypernetwork(1e-3, max_tasks=2, chunk_size=10, hidden=(4,))
    assert isinstance(learner, HypernetworkLearner)
    state = learner.init(_target(getkey()), key=getkey())
    with pytest.raises(ValueError, match="task_index"):
        learner.eval_model(state, jnp.int32(2))
    with pytest.raises(ValueError, match="task_index"):
        learner.eval_model(state, jnp.int32(-1))
    traced = eqx.filter_jit(lambda s, t: learner.eval_model(s, t)(jnp.ones(5)))
    assert traced(state, jnp.int32(1)).shape == (3,)
    with pytest.raises(Exception, match="task embedding"):
        jax.block_until_ready(traced(state, jnp.int32(5)))
