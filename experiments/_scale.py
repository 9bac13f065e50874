"""Command-line flags for multi-host runs, shared by the experiment scripts.

`--devices` and `--mesh` are fields of `nte.continual.Config` (flags of their own); the flags here
start JAX's multi-controller runtime before anything touches a device.
"""

import argparse

import nte

FLAGS = ("coordinator", "num_processes", "process_id")


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Add `--coordinator host:port --num-processes N --process-id i` to `parser`."""
    group = parser.add_argument_group(
        "multi-host (jax.distributed; or set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, "
        "JAX_PROCESS_ID)"
    )
    group.add_argument("--coordinator", default=None, help="host:port of process 0")
    group.add_argument("--num-processes", type=int, default=None)
    group.add_argument("--process-id", type=int, default=None)


def setup(args: dict) -> bool:
    """Pop the multi-host flags from `args`, start `jax.distributed` if asked; `True` on the
    process that writes results (process 0)."""
    nte.initialize_distributed(*(args.pop(name) for name in FLAGS))
    return nte.is_main_process()
