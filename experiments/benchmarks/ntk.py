"""Benchmark the empirical-NTK methods side by side.

A 784-1000-1000-10 ReLU MLP (`--model mlp`), `nte.nn.CNN` on 1×28×28 inputs (`--model cnn`,
channels 16, 32) or the same CNN as an `eqx.nn.Sequential` (`--model seqcnn`); Θ(x, x) for 100
inputs (a 100×100 traced kernel). Each method runs in its own subprocess, so its peak memory is
measured in isolation:

- time: one run of the compiled function (compilation timed separately);
- peak RSS: `VmHWM` of the subprocess (whole process: Python + JAX runtime + the computation);
- XLA temp: the compiled executable's `memory_analysis().temp_size_in_bytes`.

Ratios are to `"jacobian"`; "rel. diff" is max|Θ_m − Θ_jacobian| / max|Θ_jacobian|.

    python -m experiments.benchmarks.ntk [--n 100] [--width 1000] [--model mlp|cnn|seqcnn]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from .._help import HelpFormatter

METHODS = ("jacobian", "ntvp", "structured")


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return -1


def _model(name: str, width: int):
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    import nte

    key = jax.random.key(0)
    if name == "mlp":
        return nte.nn.MLP(784, width, 2, 10, key=key)
    cnn = nte.nn.CNN((1, 28, 28), 10, channels=(16, 32), key=key)
    if name == "cnn":
        return cnn
    relu = eqx.nn.Lambda(jax.nn.relu)
    layers = [eqx.nn.Lambda(lambda x: jnp.reshape(x, (1, 28, 28))), cnn.convs[0], relu]
    layers += [cnn.convs[1], relu, eqx.nn.Lambda(jnp.ravel), cnn.head]
    return eqx.nn.Sequential(layers)


def worker(method: str, n: int, width: int, out: str, model_name: str = "mlp") -> None:
    import equinox as eqx
    import jax
    import numpy as np

    import nte
    from nte._internal._io import atomic_write

    model = _model(model_name, width)
    x = jax.random.normal(jax.random.key(1), (n, 784))
    fn = eqx.filter_jit(lambda m, xs: nte.empirical_ntk(m, xs, method=method))
    start = time.perf_counter()
    compiled = fn.lower(model, x).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    kernel = jax.block_until_ready(compiled(model, x))
    run_s = time.perf_counter() - start
    temp = compiled.compiled.memory_analysis().temp_size_in_bytes
    atomic_write(out + ".npy", lambda f: np.save(f, np.asarray(kernel)), binary=True)
    result = dict(compile_s=compile_s, run_s=run_s, peak_rss=_peak_rss_bytes(), xla_temp=temp)
    print(json.dumps(result))


def _run(method: str, n: int, width: int, folder: str, model: str) -> dict:
    out = os.path.join(folder, method)
    cmd = [sys.executable, "-m", "experiments.benchmarks.ntk", "--worker", method]
    cmd += ["--n", str(n), "--width", str(width), "--out", out, "--model", model]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return dict(error=(proc.stderr.strip().splitlines() or ["?"])[-1])
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["kernel"] = out + ".npy"
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.benchmarks.ntk",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--n", type=int, default=100, help="images (the kernel is n × n)")
    parser.add_argument("--width", type=int, default=1000, help="hidden width (mlp)")
    parser.add_argument(
        "--model", choices=("mlp", "cnn", "seqcnn"), default="mlp", help="the network"
    )
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)  # internal
    parser.add_argument("--out", help=argparse.SUPPRESS)  # internal
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.n, args.width, args.out, args.model)

    import numpy as np

    names = {
        "mlp": f"a 784-{args.width}-{args.width}-10 ReLU MLP",
        "cnn": "nte.nn.CNN((1, 28, 28), 10, channels=(16, 32))",
        "seqcnn": "the same CNN as an eqx.nn.Sequential",
    }
    print(f"NTK of {names[args.model]}, {args.n}x{args.n} traced")
    with tempfile.TemporaryDirectory() as folder:
        results = {m: _run(m, args.n, args.width, folder, args.model) for m in METHODS}
        ref = results["jacobian"]
        ref_kernel = np.load(ref["kernel"]) if "kernel" in ref else None
        head = f"{'method':<11}{'run s':>9}{'x jac':>8}{'compile s':>11}{'peak RSS MB':>13}"
        head += f"{'x jac':>8}{'XLA temp MB':>13}{'rel. diff':>11}"
        print(head)
        for m, r in results.items():
            if "error" in r:
                print(f"{m:<11} failed: {r['error']}")
                continue
            diff = float("nan")
            ratio_t = ratio_m = float("nan")
            if ref_kernel is not None:
                kernel = np.load(r["kernel"])
                diff = np.abs(kernel - ref_kernel).max() / np.abs(ref_kernel).max()
                ratio_t = r["run_s"] / ref["run_s"]
                ratio_m = r["peak_rss"] / ref["peak_rss"]
            print(
                f"{m:<11}{r['run_s']:>9.3f}{ratio_t:>8.3f}{r['compile_s']:>11.2f}"
                f"{r['peak_rss'] / 2**20:>13.0f}{ratio_m:>8.3f}{r['xla_temp'] / 2**20:>13.0f}"
                f"{diff:>11.2e}"
            )


if __name__ == "__main__":
    main()
