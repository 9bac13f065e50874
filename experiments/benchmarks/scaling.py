"""Data-parallel scaling: training steps per second and per-device memory on 1, 2 and 4 devices.

    python -m experiments.benchmarks.scaling                 # forced CPU devices 1, 2, 4
    python -m experiments.benchmarks.scaling --gpu           # on the local GPU(s)

One training step of each learner on a batch of a 784-width-width-10 MLP: `sgd`
(`make_learner("sgd")`), `nte` (`make_learner("nte")` with its default memory-saving
`method="auto"`) and `nte_vmap` (`method="vmap"`, which materializes the batch × parameters
per-example gradients), compiled with `jax.jit` under a `("seed", "data")` mesh: the batch is
split over `data` devices ([`nte.shard_batch`][]), the state is replicated, the NTE
log-likelihood sums are computed per device and `psum`med. Each configuration runs in a fresh
subprocess (forced CPU devices must be set before JAX starts). Reported per configuration:

- `steps/s`: steps per second (median of `--repeats` timings of `--steps` steps);
- `XLA MiB/dev`: the per-device memory of the compiled step from XLA's `memory_analysis()`
  (arguments + outputs + temporaries − aliased), i.e. the peak the program needs on one device;
- `temp MiB/dev`: the temporaries alone (the per-example work: it shrinks with the device
  count where it is proportional to the batch, as for `nte_vmap`; `nte`'s chunks are already
  bounded independently of the batch, and the replicated parameters do not shrink);
- `peak MiB/dev`: the device allocator's peak (`memory_stats()`, GPU/TPU only).

Forced CPU devices share the host's cores, so on CPU the steps/s column measures overhead, not
speed-up; the memory columns are what scale. `--gpu` times SGD and NTE at widths 1000 and 10000
on the real accelerator(s) (all local devices on `data`) and searches the largest width whose NTE
step fits in device memory (doubling, then bisection). `--malloc LIB` times every CPU
configuration twice, with the default malloc and with `LD_PRELOAD=LIB`, side by side: for wide
models a caching allocator such as tcmalloc avoids re-faulting the pages of every large temporary
at each step (see docs/scale.md, "Wide models on CPU").
"""

import argparse
import json
import os
import subprocess
import sys
import time

from .._help import HelpFormatter


def _step_program(learner_name: str, width: int, batch: int, devices: int | None):
    """The compiled step, its inputs and the mesh, for `learner_name` at `width`."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import numpy as np

    import nte
    from nte._distributed import named, put
    from nte.continual import Task

    mesh = nte.make_mesh(devices=devices)
    learner = {
        "sgd": lambda: nte.continual.make_learner("sgd", lr=0.01),
        "nte": lambda: nte.continual.make_learner("nte", beta=0.01),  # "auto": series / chunks
        "nte_vmap": lambda: nte.continual.make_learner("nte", beta=0.01, method="vmap"),  # B×N
    }[learner_name]()
    k1, k2, k3, k4 = jax.random.split(jax.random.key(0), 4)
    model = nte.nn.MLP(784, width, 2, 10, key=k1)
    arrays, static = eqx.partition(learner.init(model, key=k2), eqx.is_array)
    x = np.asarray(jax.random.uniform(k3, (batch, 784)))
    y = np.asarray(jax.random.randint(k4, (batch,), 0, 10))
    task = Task(jnp.int32(0), jnp.ones(10, bool))
    rep, split = named(mesh), named(mesh, "data")
    arrays, task = put(arrays, rep), put(task, rep)
    x, y = put(x, split), put(y, split)

    def step(arrays, x, y, task):
        state, aux = learner.step(eqx.combine(arrays, static), nte.shard_batch(x), y, task)
        return eqx.filter(state, eqx.is_array), aux["loss"]

    with jax.set_mesh(mesh):
        compiled = jax.jit(step, out_shardings=rep, donate_argnums=0).lower(arrays, x, y, task)
        compiled = compiled.compile()
    return compiled, (arrays, x, y, task), mesh


def measure(learner: str, width: int, batch: int, devices: int | None, steps: int, repeats: int):
    """Time `steps` steps `repeats` times; return the row of the table."""
    import jax
    import numpy as np

    t0 = time.perf_counter()
    compiled, (arrays, x, y, task), mesh = _step_program(learner, width, batch, devices)
    compile_s = time.perf_counter() - t0
    arrays, loss = compiled(arrays, x, y, task)  # warm-up
    jax.block_until_ready(arrays)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(steps):
            arrays, loss = compiled(arrays, x, y, task)
        jax.block_until_ready(arrays)
        times.append((time.perf_counter() - t) / steps)
    mem = compiled.memory_analysis()
    program = mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
    program -= mem.alias_size_in_bytes
    stats = [d.memory_stats() or {} for d in mesh.devices.flat]
    peak = max((s.get("peak_bytes_in_use", 0) for s in stats), default=0)
    mib = 2.0**-20
    return {
        "learner": learner,
        "devices": int(mesh.devices.size),
        "platform": jax.default_backend(),
        "width": width,
        "batch": batch,
        "batch_per_device": batch // int(mesh.shape["data"]),
        "step_ms": 1e3 * float(np.median(times)),
        "steps_per_s": 1.0 / float(np.median(times)),
        "xla_mib_per_device": program * mib,
        "temp_mib_per_device": mem.temp_size_in_bytes * mib,
        "peak_mib_per_device": peak * mib if peak else None,
        "compile_s": compile_s,
        "loss": float(loss),
    }


def _subprocess(args: list[str], devices: int | None, timeout: float, preload: str = "") -> dict:
    env = dict(os.environ)
    if preload:  # another malloc (e.g. tcmalloc) for the whole subprocess
        env["LD_PRELOAD"] = preload
    if devices is not None:  # forced CPU devices
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
        env["JAX_PLATFORMS"] = "cpu"
    cmd = [sys.executable, "-m", "experiments.benchmarks.scaling", "--one", *args]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout}s"}
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _row(r: dict) -> str:
    if "error" in r:
        return f"{r.get('learner', '?'):<6} error: {r['error'][:90]}"
    peak = "-" if r["peak_mib_per_device"] is None else f"{r['peak_mib_per_device']:.1f}"
    return (
        f"{r['learner']:<6} {r['platform']:<5} {r['devices']:>3} {r['width']:>6} {r['batch']:>6} "
        f"{r['batch_per_device']:>7} {r['step_ms']:>9.2f} {r['steps_per_s']:>8.1f} "
        f"{r['xla_mib_per_device']:>11.1f} {r['temp_mib_per_device']:>12.1f} {peak:>12} "
        f"{r.get('malloc', _malloc_name(''))}"
    )


def _malloc_name(preload: str) -> str:
    """The malloc a subprocess runs with: `preload`, else one already in `LD_PRELOAD`."""
    preload = preload or os.environ.get("LD_PRELOAD", "")
    return os.path.basename(preload) if preload else "default"


def _speedup(default: dict, other: dict) -> str:
    """The line comparing a configuration's default-malloc row with its `--malloc` row."""
    if "error" in default or "error" in other:
        return "       (no speed-up: a run failed)"
    ratio = default["step_ms"] / other["step_ms"]
    return f"       {other['malloc']}: {ratio:.2f}x the default malloc's steps/s"


HEADER = (
    f"{'learner':<6} {'plat':<5} {'dev':>3} {'width':>6} {'batch':>6} {'b/dev':>7} "
    f"{'step ms':>9} {'steps/s':>8} {'XLA MiB/dev':>11} {'temp MiB/dev':>12} {'peak MiB/dev':>12} "
    "malloc"
)


def _fits(learner: str, width: int, args) -> bool:
    cmd = [learner, str(width), str(args.batch), "all", "1", "1"]
    r = _subprocess(cmd, None, args.timeout)
    return "error" not in r


def _largest_width(learner: str, args) -> int:
    """The largest width (to `--resolution`) whose step compiles and runs on the device."""
    lo, hi = 0, args.start_width
    while _fits(learner, hi, args):  # doubling
        lo, hi = hi, 2 * hi
        if hi > args.max_width:
            return lo
    while hi - lo > args.resolution:  # bisection
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if _fits(learner, mid, args) else (lo, mid)
    return lo


def main() -> None:
    p = argparse.ArgumentParser(
        prog="python -m experiments.benchmarks.scaling",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    p.add_argument("--learners", default="sgd,nte,nte_vmap", help="comma-separated learners")
    p.add_argument("--devices", default="1,2,4", help="forced CPU device counts")
    p.add_argument("--width", type=int, default=1000, help="hidden width")
    p.add_argument("--batch", type=int, default=128, help="examples per step")
    p.add_argument("--steps", type=int, default=5, help="timed steps")
    p.add_argument("--repeats", type=int, default=3, help="repetitions")
    p.add_argument("--timeout", type=float, default=600, help="seconds per subprocess")
    p.add_argument("--gpu", action="store_true", help="use the real accelerator(s)")
    p.add_argument("--gpu-widths", default="1000,10000", help="--gpu: widths timed")
    p.add_argument("--start-width", type=int, default=10000, help="--gpu: search start")
    p.add_argument("--max-width", type=int, default=200000, help="--gpu: search limit")
    p.add_argument("--resolution", type=int, default=1000, help="--gpu: search resolution")
    p.add_argument("--malloc", default=None, metavar="LIB",
                   help="also time every configuration with LD_PRELOAD=LIB (e.g. tcmalloc's "
                   "libtcmalloc_minimal.so.4) and print the speed-up")  # fmt: skip
    p.add_argument("--json", default=None, help="also write the rows to this file")
    p.add_argument("--one", nargs=6, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:  # inside a subprocess: learner width batch devices steps repeats
        learner, width, batch, devices, steps, repeats = args.one
        devices = None if devices == "all" else int(devices)
        row = measure(learner, int(width), int(batch), devices, int(steps), int(repeats))
        print(json.dumps(row))
        return
    learners = args.learners.split(",")
    if args.malloc and not os.path.isfile(args.malloc):
        p.error(
            f"--malloc: expected the path of a shared library, got {args.malloc!r} (not a file)"
        )
    rows = []
    print(HEADER)
    if args.gpu:
        for width in map(int, args.gpu_widths.split(",")):
            for learner in learners:
                one = [learner, str(width), str(args.batch), "all", str(args.steps)]
                rows.append(_subprocess([*one, str(args.repeats)], None, args.timeout))
                rows[-1].setdefault("learner", learner)
                print(_row(rows[-1]), flush=True)
        largest = _largest_width("nte", args)
        print(f"largest NTE width that fits (batch {args.batch}, ±{args.resolution}): {largest}")
        rows.append({"largest_nte_width": largest, "batch": args.batch})
    else:
        for learner in learners:
            for n in map(int, args.devices.split(",")):
                one = [learner, str(args.width), str(args.batch), str(n), str(args.steps)]
                for preload in ["", args.malloc] if args.malloc else [""]:
                    rows.append(_subprocess([*one, str(args.repeats)], n, args.timeout, preload))
                    rows[-1].setdefault("learner", learner)
                    rows[-1]["malloc"] = _malloc_name(preload)
                    print(_row(rows[-1]), flush=True)
                if args.malloc:
                    print(_speedup(rows[-2], rows[-1]), flush=True)
    if args.json:
        from nte._internal._io import atomic_write_json

        atomic_write_json(args.json, rows)


if __name__ == "__main__":
    main()
