import dataclasses
import json
import os
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nte
from nte import continual

BASE = continual.Config(
    dataset="digits", tasks=3, width=32, depth=1, batch_size=32, lr=0.1, learner="sgd",
    momentum=0.5, progress=False, epochs=1, seeds=1,
)  # fmt: skip


@pytest.fixture(scope="module")
def digits():
    return nte.data.load("digits")


@pytest.fixture(scope="module")
def reference(digits):
    return continual.run(dataclasses.replace(BASE, eval_every=20), dataset=digits)


def _params(result):
    return jax.tree_util.tree_leaves(eqx.filter(result.state, eqx.is_inexact_array))


def test_end_to_end_digits(reference, digits):
    r = reference
    assert r.finished and r.R.shape == (1, 3, 3) and r.baseline.shape == (1, 3)
    steps_per_task = digits.n_train // 32
    assert r.steps == 3 * steps_per_task
    assert np.all((r.R >= 0) & (r.R <= 1))
    assert np.all(np.diagonal(r.R[0]) > 0.6)  # every task is learned
    assert np.all(r.baseline < 0.35)  # the untrained model is near chance (0.1)
    m = continual.metrics(r.R, r.baseline)
    np.testing.assert_allclose(r.metrics.acc, m.acc)
    np.testing.assert_allclose(r.metrics.acc, r.R[:, -1].mean(-1))
    # History every 20 steps of each task.
    assert r.history.shape == (1, 3 * (steps_per_task // 20), 3)
    assert np.all(np.diff(r.history_steps) > 0) and np.all(np.isfinite(r.history))
    summary = r.summary()
    json.dumps(summary)
    assert summary["ACC"]["mean"] == pytest.approx(float(r.metrics.acc[0]))


def test_deterministic(reference, digits):
    again = continual.run(dataclasses.replace(BASE, eval_every=20), dataset=digits)
    np.testing.assert_array_equal(again.R, reference.R)
    for a, b in zip(_params(again), _params(reference)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("seed_mode", ["vmap", "map"])
def test_seeds_in_one_program_equal_separate_runs(reference, digits, seed_mode):
    both = continual.run(dataclasses.replace(BASE, seeds=2, seed_mode=seed_mode), dataset=digits)
    assert both.R.shape == (2, 3, 3)
    second = continual.run(dataclasses.replace(BASE, seed=1), dataset=digits)
    for s, single in enumerate([reference, second]):
        np.testing.assert_allclose(both.R[s], single.R[0], atol=1e-6)
        np.testing.assert_allclose(both.baseline[s], single.baseline[0], atol=1e-6)
        for a, b in zip(_params(both), _params(single)):
            np.testing.assert_allclose(a[s], b[0], rtol=1e-5, atol=1e-6)
    assert not np.array_equal(both.R[0], both.R[1])


@pytest.mark.parametrize("stop", [20, 37, 60])  # mid task 1, a task boundary, mid task 2
def test_kill_and_resume_gives_identical_R(reference, digits, tmp_path, stop):
    config = dataclasses.replace(BASE, eval_every=20, out=str(tmp_path), checkpoint_every=7)
    partial = continual.run(dataclasses.replace(config, stop_after_steps=stop), dataset=digits)
    assert not partial.finished and partial.steps == stop
    assert np.isnan(partial.R[0, -1]).all()
    progress = json.loads((tmp_path / "checkpoint" / "progress.json").read_text())
    assert progress["done_steps"] == stop
    resumed = continual.run(config, dataset=digits)
    assert resumed.finished and resumed.steps == reference.steps
    np.testing.assert_array_equal(resumed.R, reference.R)
    np.testing.assert_array_equal(resumed.baseline, reference.baseline)
    np.testing.assert_array_equal(resumed.history, reference.history)
    for a, b in zip(_params(resumed), _params(reference)):
        np.testing.assert_array_equal(a, b)
    leftovers = [f for f in os.listdir(tmp_path / "checkpoint") if ".tmp" in f]
    assert leftovers == []


def test_resume_refuses_a_different_config(digits, tmp_path):
    config = dataclasses.replace(BASE, out=str(tmp_path), stop_after_steps=5)
    continual.run(config, dataset=digits)
    with pytest.raises(ValueError, match="out"):
        continual.run(dataclasses.replace(config, lr=0.2), dataset=digits)


class _CountingState(eqx.Module):
    inner: continual.OptaxState
    ends: jax.Array  # how often end_task ran for each task
    seen: jax.Array  # the sum of the labels handed to end_task


class _CountingLearner(continual.AbstractLearner):
    """A learner added in one small class: sgd plus an end_task hook (like EWC's Fisher)."""

    inner: continual.OptaxLearner
    n_tasks: int

    def init(self, model, *, key):
        return _CountingState(
            self.inner.init(model, key=key), jnp.zeros(self.n_tasks), jnp.zeros(())
        )

    def step(self, state, x, y, task):
        inner, aux = self.inner.step(state.inner, x, y, task)
        return dataclasses.replace(state, inner=inner), aux

    def end_task(self, state, task_index, x, y, task, *, key):
        del key, task
        ends = state.ends.at[task_index].add(1.0)
        return dataclasses.replace(state, ends=ends, seen=state.seen + x.shape[0] + 0.0 * y.sum())

    def eval_model(self, state, task_index):
        return state.inner.model


@continual.register_learner
@dataclasses.dataclass(frozen=True)
class _CountingConfig(continual.LearnerConfig):
    name: ClassVar[str] = "_test_counting"
    lr: float = 0.1

    def build(self, context):
        return _CountingLearner(continual.make_learner("sgd", lr=self.lr), context.tasks)


def test_a_registered_learner_gets_its_end_task_hook(digits):
    config = dataclasses.replace(BASE, learner="_test_counting", end_task_examples=10, seeds=2)
    r = continual.run(config, dataset=digits)
    np.testing.assert_array_equal(r.state.ends, np.ones((2, 3)))
    np.testing.assert_array_equal(r.state.seen, [30.0, 30.0])


@pytest.mark.slow
def test_nte_learner_on_split_digits(digits):
    config = dataclasses.replace(
        BASE, learner="nte", beta=0.05, scenario="task", tasks=2, seeds=2, width=16, max_delta=0.5
    )
    r = continual.run(config, dataset=digits)
    assert r.R.shape == (2, 2, 2) and np.all(np.isfinite(r.R))
    assert np.all(np.diagonal(r.R, axis1=1, axis2=2) > 0.5)  # 5-way tasks: chance is 0.2
    signs = r.state.opt_state.signs
    params = eqx.filter(r.state.model, eqx.is_inexact_array)
    for s in range(2):
        one = jax.tree_util.tree_map(lambda v, s=s: v[s], (params, signs))
        assert int(nte.sign_violations(*one)) == 0


def test_config_errors():
    with pytest.raises(ValueError, match="tasks"):
        continual.Config(tasks=0)
    with pytest.raises(ValueError, match="scenario"):
        continual.Config(scenario="nope")
    with pytest.raises(ValueError, match="momentum"):
        continual.Config(learner="sgd", momentum=1.5)
    with pytest.raises(ValueError, match="beta"):
        continual.Config(learner="sgd", beta=0.1)  # not an sgd hyperparameter
    with pytest.raises(ValueError, match="batch_size"):
        continual.run(dataclasses.replace(BASE, batch_size=10**6), dataset=nte.data.load("digits"))
    with pytest.raises(TypeError, match="config"):
        continual.run({"tasks": 2})
    assert continual.Config.from_dict(BASE.to_dict()) == BASE


_CACHE_RUN = """
import json, sys
import jax.monitoring
hits = []
jax.monitoring.register_event_listener(
    lambda name, **kw: hits.append(name) if name == "/jax/compilation_cache/cache_hits" else None
)
from nte import continual
config = continual.Config(tasks=2, width=16, batch_size=64, learner="nte", progress=False,
                          epochs=1, seeds=1, compile_cache=sys.argv[1])
r = continual.run(config)
print(json.dumps({"hits": len(hits), "R": r.R.tolist()}))
"""


@pytest.mark.slow
def test_compile_cache_is_reused_by_a_later_run(tmp_path):
    """Two processes, one cache folder: the first fills it, the second loads every program
    from it (JAX's cache-hit events) and gets the identical accuracy matrix."""
    import subprocess
    import sys

    def once():
        cmd = [sys.executable, "-c", _CACHE_RUN, str(tmp_path / "xla")]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600)
        return json.loads(out.stdout.strip().splitlines()[-1])

    first = once()
    files = list((tmp_path / "xla").iterdir())
    second = once()
    assert first["hits"] == 0 and len(files) >= 3  # init, train chunk, evaluation, ...
    assert second["hits"] >= len(files)
    assert second["R"] == first["R"]


def test_compile_cache_must_be_a_path():
    with pytest.raises((ValueError, TypeError), match="compile_cache"):
        continual.Config(compile_cache=3)
