"""Benchmark of the continual-learning harness: 5 permuted Fashion-MNIST tasks at width 1000.

    python -m experiments.benchmarks.harness [--batch-size 128] [--tasks 5] [--learners sgd,nte]

Each learner runs in a fresh subprocess (so its peak memory is its own) and reports the fraction
of wall time spent inside compiled training steps (data stays on the device; no per-step host
round-trips), training steps per second, compile time and peak resident memory. "train %" is
training-step time / wall time (wall time includes loading the data, compiling and evaluating
the T × (T + 1) accuracy matrix); "train+eval %" counts all compiled device work; "train % (no
compile, no eval)" is the share of compiled train steps in the wall time left after compiling
and evaluating (the rest: data loading, initialisation and the Python loop between chunks);
"host s" is what remains of the wall time outside compiled programs. The table
compares the learners side by side from one invocation.

Each learner runs twice, in two processes sharing a fresh `Config.compile_cache` folder:
"cold" compiles every program (a first run), "warm" loads them from JAX's persistent
compilation cache (every later run of the same configuration, e.g. rerunning an experiment or
another seed), so its compile time is what loading costs.
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile

from nte import continual


def one(learner: str, args: argparse.Namespace) -> dict:
    config = continual.Config(
        dataset=args.dataset,
        tasks=args.tasks,
        learner=learner,
        width=args.width,
        depth=args.depth,
        epochs=1,
        batch_size=args.batch_size,
        **({"beta": 0.01} if learner == "nte" else {"lr": 0.01}),
        progress=False,
        compile_cache=args.compile_cache,
    )
    r = continual.run(config)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    return {
        "learner": learner,
        "steps": r.steps,
        "wall_s": r.wall_time,
        "compile_s": r.compile_time,
        "train_s": r.train_time,
        "eval_s": r.eval_time,
        "train_fraction": r.train_time / r.wall_time,
        "train_fraction_excl_compile": r.train_time / (r.wall_time - r.compile_time),
        "compiled_fraction": (r.train_time + r.eval_time) / r.wall_time,
        "train_fraction_of_training": r.train_time / (r.wall_time - r.compile_time - r.eval_time),
        "host_s": r.wall_time - r.compile_time - r.train_time - r.eval_time,
        "steps_per_s": r.steps_per_second,
        "peak_rss_mib": peak_mib,
        "acc": float(r.metrics.acc.mean()),
    }


def main() -> None:
    p = argparse.ArgumentParser(
        prog="python -m experiments.benchmarks.harness",
        description=__doc__,
        formatter_class=continual.HelpFormatter,
    )
    p.add_argument("--learners", default="sgd,nte", help="comma-separated learners")
    p.add_argument("--dataset", default="fashion_mnist", help="a name for nte.data.load")
    p.add_argument("--tasks", type=int, default=5, help="permuted tasks")
    p.add_argument("--width", type=int, default=1000, help="hidden width")
    p.add_argument("--depth", type=int, default=2, help="hidden layers")
    p.add_argument("--batch-size", type=int, default=128, help="examples per step")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    p.add_argument("--compile-cache", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args)))
        return
    rows = []
    skip = ("one", "compile_cache")
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k not in skip]
    for learner in args.learners.split(","):
        with tempfile.TemporaryDirectory() as cache:
            for run in ("cold", "warm"):
                cmd = [sys.executable, "-m", "experiments.benchmarks.harness", *flags]
                cmd += [f"--one={learner}", f"--compile-cache={cache}"]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                row = json.loads(out.strip().splitlines()[-1])
                rows.append(row | {"learner": f"{learner} ({run})"})
    print(
        f"{args.tasks} permuted {args.dataset} tasks, MLP width {args.width} depth {args.depth}, "
        f"batch {args.batch_size}, 1 epoch, 1 seed"
    )
    head = ("learner", "steps", "steps/s", "train %", "train % (no compile)", "train+eval %")
    head += ("train % (no compile, no eval)",)
    head += ("compile s", "train s", "eval s", "host s", "wall s", "peak RSS MiB", "ACC")
    print(" | ".join(head))
    for r in rows:
        print(
            f"{r['learner']} | {r['steps']} | {r['steps_per_s']:.1f} | "
            f"{100 * r['train_fraction']:.1f} | {100 * r['train_fraction_excl_compile']:.1f} | "
            f"{100 * r['compiled_fraction']:.1f} | "
            f"{100 * r['train_fraction_of_training']:.1f} | "
            f"{r['compile_s']:.1f} | {r['train_s']:.1f} | "
            f"{r['eval_s']:.1f} | {r['host_s']:.1f} | {r['wall_s']:.1f} | "
            f"{r['peak_rss_mib']:.0f} | {r['acc']:.3f}"
        )


if __name__ == "__main__":
    main()
