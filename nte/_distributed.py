"""Devices, meshes and processes: the data-parallel runtime of `nte`, on JAX's own machinery.

Everything here is a thin layer over `jax.sharding` and `jax.distributed`:

- [`nte.make_mesh`][] builds the 2-D device mesh `("seed", "data")` used by the harness: the
  `"data"` axis splits every batch, the `"seed"` axis splits independent models (seeds).
- [`nte.initialize_distributed`][] starts JAX's multi-controller runtime (one Python process per
  host, all running the same program) with `jax.distributed.initialize`.
- [`nte.shard_batch`][] asks XLA to split the leading (batch) axis of arrays over `"data"` inside
  a jitted function that runs under `jax.set_mesh(mesh)`; outside a mesh it does nothing.

The helpers `put`, `to_host` and `is_main_process` move pytrees between the host and global
(possibly multi-process) `jax.Array`s.
"""

import os
import re
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P
from jaxtyping import PyTree

SEED_AXIS = "seed"
DATA_AXIS = "data"
AXES = (SEED_AXIS, DATA_AXIS)

_SPEC = re.compile(r"^\s*(seed|data)\s*=\s*(\d+)\s*$")


def parse_mesh(spec: str | Mapping[str, int] | None) -> dict[str, int]:
    """`"seed=2,data=2"` (or a dict, or `None`) → `{"seed": 2, "data": 2}`; absent axes are 1.

    A `None` entry (or `None` spec) leaves the data axis to be filled by the device count.
    """
    if spec is None:
        return {SEED_AXIS: 1, DATA_AXIS: None}
    if isinstance(spec, str):
        items = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            match = _SPEC.match(part)
            if match is None or match.group(1) in items:
                raise ValueError(
                    f"`mesh` must look like 'data=4' or 'seed=2,data=2' (axes 'seed' and 'data', "
                    f"each at most once, positive sizes), got {spec!r}."
                )
            items[match.group(1)] = int(match.group(2))
        spec = items
    if not isinstance(spec, Mapping) or not set(spec) <= set(AXES):
        raise ValueError(f"`mesh` may only name the axes {AXES}, got {spec!r}.")
    sizes = {SEED_AXIS: spec.get(SEED_AXIS, 1), DATA_AXIS: spec.get(DATA_AXIS, 1)}
    for name, size in sizes.items():
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"`mesh` axis {name!r} must be a positive int, got {size!r}.")
    return sizes


def make_mesh(mesh: str | Mapping[str, int] | None = None, *, devices: int | None = None) -> Mesh:
    """The `("seed", "data")` device mesh of a data-parallel run.

    Batches are split over the `"data"` axis (each device computes on `batch / data` examples;
    gradients and NTE log-likelihood sums are reduced across it); independent models (seeds)
    are split over the `"seed"` axis. Model and optimizer state are replicated over `"data"`.
    Both axes use `jax.sharding.AxisType.Auto` (XLA's SPMD partitioner inserts collectives).

    **Arguments:**

    - `mesh`: the axis sizes, `"data=4"`, `"seed=2,data=2"` or `{"seed": 2, "data": 2}` (absent
      axes have size 1). `None`: every device on the `"data"` axis.
    - `devices`: how many devices to use (the first `devices` of `jax.devices()`; default:
      the product of the axis sizes, or all devices when `mesh` is `None`). With several
      processes ([`nte.initialize_distributed`][]) a mesh must use every device of every process.

    **Returns:**

    A `jax.sharding.Mesh` with axes `("seed", "data")`.

    !!! example

        ```python
        mesh = nte.make_mesh("seed=2,data=2")  # 4 devices
        with jax.set_mesh(mesh):
            ...  # jitted code here may call nte.shard_batch
        ```
    """
    sizes = parse_mesh(mesh)
    available = jax.device_count()
    if devices is not None and (
        not isinstance(devices, int) or isinstance(devices, bool) or devices < 1
    ):
        raise ValueError(f"`devices` must be a positive int or None, got {devices!r}.")
    if sizes[DATA_AXIS] is None:
        n = available if devices is None else devices
        if n % sizes[SEED_AXIS]:
            raise ValueError(f"`devices` ({n}) must be divisible by the seed axis.")
        sizes[DATA_AXIS] = n // sizes[SEED_AXIS]
    total = sizes[SEED_AXIS] * sizes[DATA_AXIS]
    if devices is not None and devices != total:
        raise ValueError(f"`devices` ({devices}) must equal the mesh size {sizes} ({total}).")
    if total > available:
        raise ValueError(
            f"`mesh` {sizes} needs {total} devices but only {available} are available "
            f"({jax.default_backend()}); on CPU set XLA_FLAGS="
            f"--xla_force_host_platform_device_count={total} before importing jax."
        )
    if jax.process_count() > 1 and total != available:
        raise ValueError(
            f"With {jax.process_count()} processes the mesh must use all {available} devices, "
            f"got {sizes}."
        )
    shape = (sizes[SEED_AXIS], sizes[DATA_AXIS])
    grid = np.asarray(jax.devices()[:total]).reshape(shape)
    return Mesh(grid, AXES, axis_types=(AxisType.Auto, AxisType.Auto))


def axis_size(axis: str, mesh: Mesh | None = None) -> int:
    """The size of mesh axis `axis` in `mesh` (default: the mesh in context), 1 if absent."""
    mesh = jax.sharding.get_abstract_mesh() if mesh is None else mesh
    if mesh.empty or axis not in mesh.axis_names:
        return 1
    return int(mesh.shape[axis])


def check_divisible(value: int, axis: str, name: str, mesh: Mesh | None = None) -> None:
    """Raise `ValueError` unless `value` is divisible by the size of mesh axis `axis`."""
    size = axis_size(axis, mesh)
    if value % size:
        what = "examples" if axis == DATA_AXIS else "seeds"
        raise ValueError(
            f"`{name}` ({value}) must be divisible by the size of the {axis!r} mesh axis "
            f"({size}): every device gets the same number of {what}. Choose a `{name}` that "
            f"is a multiple of {size}, or fewer devices."
        )


def shard_batch(tree: PyTree) -> PyTree:
    """Split the leading (batch) axis of every array in `tree` over the `"data"` mesh axis.

    A sharding constraint for use inside `jax.jit` under `jax.set_mesh(mesh)`: XLA then runs the
    per-example work of each device on its slice of the batch and reduces sums/means across
    devices. Without a mesh in context, or with a `"data"` axis of size 1, `tree` is returned
    unchanged. Under `jax.vmap(..., spmd_axis_name="seed")` the vmapped axis is split over
    `"seed"`.

    **Arguments:**

    - `tree`: a pytree of arrays with a common leading batch axis, divisible by the data axis.

    **Returns:**

    `tree`, with the sharding constraint applied.
    """
    if axis_size(DATA_AXIS) == 1:
        return tree
    for leaf in jax.tree_util.tree_leaves(tree):
        check_divisible(leaf.shape[0], DATA_AXIS, "batch_size")
    return jax.lax.with_sharding_constraint(tree, P(DATA_AXIS))


def initialize_distributed(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    bind_address: str | None = None,
    timeout: int = 300,
) -> bool:
    """Start JAX's multi-controller runtime (`jax.distributed.initialize`) if asked to.

    Run the same program once per host (process); afterwards `jax.devices()` lists the devices
    of every process and a [`nte.make_mesh`][] spans them all. On CPU the cross-process
    collectives use gloo (`jax_cpu_collectives_implementation`).

    **Arguments:**

    - `coordinator`: `"host:port"` of process 0's coordinator service, or `"auto"` to let JAX
      detect a cluster (SLURM, Open MPI, Cloud TPU, ...) and read everything from it.
    - `num_processes`: the number of processes.
    - `process_id`: this process's index in `[0, num_processes)`.
    - `bind_address`: the address the coordinator (process 0) binds, e.g. `"127.0.0.1:1234"`
      (default: all interfaces, JAX's default).
    - `timeout`: seconds to wait for every process to join.

    When all three of `coordinator`, `num_processes`, `process_id` are `None`, the runtime is
    started only if the environment variable `JAX_COORDINATOR_ADDRESS` is set (JAX then reads
    `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID` too); otherwise this is a no-op (one process).
    Call it before anything else touches a device.

    **Returns:**

    `True` if the distributed runtime was initialized.
    """
    given = (coordinator, num_processes, process_id)
    if coordinator == "auto":
        coordinator = None  # jax.distributed.initialize() detects the cluster
    elif all(v is None for v in given):
        if "JAX_COORDINATOR_ADDRESS" not in os.environ:
            return False
    elif any(v is None for v in given):
        raise ValueError(
            "`coordinator`, `num_processes` and `process_id` must be given together, got "
            f"{coordinator!r}, {num_processes!r}, {process_id!r}."
        )
    else:
        if not isinstance(coordinator, str) or ":" not in coordinator:
            raise ValueError(f"`coordinator` must be 'host:port', got {coordinator!r}.")
        if not isinstance(num_processes, int) or num_processes < 1:
            raise ValueError(f"`num_processes` must be a positive int, got {num_processes!r}.")
        if not isinstance(process_id, int) or not 0 <= process_id < num_processes:
            raise ValueError(f"`process_id` must be in [0, {num_processes}), got {process_id!r}.")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator,
        num_processes,
        process_id,
        coordinator_bind_address=bind_address,
        initialization_timeout=timeout,
    )
    return True


def is_main_process() -> bool:
    """Whether this is process 0 (the one that writes results and checkpoints)."""
    return jax.process_index() == 0


def put(tree: PyTree, sharding: NamedSharding) -> PyTree:
    """Place host values (numpy or single-device arrays, the same on every process) on `mesh`.

    Typed PRNG key arrays are placed through their raw key data. Non-array leaves are kept.
    """

    def one(leaf):
        if not isinstance(leaf, (jax.Array, np.ndarray)):
            return leaf
        if isinstance(leaf, jax.Array) and leaf.sharding.is_equivalent_to(sharding, leaf.ndim):
            return leaf  # already in place
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            return jax.device_put(leaf, sharding)  # a global array: reshard it
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            impl = jax.random.key_impl(leaf)
            data = one(np.asarray(jax.random.key_data(leaf)))
            return jax.jit(lambda d: jax.random.wrap_key_data(d, impl=impl))(data)
        return jax.device_put(np.asarray(leaf), sharding)

    return jax.tree_util.tree_map(one, tree)


def to_host(tree: PyTree) -> PyTree:
    """Every array leaf readable on this process: arrays spread over several processes are
    gathered (a collective: call it on every process); other leaves are returned unchanged."""

    def one(leaf):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
                impl = jax.random.key_impl(leaf)
                data = one(jax.random.key_data(leaf))
                return jax.random.wrap_key_data(data, impl=impl)
            from jax.experimental import multihost_utils

            return multihost_utils.process_allgather(leaf, tiled=True)
        return leaf

    return jax.tree_util.tree_map(one, tree)


def named(mesh: Mesh, *spec: Any) -> NamedSharding:
    """`NamedSharding(mesh, PartitionSpec(*spec))`."""
    return NamedSharding(mesh, P(*spec))
