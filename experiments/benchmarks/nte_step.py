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

A second table ("where the series step's time goes") times, in one process and inside compiled
`lax.scan` loops of `--repeats` steps (as a training loop runs them), the whole SGD and series
steps and their parts: the taps (forward + per-example backprop signals), the taps plus the
3-order series of every tapped weight with no control flow (what the series costs at least),
and the posterior update alone. Parts that are not steps reduce their outputs to one scalar
(one extra read of each output). Taps + series + update is a lower bound for the series step
of this design on the machine; its ratio to SGD is printed.

Run: `python -m experiments.benchmarks.nte_step` (add `--quick` for a smoke test).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

from .._help import HelpFormatter

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


def _loss(m, xi, yi):
    import jax

    return -jax.nn.log_softmax(m(xi))[yi]


def _split_model(width: int):
    """`(params, static)` of the benchmark's 784-width-width-10 ReLU MLP."""
    import jax

    import nte

    return nte.split(nte.nn.MLP(784, width, 2, 10, key=jax.random.key(0)))


def _build(method: str, width: int, batch: int, chunk: int | None):
    import jax
    import jax.numpy as jnp
    import optax

    import nte

    params, static = _split_model(width)
    x, y = _batch(batch)
    loss = _loss

    if method == "sgd":
        opt = optax.sgd(0.01)

        def step(params, state, x, y):
            def mean_loss(p):
                return jnp.mean(jax.vmap(lambda a, b: loss(nte.merge(p, static), a, b))(x, y))

            updates, state = opt.update(jax.grad(mean_loss)(params), state, params)
            return optax.apply_updates(params, updates), state
    elif method == "vmap":  # per-example gradients: β given to the optimizer
        opt = nte.nte(0.01)

        def step(params, state, x, y):
            grads = nte.per_example_grads(loss, nte.merge(params, static), x, y)
            updates, state = opt.update(grads, state, params)
            return optax.apply_updates(params, updates), state
    else:  # the likelihood holds β; the optimizer is the prior and projection
        opt = nte.nte()
        kind = {"chunked": nte.likelihood.Chunked, "series": nte.likelihood.Series}[method]

        def step(params, state, x, y):
            lik = nte.expert_log_likelihoods(
                loss,
                nte.merge(params, static),
                x,
                y,
                signs=state.signs,
                inv_temperature=0.01,
                method=kind(chunk_size=chunk),
            )
            updates, state = opt.update(lik, state, params)
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


def _looped(body, carry, repeats: int):
    """`repeats` calls of `body(carry) -> carry` in one compiled `lax.scan`; ms per call
    (median of 5 timed runs after a warm-up)."""
    import jax

    run = jax.jit(lambda c: jax.lax.scan(lambda c, _: (body(c), None), c, None, repeats)[0])
    jax.block_until_ready(run(carry))
    times = []
    for _ in range(5):
        t = time.perf_counter()
        jax.block_until_ready(run(carry))
        times.append((time.perf_counter() - t) / repeats)
    return 1e3 * sorted(times)[2]


def breakdown(width: int, batch: int, repeats: int) -> dict:
    """ms per step of SGD, the series step and its parts, in compiled loops (one process)."""
    import jax
    import jax.numpy as jnp
    import optax

    import nte
    from nte.likelihood import _base, _grads, _layers, _series

    sgd_step, (p, sgd_state, x, y) = _build("sgd", width, batch, None)
    nte_step, (_, nte_state, _, _) = _build("series", width, batch, None)
    static, loss = _split_model(width)[1], _loss

    def batch_of(params):
        return _base.Batch(loss, params, static, x, y, nte_state.signs)

    layers = _layers.find_layers(batch_of(p))
    signs = [_grads.sign_leaves(batch_of(p))[layer.weight] for layer in layers]

    def scalar(tree):  # every output element is needed
        return sum(jnp.sum(v) for v in jax.tree_util.tree_leaves(tree))

    def nudge(p, c):  # a data dependence on the previous iteration, value unchanged
        return jax.tree_util.tree_map(lambda v: v + 0 * c, p)

    def taps(c):
        return scalar(_layers.layer_signals(batch_of(nudge(p, c)), layers)) * 0

    def taps_series(c):
        pairs = _layers.layer_signals(batch_of(nudge(p, c)), layers)
        sums = [_series.series_sum(D, A, s, 0.01, 3) for (D, A), s in zip(pairs, signs)]
        return scalar(sums) * 0

    opt = nte.nte()
    lik = nte.expert_log_likelihoods(
        loss, nte.merge(p, static), x, y, signs=nte_state.signs, inv_temperature=0.01
    )

    def update(c):
        params, state = c
        updates, state = opt.update(lik, state, params)
        return optax.apply_updates(params, updates), state

    out = {
        "sgd step": _looped(lambda c: sgd_step(*c, x, y), (p, sgd_state), repeats),
        "series step": _looped(lambda c: nte_step(*c, x, y), (p, nte_state), repeats),
        "taps": _looped(taps, jnp.float32(0), repeats),
        "taps + 3-order series (no control flow)": _looped(taps_series, jnp.float32(0), repeats),
        "update": _looped(update, (p, nte_state), repeats),
    }
    out["lower bound: taps + series + update"] = (
        out["taps + 3-order series (no control flow)"] + out["update"]
    )
    return out


def largest_width(scaling: dict, budget: float = 8 * GiB) -> float:
    import numpy as np

    w = np.array(sorted(int(k) for k in scaling), float)
    b = np.array([scaling[k] for k in sorted(scaling, key=int)], float)
    c2, c1, c0 = np.polyfit(w, b, 2)
    roots = np.roots([c2, c1, c0 - budget])
    real = [r.real for r in roots if abs(r.imag) < 1e-9 and r.real > 0]
    return max(real) if real else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.benchmarks.nte_step",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # internal
    parser.add_argument("--width", type=int, default=1000, help="hidden width")
    parser.add_argument("--batch", type=int, default=128, help="examples per step")
    parser.add_argument(
        "--chunk-size", type=int, default=None, help="examples per chunk of the chunked likelihood"
    )
    parser.add_argument("--repeats", type=int, default=20, help="timed steps")
    parser.add_argument("--quick", action="store_true", help="tiny smoke test")
    args = parser.parse_args()
    widths = [64, 128] if args.quick else [250, 500, 1000, 2000]
    if args.child == "breakdown":
        print("RESULT " + json.dumps(breakdown(args.width, args.batch, args.repeats)))
        return
    if args.child:
        out = child(args.child, args.width, args.batch, args.chunk_size, args.repeats, widths)
        print("RESULT " + json.dumps(out))
        return
    if args.quick:
        args.width, args.repeats = 128, 2
    rows = []
    for method in (*METHODS, "breakdown"):
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
    parts = rows.pop()
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
    print(
        f"\nwhere the series step's time goes (compiled loops of {args.repeats} steps, one process)"
    )
    for name, ms in parts.items():
        print(f"{name:42} {ms:7.2f} ms  {ms / parts['sgd step']:5.2f} x SGD step")


if __name__ == "__main__":
    main()
