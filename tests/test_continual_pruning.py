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
    learner="prune_only", epochs=1, seeds=1,
)  # fmt: skip


@pytest.fixture(scope="module")
def digits():
    return nte.data.load("digits")


def test_pruning_learners_registered():
    assert {"prune_only", "prune_only_init", "magnitude"} <= set(continual.available_learners())


@pytest.mark.slow
def test_prune_only_init_learner_starts_perturbed_and_prunes_back(getkey):
    model = nte.nn.MLP(8, 16, 1, 3, key=getkey())
    learner = continual.make_learner(
        "prune_only", rate=0.1, momentum=0.0, init_scale=0.5, cutoff="quantile", degree=2.0
    )
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


def _zeros(model):
    return [np.asarray(w) == 0 for w in jtu.tree_leaves(nte.split(model)[0])]


def _observe_zeros(model, state, event):
    del state, event
    zero = _zeros(model)
    return {"sparsity": sum(z.sum() for z in zero) / sum(z.size for z in zero)}


def test_prune_only_sparsity_follows_the_rate_and_pruned_weights_stay_zero(digits):
    """Quantile cutoff: each step prunes ⌈rate·alive⌉ ≈ rate·alive weights, so after n steps
    the alive fraction is (1 − rate)^n; pruned weights (origin variant) stay exactly 0."""
    rate = 0.01
    config = BASE.replace(rate=rate, momentum=0.9, cutoff="quantile", observe_every=0)
    masks = []

    def keep_mask(model, state, event):
        masks.append(_zeros(model))
        return {}

    result = continual.run(config, dataset=digits, observers=(_observe_zeros, keep_mask))
    steps = digits.n_train // 32
    assert result.finished and result.steps == 2 * steps
    assert result.R[0, 0, 0] > result.baseline[0, 0] + 0.15  # learned the first task
    ends = [r for r in result.observations if r["kind"] == "task_end"]
    assert [r["step"] for r in ends] == [steps, 2 * steps]
    for r in ends:
        implied = 1 - (1 - rate) ** r["step"]
        np.testing.assert_allclose(r["sparsity"][0], implied, atol=0.02)
    first, last = masks
    for a, b in zip(first, last):
        assert np.all(b[a])  # every weight zero after task 1 is still exactly zero after task 2
    assert sum(b.sum() for b in last) > sum(a.sum() for a in first)


def test_magnitude_sparsity_reaches_its_target(digits):
    config = BASE.replace(
        learner="magnitude", lr=0.1, width=64, target_sparsity=0.5, end_step=40, frequency=5
    )
    result = continual.run(config, dataset=digits, observers=(_observe_zeros,))
    assert result.finished
    assert result.R[0, 0, 0] > result.baseline[0, 0] + 0.15
    for r in result.observations:  # both task ends come after end_step = 40
        np.testing.assert_allclose(r["sparsity"][0], 0.5, atol=0.01)
