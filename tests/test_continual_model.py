"""`nte.continual.run(config, model=..., observers=...)`, and the sectioned Config."""

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import slow_except

import nte
from experiments import continual as cli
from nte import continual

BASE = continual.Config(
    dataset="digits", tasks=2, batch_size=32, epochs=1, seeds=2, progress=False, learner="sgd",
    lr=0.1,
)  # fmt: skip
STEPS = nte.data.load("digits").n_train // 32  # steps per task


@pytest.fixture(scope="module")
def digits():
    return nte.data.load("digits")


def eqx_mlp(key):
    return eqx.nn.MLP(64, 10, 32, 1, key=key)


def cnn(key):
    return nte.nn.CNN((1, 8, 8), 10, channels=(4,), key=key)


@pytest.mark.parametrize("factory", [eqx_mlp, cnn], ids=["eqx.nn.MLP", "nte.nn.CNN"])
@pytest.mark.parametrize("learner", slow_except(["sgd", "nte"], ("sgd",)))
def test_any_equinox_model_trains(digits, factory, learner):
    config = BASE.replace(learner=learner) if learner == "nte" else BASE
    result = continual.run(config, model=factory, dataset=digits)
    assert result.finished and result.steps == 2 * STEPS
    assert type(result.state.model) is type(factory(jax.random.key(0)))
    # seed s's model starts from factory(split(key(s), 4)[0]): check the first seed's leaves
    first = factory(jax.random.split(jax.random.key(0), 4)[0])
    trained = jax.tree_util.tree_leaves(eqx.filter(result.state.model, eqx.is_array))
    assert [v.shape[1:] for v in trained] == [
        v.shape for v in jax.tree_util.tree_leaves(eqx.filter(first, eqx.is_array))
    ]
    assert np.all(np.diagonal(result.R, axis1=1, axis2=2) > result.baseline + 0.15)


def _steps_then_fail(tmp_path, digits, model, match):
    config = BASE.replace(out=str(tmp_path / "run"))
    with pytest.raises((ValueError, TypeError), match=match) as info:
        continual.run(config, model=model, dataset=digits)
    assert not (tmp_path / "run").exists()  # raised before anything was trained or written
    return str(info.value)


def test_bad_models_fail_before_training(tmp_path, digits):
    message = _steps_then_fail(tmp_path, digits, lambda key: jnp.zeros(3), "model")
    assert "not an eqx.Module" in message
    message = _steps_then_fail(
        tmp_path, digits, lambda key: eqx.nn.MLP(64, 7, 8, 1, key=key), "model"
    )
    assert "10 logits" in message and "(7,)" in message
    message = _steps_then_fail(
        tmp_path, digits, lambda key: eqx.nn.MLP(50, 10, 8, 1, key=key), "model"
    )
    assert "(64,)" in message and "call failed" in message  # the underlying error is shown
    assert "dot_general" in message or "shape" in message
    message = _steps_then_fail(tmp_path, digits, "not a function", "model")
    assert "callable" in message


def test_checkpoint_refuses_a_different_model(tmp_path, digits):
    config = BASE.replace(out=str(tmp_path), stop_after_steps=3)
    continual.run(config, model=eqx_mlp, dataset=digits)
    recorded = json.loads((tmp_path / "checkpoint" / "run_config.json").read_text())
    assert "MLP" in recorded["model_module"]["structure"]
    assert recorded["model_module"]["leaves"][0] == [[32, 64], "float32"]
    with pytest.raises(ValueError, match="out"):
        continual.run(config, model=cnn, dataset=digits)
    wider = lambda key: eqx.nn.MLP(64, 10, 48, 1, key=key)  # same structure, other shapes
    with pytest.raises(ValueError, match="out"):
        continual.run(config, model=wider, dataset=digits)
    resumed = continual.run(config.replace(stop_after_steps=None), model=eqx_mlp, dataset=digits)
    assert resumed.finished


def _norm(model, state, event):
    params = eqx.filter(model, eqx.is_inexact_array)
    sq = sum(float(jnp.sum(v**2)) for v in jax.tree_util.tree_leaves(params))
    assert isinstance(state, continual.OptaxState)
    return {"norm": np.sqrt(sq), "seed": event.seed}


@pytest.mark.slow
def test_observers_land_in_metrics_json(tmp_path, digits):
    config = BASE.replace(out=str(tmp_path / "sgd"), observe_every=4)
    cli.run_one(config, observers=(_norm,), dataset=digits)
    metrics = json.loads((tmp_path / "sgd" / "metrics.json").read_text())
    records = metrics["observations"]
    every = [r["step"] for r in records if r["kind"] == "step"]
    ends = [r for r in records if r["kind"] == "task_end"]
    within = list(range(4, STEPS + 1, 4))  # every 4 steps of each task
    assert every == within + [STEPS + s for s in within]
    assert [r["step"] for r in ends] == [STEPS, 2 * STEPS] and [r["task"] for r in ends] == [0, 1]
    for r in records:
        assert r["seed"] == [0, 1] and len(r["norm"]) == 2
    # the last record is the final model: its norm is computed from Result.state by hand
    result = continual.run(config.replace(out=None), dataset=digits)
    for s in range(2):
        arrays = eqx.filter(result.state.model, eqx.is_array)
        one = jax.tree_util.tree_map(lambda v, s=s: v[s], arrays)
        sq = sum(float(jnp.sum(v**2)) for v in jax.tree_util.tree_leaves(one))
        np.testing.assert_allclose(ends[-1]["norm"][s], np.sqrt(sq), rtol=1e-6)


def test_observations_survive_kill_and_resume(tmp_path, digits):
    config = BASE.replace(out=str(tmp_path), observe_every=5, checkpoint_every=5)
    whole = continual.run(config.replace(out=None), dataset=digits, observers=(_norm,))
    continual.run(config.replace(stop_after_steps=STEPS + 3), dataset=digits, observers=(_norm,))
    resumed = continual.run(config, dataset=digits, observers=(_norm,))
    assert [r["step"] for r in resumed.observations] == [r["step"] for r in whole.observations]
    for a, b in zip(resumed.observations, whole.observations):
        np.testing.assert_allclose(a["norm"], b["norm"], rtol=1e-6)


def test_bad_observers():
    with pytest.raises(ValueError, match="observers"):
        continual.run(BASE, observers=(3,))


def test_flat_construction_equals_sections():
    flat = continual.Config(
        dataset="digits", tasks=4, learner="nte", beta=0.2, max_delta=0.5, epochs=2, seeds=2,
        width=50, mesh="data=1", devices=1, learner_kwargs={"eta": 0.5},
    )  # fmt: skip
    sectioned = continual.Config(
        data=continual.DataConfig(dataset="digits", tasks=4),
        model=continual.ModelConfig(width=50),
        learner=continual.NTEConfig(beta=0.2, eta=0.5, max_delta=0.5),
        training=continual.TrainingConfig(epochs=2, seeds=2),
        devices=continual.DevicesConfig(devices=1, mesh="data=1"),
    )
    assert flat == sectioned
    assert continual.Config.from_dict(json.loads(flat.to_json())) == flat
    assert flat.replace(beta=0.3).learner.beta == 0.3 and flat.replace(tasks=2).data.tasks == 2
    assert continual.Config().learner == continual.NTEConfig()
    with pytest.raises(ValueError, match="lr"):
        continual.Config(learner="nte", lr=0.1)
    with pytest.raises(ValueError, match="data"):
        continual.Config(data=continual.ModelConfig())


@pytest.mark.parametrize("custom", [False, True])
def test_initial_model_is_the_model_each_seed_starts_from(custom):
    """With lr 1e-30 no float32 weight moves, so the model at the end of the task is the one
    the seed started from; `initial_model` must rebuild it bit for bit."""
    factory = (lambda key: nte.nn.MLP(64, 6, 1, 10, use_bias=False, key=key)) if custom else None
    config = continual.Config(learner="sgd", lr=1e-30, tasks=1, width=6, depth=1, seeds=2,
                              seed=5, epochs=1, batch_size=64, progress=False)  # fmt: skip
    seen = {}

    def keep(model, state, event):
        seen[event.seed] = model
        return {}

    continual.run(config, model=factory, observers=(keep,))
    assert sorted(seen) == [5, 6]
    for seed, model in seen.items():
        start = continual.initial_model(config, seed, model=factory)
        for a, b in zip(jax.tree.leaves(eqx.filter(model, eqx.is_array)),
                        jax.tree.leaves(eqx.filter(start, eqx.is_array))):  # fmt: skip
            np.testing.assert_array_equal(a, b)
    other = continual.initial_model(config, 7, model=factory)
    assert not np.array_equal(jax.tree.leaves(eqx.filter(other, eqx.is_array))[0],
                              jax.tree.leaves(eqx.filter(seen[5], eqx.is_array))[0])  # fmt: skip
