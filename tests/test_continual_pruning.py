import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import pytest

import nte
from nte import continual

BASE = continual.Config(
    dataset="digits", tasks=2, width=32, depth=1, batch_size=32, progress=False,
    learner="prune_only",
)  # fmt: skip


@pytest.fixture(scope="module")
def digits():
    return nte.data.load("digits")


def test_pruning_learners_registered():
    assert {"prune_only", "prune_only_init", "magnitude"} <= set(continual.available_learners())


def test_prune_only_init_learner_starts_perturbed_and_prunes_back(getkey):
    model = nte.nn.MLP(8, 16, 1, 3, key=getkey())
    learner = continual.prune_only(0.1, 0.0, init_scale=0.5, cutoff="quantile")
    state = learner.init(model, key=getkey())
    theta0 = nte.split(model)[0]
    start = nte.split(state.model)[0]
    assert all(np.all(np.asarray(a) != np.asarray(b)) for a, b in
               zip(jtu.tree_leaves(start), jtu.tree_leaves(theta0)))  # fmt: skip
    x = jax.random.normal(getkey(), (32, 8))
    y = jax.random.randint(getkey(), (32,), 0, 3)
    task = continual.Task(index=jnp.int32(0), mask=jnp.ones(3, bool))
    step = eqx.filter_jit(learner.step)
    for _ in range(3):
        state, aux = step(state, x, y, task)
    mask = state.opt_state.mask
    assert 0 < sum(int((~np.asarray(m)).sum()) for m in jtu.tree_leaves(mask))
    for p, p0, s, m in zip(*(jtu.tree_leaves(t) for t in (nte.split(state.model)[0], theta0,
                                                           start, mask))):  # fmt: skip
        p, p0, s, m = map(np.asarray, (p, p0, s, m))
        np.testing.assert_allclose(p[~m], p0[~m], rtol=1e-6, atol=1e-7)  # back to θ_init
        np.testing.assert_array_equal(p[m], s[m])  # the others never move


@pytest.mark.parametrize("learner", ["prune_only", "magnitude"])
def test_pruning_learners_run_end_to_end(digits, learner):
    if learner == "magnitude":
        kwargs = {"target_sparsity": 0.5, "end_step": 40, "frequency": 5}
    else:
        kwargs = {"rate": 0.05, "momentum": 0.9, "cutoff": "quantile"}
    config = dataclasses.replace(BASE, learner=learner, lr=0.1, width=64, learner_kwargs=kwargs)
    result = continual.run(config, dataset=digits)
    assert result.finished
    assert result.R[0, 0, 0] > result.baseline[0, 0] + 0.15  # learned the first task
    params = nte.split(
        jtu.tree_map(lambda x: x[0] if isinstance(x, jax.Array) else x, result.state.model)
    )[0]
    overall = float(nte.pruning.sparsity(params)[1])
    assert overall > (0.45 if learner == "magnitude" else 0.0)
