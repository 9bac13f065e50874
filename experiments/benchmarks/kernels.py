"""Benchmark the analytic infinite-width kernels on 10,000 × 10,000 Fashion-MNIST images.

The NNGP and NTK of a depth-2 ReLU `nte.nn.MLP` (NTK parameterization), `nte.kernels.nngp`
and `nte.kernels.ntk` of `x` with itself. Each kernel is timed for one call (compilation
included; it is under a second), in wall-clock and process CPU seconds (the CPU time is the
fairer number on a shared machine), and the process's peak resident memory (`ru_maxrss`) is
printed after each; the `[n, n]` result alone takes `n² · 4` bytes in float32 (`· 8` with `--x64`).

    python -m experiments.benchmarks.kernels [--n 10000] [--x64]
"""

import argparse
import resource
import time

import jax
import numpy as np

import nte


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(
        prog="python -m experiments.benchmarks.kernels",
        description=__doc__,
        formatter_class=nte.continual.HelpFormatter,
    )
    p.add_argument("--n", type=int, default=10_000, help="images (the kernel is n × n)")
    p.add_argument("--depth", type=int, default=2, help="hidden layers")
    p.add_argument("--x64", action="store_true", help="compute in float64")
    args = p.parse_args(argv)
    if args.x64:
        jax.config.update("jax_enable_x64", True)
    data = nte.data.load("fashion_mnist")
    x = data.x_train[: args.n].reshape(args.n, -1)
    x = (x - x.mean(0)) / np.sqrt(np.mean((x - x.mean(0)) ** 2))
    x = x.astype(np.float64 if args.x64 else np.float32)  # the kernels keep the input's dtype
    model = nte.nn.MLP(784, 1, args.depth, 1, parameterization="ntk", key=jax.random.key(0))
    dtype = "float64" if args.x64 else "float32"
    print(f"{args.n} x {args.n} kernels, depth-{args.depth} ReLU MLP, {dtype}; "
          f"peak RSS before: {_peak_mib():.0f} MiB")  # fmt: skip
    results = {}
    for name in ("nngp", "ntk"):
        start, cpu = time.perf_counter(), time.process_time()
        kernel = jax.block_until_ready(getattr(nte.kernels, name)(model, x))
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        results[name] = dict(seconds=seconds, cpu_seconds=cpu, peak_rss_mib=_peak_mib())
        size = kernel.size * kernel.dtype.itemsize / 2**20
        finite = bool(np.isfinite(np.asarray(kernel)).all())
        print(f"{name}: {seconds:.1f} s wall, {cpu:.1f} s CPU, peak RSS {_peak_mib():.0f} MiB "
              f"(result {size:.0f} MiB), finite: {finite}")  # fmt: skip
        del kernel
    return results


if __name__ == "__main__":
    main()
