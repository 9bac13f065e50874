"""Time and memory of one NTE posterior step vs plain SGD (784-1000-1000-10 ReLU MLP, B=128,
the first 128 Fashion-MNIST training images).

Each method runs in its own subprocess; `ms/step` is the median and `min ms` the fastest of
`--repeats` steps (on a shared or noisy machine the minimum is the steadier figure: noise only
adds time). Reported memory:
- `rss`: the subprocess's peak resident set size (`resource.getrusage(...).ru_maxrss`), i.e. the
  whole process (Python + XLA runtime + buffers) high-water mark;
- `xla`: XLA's compiled memory analysis of the jitted step (arguments + outputs + temporaries).
The largest width fitting in 8 GiB is found from the XLA figure: the step is compiled (not run)
at widths 250, 500, 1000, 2000, the bytes fitted as a + b·w + c·w² (exact for these MLPs: every
buffer is O(B·w), O(w) or O(w²)), and the quadratic solved for 8 GiB.

Run: `python -m experiments.benchmarks.nte_step` (add `--quick` for a smoke test).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

METHODS = ("sgd", "vmap", "chunked", "series")
GiB = 2**30


def _batch(batch: int):
    """The first `batch` Fashion-MNIST training images (real data: the series' convergence
    bound depends on the input scale) or, without the files, uniform [0, 1) pixels."""
    import jax
    import jax.numpy as jnp

    import nte

    try:
        data = nte.data.load("fashion_mnist")
        x = jnp.asarray(data.x_train[:batch].reshape(batch, -1))
        return x, jnp.asarray(data.y_train[:batch])
    except (FileNotFoundError, ValueError):
        x = jax.random.uniform(jax.random.key(1), (batch, 784))
        return x, jax.random.randint(jax.random.key(2), (batch,), 0, 10)


def _build(method: str, width: int, batch: int, chunk: int | None):
    import jax
    import jax.numpy as jnp
    import optax

    import nte

    model = nte.nn.MLP(784, width, 2, 10, key=jax.random.key(0))
    params, static = nte.split(model)
    x, y = _batch(batch)

    def loss(m, xi, yi):
        return -jax.nn.log_softmax(m(xi))[yi]

    if method == "sgd":
        opt = optax.sgd(0.01)

        def step(params, state, x, y):
            def mean_loss(p):
                return jnp.mean(jax.vmap(lambda a, b: loss(nte.merge(p, static), a, b))(x, y))

            updates, state = opt.update(jax.grad(mean_loss)(params), state, params)
            return optax.apply_updates(params, updates), state
    else:
        opt = nte.nte(0.01)

        def step(params, state, x, y):
            model = nte.merge(params, static)
            if method == "vmap":
                updates = nte.per_example_grads(loss, model, x, y)
            else:
                updates = nte.expert_log_likelihoods(
                    loss,
                    model,
                    x,
                    y,
                    signs=state.signs,
                    inv_temperature=0.01,
                    method=method,
                    chunk_size=chunk,
                )
            updates, state = opt.update(updates, state, params)
            return optax.apply_updates(params, updates), state

    state = opt.init(params)
    return jax.jit(step), (params, state, x, y)


def _xla_bytes(method, width, batch, chunk) -> int:
    step, args = _build(method, width, batch, chunk)
    compiled = step.lower(*args).compile()
    m = compiled.memory_analysis()
    return int(
        m.argument_size_in_bytes
        + m.output_size_in_bytes
        + m.temp_size_in_bytes
        - m.alias_size_in_bytes
    )


def child(method: str, width: int, batch: int, chunk: int | None, repeats: int, widths) -> dict:
    import jax

    step, (params, state, x, y) = _build(method, width, batch, chunk)
    xla = _xla_bytes(method, width, batch, chunk)
    for _ in range(2):  # compile + warm up
        params, state = step(params, state, x, y)
    jax.block_until_ready(params)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        params, state = step(params, state, x, y)
        jax.block_until_ready(params)
        times.append(time.perf_counter() - t)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    scaling = {w: _xla_bytes(method, w, batch, chunk) for w in widths}
    times = sorted(times)
    return dict(
        method=method,
        time=times[len(times) // 2],
        min_time=times[0],
        rss=rss,
        xla=xla,
        scaling=scaling,
    )


def largest_width(scaling: dict, budget: float = 8 * GiB) -> float:
    import numpy as np

    w = np.array(sorted(int(k) for k in scaling), float)
    b = np.array([scaling[k] for k in sorted(scaling, key=int)], float)
    c2, c1, c0 = np.polyfit(w, b, 2)
    roots = np.roots([c2, c1, c0 - budget])
    real = [r.real for r in roots if abs(r.imag) < 1e-9 and r.real > 0]
    return max(real) if real else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", default=None)
    parser.add_argument("--width", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--chunk-size", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    widths = [64, 128] if args.quick else [250, 500, 1000, 2000]
    if args.child:
        out = child(args.child, args.width, args.batch, args.chunk_size, args.repeats, widths)
        print("RESULT " + json.dumps(out))
        return
    if args.quick:
        args.width, args.repeats = 128, 2
    rows = []
    for method in METHODS:
        cmd = [
            sys.executable,
            "-m",
            "experiments.benchmarks.nte_step",
            "--child",
            method,
            "--width",
            str(args.width),
            "--batch",
            str(args.batch),
            "--repeats",
            str(args.repeats),
        ] + (["--quick"] if args.quick else [])
        if args.chunk_size:
            cmd += ["--chunk-size", str(args.chunk_size)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not line:
            print(proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"{method} failed")
        rows.append(json.loads(line[0][7:]))
    sgd = rows[0]
    print(
        f"784-{args.width}-{args.width}-10 ReLU MLP, batch {args.batch}, "
        f"chunk_size={args.chunk_size or 'default'}"
    )
    print(
        f"{'method':8} {'ms/step':>9} {'x SGD':>7} {'min ms':>8} {'x SGD':>7} "
        f"{'peak RSS MiB':>13} {'x SGD':>6} {'XLA MiB':>9} {'x SGD':>7} "
        f"{'max width @8GiB (XLA)':>22}"
    )
    for r in rows:
        print(
            f"{r['method']:8} {1e3 * r['time']:9.1f} {r['time'] / sgd['time']:7.2f} "
            f"{1e3 * r['min_time']:8.1f} {r['min_time'] / sgd['min_time']:7.2f} "
            f"{r['rss'] / 2**20:13.0f} {r['rss'] / sgd['rss']:6.2f} "
            f"{r['xla'] / 2**20:9.1f} {r['xla'] / sgd['xla']:7.2f} "
            f"{largest_width(r['scaling']):22.0f}"
        )


if __name__ == "__main__":
    main()
