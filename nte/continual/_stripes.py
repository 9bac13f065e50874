"""Training data in stripes: every data-parallel device holds only the examples it trains on.

The examples of task t (its list `train_index[t]`) are dealt into `B` stripes, B the batch size:
the example at position p of the list goes to stripe k = p mod B. Every training batch takes one
example from every stripe (stripe k's example at step i is the i-th of a random order of stripe
k, a function of the seed, task, epoch and k only), and the batch is ordered by stripe. Device d
of the `"data"` mesh axis (of D devices) owns stripes `[d·B/D, (d+1)·B/D)`: it holds only the
rows of those stripes and gathers its part of every batch locally (inside `jax.shard_map`).
So the batches, and so the results, do not depend on D, no example moves between devices, and
each process keeps only the rows of its own devices (its slice of the training set).

An epoch has min_k |stripe k| = ⌊n_t / B⌋ steps (as many as batches of a shuffled list); the
examples left over are a different handful each epoch.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P
from jaxtyping import Array, Int

from .. import _distributed as dist
from ._tasks import Tasks


def stripe_tables(tasks: Tasks, n_stripes: int) -> tuple[np.ndarray, np.ndarray]:
    """`(rows, count)`: `rows[t, k, j]` is the dataset row of the j-th example of stripe k of
    task t (−1 beyond `count[t, k]`), `int32 [tasks, n_stripes, per_stripe]`."""
    per_stripe = -(-int(tasks.train_count.max()) // n_stripes)
    rows = np.full((tasks.n_tasks, n_stripes, per_stripe), -1, np.int32)
    count = np.zeros((tasks.n_tasks, n_stripes), np.int32)
    for t in range(tasks.n_tasks):
        members = tasks.train_index[t, : int(tasks.train_count[t])]
        for k in range(n_stripes):
            mine = members[k::n_stripes]
            rows[t, k, : len(mine)], count[t, k] = mine, len(mine)
    return rows, count


def shard_rows(rows: np.ndarray, shard: int, n_shards: int) -> np.ndarray:
    """The sorted dataset rows used by the stripes of data shard `shard`."""
    size = rows.shape[1] // n_shards
    mine = rows[:, shard * size : (shard + 1) * size]
    return np.unique(mine[mine >= 0])


class StripedData:
    """The training set of a run laid out in stripes over the `"data"` axis of `mesh`.

    **Fields** (global `jax.Array`s, the first two split over `"data"`):

    - `x`: `float32 [shards, rows_per_shard, features]`, the rows of each data shard;
    - `y`: `int32 [shards, rows_per_shard]`, their labels;
    - `index`: `int32 [tasks, stripes, per_stripe]`, split over stripes: the position, in its
      shard's rows, of the j-th example of stripe k of task t;
    - `count`: `int32 [tasks, stripes]` (replicated), the size of every stripe.
    """

    def __init__(self, tasks: Tasks, batch_size: int, mesh: jax.sharding.Mesh):
        n_shards = dist.axis_size(dist.DATA_AXIS, mesh)
        rows, count = stripe_tables(tasks, batch_size)
        shards = [shard_rows(rows, d, n_shards) for d in range(n_shards)]
        width = max(1, max(len(r) for r in shards))
        size = batch_size // n_shards
        local = np.zeros(rows.shape, np.int32)
        for d, r in enumerate(shards):
            part = rows[:, d * size : (d + 1) * size]
            local[:, d * size : (d + 1) * size] = np.where(
                part >= 0, np.searchsorted(r, np.maximum(part, 0)), 0
            )

        def slice_of(source: np.ndarray) -> Callable:
            def fill(index) -> np.ndarray:  # only called for this process's devices
                wanted = list(range(n_shards)[index[0]])
                out = np.empty((len(wanted), width, *source.shape[1:]), source.dtype)
                for i, d in enumerate(wanted):
                    np.take(source, shards[d], axis=0, out=out[i, : len(shards[d])])
                    out[i, len(shards[d]) :] = 0
                return out

            return fill

        split = dist.named(mesh, dist.DATA_AXIS)
        x_shape = (n_shards, width, tasks.num_features)
        self.x = jax.make_array_from_callback(x_shape, split, slice_of(tasks.x_train))
        self.y = jax.make_array_from_callback((n_shards, width), split, slice_of(tasks.y_train))
        self.index = dist.put(local, dist.named(mesh, None, dist.DATA_AXIS))
        self.count = dist.put(count, dist.named(mesh))
        self.shard_rows = shards  # the dataset rows held by each data shard

    def arrays(self) -> dict[str, jax.Array]:
        """The device arrays by name, to pass into the compiled programs."""
        names = ("x_stripes", "y_stripes", "stripe_index", "stripe_count")
        return dict(zip(names, (self.x, self.y, self.index, self.count)))


def gather(dev: dict, t: Int[Array, ""], pos: Int[Array, "stripes m"]):
    """The examples `pos[k, j]` (positions within stripe k) of task `t`, ordered by stripe:
    `(x [stripes·m, features], y [stripes·m])`, each device gathering its own stripes' rows."""

    def local(x, y, index, pos):  # this device's shard: x [1, rows, F], index/pos [S/D, ·]
        rows = jnp.take_along_axis(index, pos, axis=1).reshape(-1)
        return x[0][rows], y[0][rows]

    split = P(dist.DATA_AXIS)
    args = (dev["x_stripes"], dev["y_stripes"], dev["stripe_index"][t], pos)
    if dist.axis_size(dist.DATA_AXIS) == 1:
        return local(*args)
    return jax.shard_map(local, in_specs=(split,) * 4, out_specs=(split, split))(*args)
