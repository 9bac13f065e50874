"""Data parallelism for [`nte.continual.run`][]: which device holds what, and where it is compiled.

The harness compiles each of its programs (train chunk, end of task, evaluation) once under
`jax.set_mesh(mesh)` with the ("seed", "data") mesh of [`nte.make_mesh`][]:

- the training state and the PRNG keys are `[seeds, ...]` arrays split over `"seed"` and
  replicated over `"data"`; the training rows are in stripes over `"data"` (each device holds
  only the rows of its own stripes, `_stripes.py`); test sets and task tables are replicated;
- inside the training loop every batch is split over `"data"` ([`nte.shard_batch`][]) and the
  `vmap` over seeds is split over `"seed"` (`spmd_axis_name`). XLA's SPMD partitioner turns
  the mean-batch gradient of SGD/Adam into per-device partial sums plus an all-reduce; the NTE
  learner computes its log-likelihood sums per shard with [`nte.sharded_expert_log_likelihoods`][]
  (`shard_map` + `psum`). The learner code is unchanged: it sees the whole batch.
- evaluation accuracies and losses are returned replicated (readable on every process); the
  state is gathered to process 0 before a checkpoint is written, and only process 0 writes.
"""

from collections.abc import Callable
from typing import Any

import jax
from jaxtyping import PyTree

from .. import _distributed as dist

# Output shardings of the harness's programs (by name): `S` split over seeds, `R` replicated.
# The train chunk returns (state, loss, finite); `finite` and `health` are the checks of
# `_run.py`, read on every process so that all stop together.
_OUT = {
    "init": "S", "train": ("S", "R", "R"), "end_task": "S", "evaluate": "R",
    "finite": "R", "health": "R",
}  # fmt: skip
SEED_AXIS = dist.SEED_AXIS


class DataParallel:
    """The devices of one run (built from the `training` and `devices` config sections)."""

    def __init__(self, training: Any, devices: Any):
        self.mesh = dist.make_mesh(devices.mesh, devices=devices.devices)
        dist.check_divisible(training.batch_size, dist.DATA_AXIS, "batch_size", self.mesh)
        dist.check_divisible(training.seeds, dist.SEED_AXIS, "seeds", self.mesh)
        self.seeds = dist.named(self.mesh, dist.SEED_AXIS)
        self.replicated = dist.named(self.mesh)
        self.is_main = dist.is_main_process()

    def place_seeds(self, tree: PyTree) -> PyTree:
        """Split `[seeds, ...]` arrays over the `"seed"` mesh axis."""
        return dist.put(tree, self.seeds)

    def place(self, state: PyTree, keys: PyTree, data: PyTree) -> tuple[PyTree, PyTree, PyTree]:
        """Put the stacked states and keys (split over seeds) and the task data (replicated)."""
        put = dist.put
        return put(state, self.seeds), put(keys, self.seeds), put(data, self.replicated)

    def lower(self, name: str, fn: Callable, *args: Any, static_argnames=(), **static: Any):
        """`jax.jit(fn).lower(*args)` under the mesh, with the output shardings of `name`."""
        pick = {"S": self.seeds, "R": self.replicated}
        out = _OUT.get(name)  # an unknown program: let XLA choose its output shardings
        kw = {} if out is None else {"out_shardings": jax.tree_util.tree_map(pick.get, out)}
        with jax.set_mesh(self.mesh):
            jitted = jax.jit(fn, static_argnames=static_argnames, **kw)
            return jitted.lower(*args, **static)

    def host(self, tree: PyTree) -> PyTree:
        """`tree` readable on this process (a collective when seeds span several processes)."""
        return dist.to_host(tree)


shard_batch = dist.shard_batch
is_main = dist.is_main_process
