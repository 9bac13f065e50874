"""`nte.ensemble_stats` against numpy: pruned count, effective size exp(H(w)), mass per leaf."""

import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
import pytest

import nte


def _reference(params, center):
    delta = [np.ravel(p - c) for p, c in zip(jtu.tree_leaves(params), jtu.tree_leaves(center))]
    flat = np.abs(np.concatenate(delta))
    w = flat / flat.sum()
    nonzero = w[w > 0]
    entropy = -np.sum(nonzero * np.log(nonzero))
    mass = [np.abs(d).sum() / flat.sum() for d in delta]
    return int(np.sum(flat == 0)), float(np.exp(entropy)), mass


def test_matches_numpy_with_center(x64, getkey):
    params = {"w": jr.normal(getkey(), (4, 5)), "b": jr.normal(getkey(), (5,))}
    center = {"w": jr.normal(getkey(), (4, 5)), "b": jr.normal(getkey(), (5,))}
    # exact zeros of Δ: four weights and one bias sit on the centre
    params["w"] = params["w"].at[0, :4].set(center["w"][0, :4])
    params["b"] = params["b"].at[2].set(center["b"][2])
    pruned, effective, mass = _reference(params, center)
    stats = nte.ensemble_stats(params, center=center)
    assert pruned == 5 and stats.num_pruned.dtype == jnp.int32
    assert int(stats.num_pruned) == pruned
    np.testing.assert_allclose(stats.effective_size, effective, rtol=1e-12)
    np.testing.assert_allclose(jtu.tree_leaves(stats.mass), mass, rtol=1e-12)
    np.testing.assert_allclose(sum(jtu.tree_leaves(stats.mass)), 1.0, rtol=1e-12)


def test_uniform_magnitudes_give_n(getkey):
    signs = jnp.sign(jr.normal(getkey(), (7, 11)))
    params = {"a": 0.3 * signs, "b": jnp.full((13,), -0.3)}
    stats = nte.ensemble_stats(params)
    np.testing.assert_allclose(stats.effective_size, 7 * 11 + 13, rtol=1e-5)
    np.testing.assert_allclose(stats.mass["a"], 77 / 90, rtol=1e-6)
    assert int(stats.num_pruned) == 0


def test_one_hot_gives_one():
    params = (jnp.zeros((3, 4)).at[1, 2].set(-2.5), jnp.zeros(6))
    stats = nte.ensemble_stats(params)
    assert int(stats.num_pruned) == 17
    np.testing.assert_allclose(stats.effective_size, 1.0, rtol=1e-6)
    np.testing.assert_allclose(stats.mass, (1.0, 0.0), atol=0)


def test_all_pruned_is_zero_not_nan(getkey):
    params = {"w": jr.normal(getkey(), (3, 3))}
    stats = nte.ensemble_stats(params, center=params)
    assert int(stats.num_pruned) == 9
    assert float(stats.effective_size) == 0.0 and float(stats.mass["w"]) == 0.0


def test_model_and_jit(getkey):
    """A whole model works (non-parameters are skipped, `None` leaves stay `None`), under jit."""
    model = nte.nn.MLP(3, 4, 1, 2, key=getkey())
    params, _ = nte.split(model)
    eager = nte.ensemble_stats(model)
    jitted = jax.jit(nte.ensemble_stats)(params)
    pruned, effective, mass = _reference(params, jtu.tree_map(jnp.zeros_like, params))
    assert int(jitted.num_pruned) == int(eager.num_pruned) == pruned
    np.testing.assert_allclose(jitted.effective_size, effective, rtol=1e-5)
    np.testing.assert_allclose(eager.effective_size, effective, rtol=1e-5)
    np.testing.assert_allclose(jtu.tree_leaves(jitted.mass), mass, rtol=1e-5)
    assert jtu.tree_structure(jitted.mass) == jtu.tree_structure(params)


def test_bad_inputs():
    params = {"w": jnp.ones((2, 3)), "b": jnp.ones(3)}
    with pytest.raises(ValueError, match="`center` must have the same tree structure"):
        nte.ensemble_stats(params, center={"w": jnp.ones((2, 3))})
    with pytest.raises(
        ValueError, match=r"`center` leaf 0 has shape \(4,\), but `params` leaf 0 has \(3,\)"
    ):
        nte.ensemble_stats(params, center={"w": jnp.ones((2, 3)), "b": jnp.ones(4)})
    with pytest.raises(ValueError, match="`params` holds no floating-point arrays"):
        nte.ensemble_stats({"n": jnp.arange(3)})


@pytest.mark.parametrize("init_scale", [0.0, 0.1])
def test_ensemble_observer_expands_around_the_learners_origin(getkey, init_scale):
    """The observer's numbers are those of the numpy reference around θ0 of the NTE state (the
    origin, or `state.origin` in the init variant), found inside an optax chain."""
    from nte.continual import Event, OptaxState, ensemble_observer

    model = nte.nn.MLP(5, 7, 1, 3, key=getkey())
    params, _ = nte.split(model)
    opt = nte.nte(init_scale=init_scale, key=getkey() if init_scale else None)
    state = OptaxState(model, (opt.init(params), ()))
    record = ensemble_observer(model, state, Event("task_end", 0, 0, 0))
    origin = state.opt_state[0].origin
    center = jtu.tree_map(jnp.zeros_like, params) if origin is None else origin
    num_pruned, size, mass = _reference(params, center)
    n = sum(p.size for p in jtu.tree_leaves(params))
    assert record["ensemble_num_pruned"] == num_pruned
    np.testing.assert_allclose(record["ensemble_effective_size"], size, rtol=1e-5)
    np.testing.assert_allclose(record["ensemble_effective_fraction"], size / n, rtol=1e-5)
    got = [v for k, v in record.items() if k.startswith("ensemble_mass")]
    np.testing.assert_allclose(got, mass, rtol=1e-5, atol=1e-7)
    assert "ensemble_mass.layers[0].weight" in record


def test_the_nte_learner_logs_its_ensemble_and_sgd_does_not():
    base = nte.continual.Config(dataset="digits", tasks=2, width=8, depth=1, epochs=1, seeds=1,
                                batch_size=128, progress=False)  # fmt: skip
    r = nte.continual.run(base.replace(learner="nte"))
    assert [o["task"] for o in r.observations] == [0, 1]
    assert all(0 < o["ensemble_effective_fraction"][0] <= 1 for o in r.observations)
    assert nte.continual.run(base.replace(learner="sgd")).observations == []
