"""Tests of nte/continual/_stripes.py: the training set dealt into stripes (one per batch slot).

The multi-device and multi-process layouts are checked in tests/test_parallel.py (forced CPU
devices need a subprocess); here: the tables, and the gather on one device.
"""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nte
from nte import continual
from nte.continual import _stripes as stripes


def _dataset(n_train=203, n_test=30, classes=6, seed=0):
    rng = np.random.default_rng(seed)
    return types.SimpleNamespace(
        x_train=rng.random((n_train, 2, 3), dtype=np.float32),
        y_train=rng.integers(0, classes, n_train).astype(np.int32),
        x_test=rng.random((n_test, 2, 3), dtype=np.float32),
        y_test=np.arange(n_test, dtype=np.int32) % classes,
        metadata={"name": "toy", "num_classes": classes},
    )


@pytest.mark.parametrize("kind", ["permuted", "class"])
def test_stripes_partition_every_task(kind):
    ds = _dataset()
    if kind == "permuted":
        tasks = continual.permuted_tasks(ds, 3, key=jax.random.key(0))
    else:
        tasks = continual.split_tasks(ds, 3, scenario="class")
    B = 16
    rows, count = stripes.stripe_tables(tasks, B)
    assert rows.shape[:2] == (3, B) and count.shape == (3, B)
    for t in range(3):
        n = int(tasks.train_count[t])
        members = tasks.train_index[t, :n]
        for k in range(B):  # stripe k: positions k, k + B, ... of the task's list, in order
            np.testing.assert_array_equal(rows[t, k, : count[t, k]], members[k::B])
            assert np.all(rows[t, k, count[t, k] :] == -1)
        assert count[t].sum() == n
        assert count[t].min() == n // B  # steps per epoch, as for batches of a shuffled list
        assert count[t].max() - count[t].min() <= 1


def test_shards_hold_disjoint_rows_covering_the_training_set():
    tasks = continual.permuted_tasks(_dataset(), 3, key=jax.random.key(0))
    rows, _ = stripes.stripe_tables(tasks, 16)
    held = [stripes.shard_rows(rows, d, 4) for d in range(4)]
    union = np.concatenate(held)
    assert len(union) == len(set(union.tolist())) == 203  # disjoint, every row once
    for d, r in enumerate(held):  # every task lists rows 0..202: stripe of row r is r mod 16
        np.testing.assert_array_equal(r, [i for i in range(203) if (i % 16) // 4 == d])


def test_gather_returns_the_rows_of_the_requested_positions():
    tasks = continual.split_tasks(_dataset(), 2, scenario="task")
    B = 8
    mesh = nte.make_mesh("data=1")
    data = stripes.StripedData(tasks, B, mesh)
    rows, count = stripes.stripe_tables(tasks, B)
    dev = data.arrays()
    rng = np.random.default_rng(1)
    for t in range(2):
        pos = np.stack([rng.integers(0, count[t, k], 3) for k in range(B)]).astype(np.int32)
        with jax.set_mesh(mesh):
            x, y = jax.jit(stripes.gather)(dev, jnp.int32(t), jnp.asarray(pos))
        want = np.take_along_axis(rows[t], pos, axis=1).reshape(-1)  # ordered by stripe
        np.testing.assert_array_equal(np.asarray(x), tasks.x_train[want])
        np.testing.assert_array_equal(np.asarray(y), tasks.y_train[want])
    np.testing.assert_array_equal(np.asarray(data.count), count)
