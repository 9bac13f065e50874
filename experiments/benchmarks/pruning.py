"""Cost of learning by pruning at the demo's width: ms per step and peak RSS of the prune-only
step and of the NTE step with posterior pruning, as ratios to SGD on the same network, measured
side by side in one run.

The network is a 784-`width`-10 ReLU MLP (one hidden layer; default width 30,000, 23.8M
parameters), the batch the first `batch` = 128 Fashion-MNIST training images. Each learner runs
in its own subprocess (so `ru_maxrss`, the peak resident set size of the whole process, is its
own): two steps to compile and warm up, then up to `--steps` timed steps (fewer if
`--budget` seconds run out). Learners:

- `sgd`: `optax.sgd(0.01)` on the mean-batch gradient;
- `prune_only`: `nte.pruning.prune_only(rate=0.01, momentum=0.99)` (Gaussian cutoff, origin
  variant) on the mean-batch gradient;
- `nte_prune`: `nte.nte(prune_below=1e-9)` on `nte.expert_log_likelihoods(..., β=0.01,
  method="auto")` (the taps of the dense layers, no B×N tensor).

Run: `python -m experiments.benchmarks.pruning` (`--width 1000 --steps 3` for a smoke test).
Prints a table and writes JSON with `--out`.
"""

import argparse
import json
import resource
import subprocess
import sys
import time

from .._help import HelpFormatter

LEARNERS = ("sgd", "prune_only", "nte_prune")


def _build(learner: str, width: int, batch: int):
    import jax
    import jax.numpy as jnp
    import optax

    import nte

    from .nte_step import _batch, _loss

    params, static = nte.split(nte.nn.MLP(784, width, 1, 10, key=jax.random.key(0)))
    x, y = _batch(batch)

    def mean_grad(params, x, y):
        def mean_loss(p):
            return jnp.mean(jax.vmap(lambda a, b: _loss(nte.merge(p, static), a, b))(x, y))

        return jax.grad(mean_loss)(params)

    if learner == "nte_prune":
        opt = nte.nte(prune_below=1e-9)

        def step(params, state, x, y):
            lik = nte.expert_log_likelihoods(
                _loss, nte.merge(params, static), x, y, signs=state.signs, inv_temperature=0.01
            )
            updates, state = opt.update(lik, state, params)
            return optax.apply_updates(params, updates), state
    else:
        if learner == "sgd":
            opt = optax.sgd(0.01)
        else:
            opt = nte.pruning.prune_only(rate=0.01, momentum=0.99, degree=2.0)

        def step(params, state, x, y):
            updates, state = opt.update(mean_grad(params, x, y), state, params)
            return optax.apply_updates(params, updates), state

    return jax.jit(step, donate_argnums=(0, 1)), (params, opt.init(params), x, y)


def child(learner: str, width: int, batch: int, steps: int, budget: float) -> dict:
    import jax

    import nte

    step, (params, state, x, y) = _build(learner, width, batch)
    t0 = time.perf_counter()
    for _ in range(2):  # compile + warm up
        params, state = step(params, state, x, y)
    jax.block_until_ready(params)
    warmup = time.perf_counter() - t0
    times, start = [], time.perf_counter()
    while len(times) < steps and (not times or time.perf_counter() - start < budget):
        t = time.perf_counter()
        params, state = step(params, state, x, y)
        jax.block_until_ready(params)
        times.append(time.perf_counter() - t)
    times.sort()
    return dict(
        learner=learner,
        steps=len(times),
        ms=1e3 * times[len(times) // 2],
        min_ms=1e3 * times[0],
        warmup_s=warmup,
        rss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        sparsity=float(nte.pruning.sparsity(params)[1]),
    )


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.benchmarks.pruning",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--width", type=int, default=30_000, help="hidden units")
    parser.add_argument("--batch", type=int, default=128, help="batch size")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per learner")
    parser.add_argument("--budget", type=float, default=120.0, help="seconds of timed steps")
    parser.add_argument("--out", default=None, help="write the rows as JSON here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        row = child(args.child, args.width, args.batch, args.steps, args.budget)
        print(json.dumps(row))
        return [row]
    rows = []
    for learner in LEARNERS:
        cmd = [sys.executable, "-m", "experiments.benchmarks.pruning", "--child", learner]
        cmd += ["--width", str(args.width), "--batch", str(args.batch)]
        cmd += ["--steps", str(args.steps), "--budget", str(args.budget)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    sgd = rows[0]
    n = 784 * args.width + args.width + 10 * args.width + 10
    print(f"784-{args.width}-10 MLP ({n / 1e6:.1f}M parameters), batch {args.batch}")
    print("| learner | steps | ms/step (median) | min ms | × SGD time | peak RSS GiB | × SGD RSS |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['learner']} | {r['steps']} | {r['ms']:.0f} | {r['min_ms']:.0f} | "
            f"{r['ms'] / sgd['ms']:.2f} | {r['rss'] / 2**30:.2f} | {r['rss'] / sgd['rss']:.2f} |"
        )
    if args.out:
        from nte._internal._io import atomic_write_json

        atomic_write_json(args.out, dict(width=args.width, batch=args.batch, rows=rows))
    return rows


if __name__ == "__main__":
    main()
