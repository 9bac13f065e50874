import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nte import continual
from nte.continual import holdout, load_tasks
from nte.continual._tasks import task_batch


def _dataset(n_train=60, n_test=30, classes=6, shape=(3, 4), seed=0):
    rng = np.random.default_rng(seed)
    return types.SimpleNamespace(
        x_train=rng.random((n_train, *shape), dtype=np.float32),
        y_train=np.arange(n_train, dtype=np.int32) % classes,
        x_test=rng.random((n_test, *shape), dtype=np.float32),
        y_test=np.arange(n_test, dtype=np.int32) % classes,
        metadata={"name": "toy", "num_classes": classes, "image_shape": shape},
    )


def test_permutations_are_fixed_bijections():
    ds = _dataset()
    tasks = continual.permuted_tasks(ds, 4, key=jax.random.key(3))
    again = continual.permuted_tasks(ds, 4, key=jax.random.key(3))
    other = continual.permuted_tasks(ds, 4, key=jax.random.key(4), keep_first=False)
    assert tasks.permutations.shape == (4, 12)
    for perm in np.concatenate([tasks.permutations, other.permutations]):
        np.testing.assert_array_equal(np.sort(perm), np.arange(12))
    np.testing.assert_array_equal(tasks.permutations[0], np.arange(12))
    np.testing.assert_array_equal(tasks.permutations, again.permutations)
    assert len({tuple(p) for p in tasks.permutations}) == 4
    assert not np.array_equal(other.permutations[0], np.arange(12))
    # One copy of the data: every task indexes the same arrays.
    assert tasks.x_train.shape == (60, 12) and tasks.scenario == "permuted"
    assert tasks.masks.all() and tasks.num_outputs == 6


def test_task_batch_applies_permutation_on_device():
    ds = _dataset()
    tasks = continual.permuted_tasks(ds, 3, key=jax.random.key(0))
    dev = {k: jnp.asarray(getattr(tasks, k)) for k in ("x_train", "y_train", "x_test", "y_test")}
    dev.update(permutations=jnp.asarray(tasks.permutations), label_map=jnp.asarray(tasks.label_map))
    idx = jnp.array([5, 0, 17])
    x, y = jax.jit(task_batch)(dev, jnp.int32(2), idx)
    flat = ds.x_train.reshape(60, -1)
    for row, i in enumerate([5, 0, 17]):
        for pixel in range(12):
            assert x[row, pixel] == flat[i, tasks.permutations[2, pixel]]
    np.testing.assert_array_equal(y, ds.y_train[[5, 0, 17]])


@pytest.mark.parametrize("scenario", ["task", "domain", "class"])
def test_split_tasks(scenario):
    ds = _dataset()
    tasks = continual.split_tasks(ds, 3, scenario=scenario)
    groups = [[0, 1], [2, 3], [4, 5]]
    for t, g in enumerate(groups):
        members = np.flatnonzero(np.isin(ds.y_train, g))
        n = tasks.train_count[t]
        np.testing.assert_array_equal(np.sort(tasks.train_index[t, :n]), members)
        assert tasks.test_count[t] == np.isin(ds.y_test, g).sum()
        if scenario == "task":
            np.testing.assert_array_equal(np.flatnonzero(tasks.masks[t]), g)
        else:
            assert tasks.masks[t].all()
        targets = tasks.label_map[t][g]
        expected = [0, 1] if scenario == "domain" else g
        np.testing.assert_array_equal(targets, expected)
    assert tasks.num_outputs == (2 if scenario == "domain" else 6)
    np.testing.assert_array_equal(tasks.permutations, np.tile(np.arange(12), (3, 1)))


def test_bad_inputs():
    ds = _dataset()
    with pytest.raises(ValueError, match="scenario"):
        continual.split_tasks(ds, 3, scenario="permuted")
    with pytest.raises(ValueError, match="n_tasks"):
        continual.split_tasks(ds, 4, scenario="domain")
    with pytest.raises(ValueError, match="n_tasks"):
        continual.split_tasks(ds, 7, scenario="task")
    with pytest.raises(ValueError, match="n_tasks"):
        continual.permuted_tasks(ds, 0, key=jax.random.key(0))
    with pytest.raises(TypeError, match="dataset"):
        continual.permuted_tasks(object(), 2, key=jax.random.key(0))
    bad = _dataset()
    bad.y_train = bad.y_train + 10
    with pytest.raises(ValueError, match="labels"):
        continual.permuted_tasks(bad, 2, key=jax.random.key(0))


def test_validation_split_holds_out_training_examples_and_never_the_test_set():
    ds = _dataset(n_train=60, n_test=30)
    held = holdout(ds, 0.25, seed=1)
    assert held.x_train.shape == (45, 12) and held.x_test.shape == (15, 12)
    flat = ds.x_train.reshape(60, -1)
    rows = lambda x: {r.tobytes() for r in x}  # noqa: E731
    assert rows(held.x_train) | rows(held.x_test) == rows(flat)  # a partition of the train set
    assert not rows(held.x_train) & rows(held.x_test)
    assert not rows(held.x_test) & rows(ds.x_test.reshape(30, -1))  # the test set is unused
    index = {r.tobytes(): i for i, r in enumerate(flat)}
    for x, y in ((held.x_train, held.y_train), (held.x_test, held.y_test)):
        np.testing.assert_array_equal(y, ds.y_train[[index[r.tobytes()] for r in x]])
    again = holdout(ds, 0.25, seed=1)
    np.testing.assert_array_equal(again.x_test, held.x_test)
    assert not np.array_equal(holdout(ds, 0.25, seed=2).x_test, held.x_test)
    config = continual.Config(learner="sgd", validation=0.25, tasks=2)
    tasks = load_tasks(config, ds)
    assert tasks.test_count.tolist() == [15, 15] and tasks.train_count.tolist() == [45, 45]
    np.testing.assert_array_equal(tasks.x_test, holdout(ds, 0.25, seed=0).x_test)
    assert tasks.num_outputs == 6


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, float("nan")])
def test_validation_fraction_is_checked(fraction):
    with pytest.raises(ValueError, match="`fraction` must lie in"):
        holdout(_dataset(), fraction)
    if fraction != 0.0:
        with pytest.raises(ValueError, match="`validation` must be a finite number"):
            continual.DataConfig(validation=fraction)


def test_a_validation_split_leaving_no_training_examples_names_validation():
    config = continual.Config(learner="sgd", validation=0.999, tasks=1)
    with pytest.raises(ValueError, match="`validation` 0.999 leaves no training examples"):
        load_tasks(config, _dataset(n_train=60))
