"""Continual-learning baselines on permuted Fashion-MNIST: one table, one command.

    python -m experiments.baselines            # the full table (docs/results.md, "Baselines")
    python -m experiments.baselines --quick    # a ~3-minute smoke version

SGD and Adam fine-tuning, EWC, online EWC, the task-conditioned hypernetwork and the NTE posterior
update are trained by `nte.continual.run` on the same tasks (the same pixel permutations,
`task_seed=0`), the same target MLP (`784-width-width-10`), the same batches per seed, and
`--seeds` seeds (vmapped). To fit a shared 2-core CPU, each task trains on a fixed random
subset of `--train-examples` Fashion-MNIST training images (the same subset for every task and
method, each task permuting its pixels) and is evaluated on the first `--test-examples` test
images. The table reports, as mean ± std over seeds: average final accuracy `A_T`, backward
transfer `BWT`, mean forgetting, and the mean "just-trained" accuracy `mean_t R[t, t]` (each
task's accuracy right after training it); plus a hypernetwork trained on task 1 alone
(single-task reference). Results go to `OUT/results.json` and `OUT/table.md`. Rerunning with
`--learners a,b` and the same setting and `--out` recomputes those rows and keeps the others.
"""

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from nte import continual, data
from nte._internal._io import atomic_write_json, atomic_write_text

# Per-learner settings: (Config overrides, learner_kwargs), the same for every seed. Chosen by
# small sweeps on this setting (seed 0, 10 tasks; docs/results.md, "Baselines"), i.e. on the
# test tasks themselves, as is common in this literature. EWC with SGD is only stable while
# lr · λ · max F < 2; Adam variants of EWC were tried and were worse here.
LEARNERS = {
    "sgd": ({"lr": 0.05}, {}),
    "adam": ({"lr": 1e-3}, {}),
    "ewc": ({"lr": 0.05}, {"ewc_lambda": 2.0, "fisher": "empirical"}),
    "online_ewc": ({"lr": 0.05}, {"ewc_lambda": 5.0, "gamma": 0.9, "fisher": "empirical"}),
    "hypernetwork": (
        {"lr": 3e-3},
        {"beta_output": 0.1, "chunk_size": 2000, "hidden": [100, 50], "embedding_size": 32},
    ),
    "nte": ({"beta": 0.003}, {}),
}

# Published reference (von Oswald et al., ICLR 2020, Table 1 / Fig. 3; MNIST, not Fashion-MNIST).
REFERENCES = [
    ("hypernetwork (von Oswald et al. 2020)", "PermutedMNIST-10", "96.7–97.0 %"),
    ("hypernetwork (von Oswald et al. 2020)", "PermutedMNIST-100", "94.3–95.9 %"),
]


def subset(dataset: data.Dataset, n_train: int, n_test: int, seed: int = 0) -> data.Dataset:
    """A fixed random subset of the training set and the first `n_test` test images."""
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.permutation(dataset.n_train)[: min(n_train, dataset.n_train)])
    n_test = min(n_test, dataset.n_test)
    return dataclasses.replace(
        dataset,
        x_train=np.ascontiguousarray(dataset.x_train[idx]),
        y_train=np.ascontiguousarray(dataset.y_train[idx]),
        x_test=np.ascontiguousarray(dataset.x_test[:n_test]),
        y_test=np.ascontiguousarray(dataset.y_test[:n_test]),
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments.baselines",
        description=__doc__,
        formatter_class=continual.HelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="3 tasks, 2 seeds, tiny subsets")
    p.add_argument("--learners", default=",".join(LEARNERS), help="comma-separated learners")
    p.add_argument("--tasks", type=int, default=10, help="permuted tasks")
    p.add_argument("--seeds", type=int, default=3, help="seeds per learner")
    p.add_argument("--width", type=int, default=256, help="hidden width")
    p.add_argument("--epochs", type=int, default=1, help="passes over each task")
    p.add_argument("--batch-size", type=int, default=128, help="examples per step")
    p.add_argument(
        "--train-examples", type=int, default=12800, help="training images kept per task"
    )
    p.add_argument("--test-examples", type=int, default=2000, help="test images kept")
    p.add_argument(
        "--end-task-examples",
        type=int,
        default=512,
        help="examples given to end_task (EWC's Fisher)",
    )
    p.add_argument(
        "--single-task",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also train one task alone (the upper reference)",
    )
    p.add_argument("--out", default="runs/baselines", help="output folder")
    return p


QUICK = {"tasks": 3, "seeds": 2, "width": 100, "train_examples": 3200, "test_examples": 1000}


def config_for(name: str, args: argparse.Namespace, tasks: int) -> continual.Config:
    overrides, kwargs = LEARNERS[name]
    learner = "hypernetwork" if name == "hypernetwork_single" else name
    return continual.Config(
        dataset="fashion_mnist",
        tasks=tasks,
        learner=learner,
        width=args.width,
        depth=2,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seeds=args.seeds,
        end_task_examples=args.end_task_examples,
        eval_batch_size=1000,
        progress=False,
        learner_kwargs=dict(kwargs),
        **overrides,
    )


def _stat(x) -> str:
    x = np.asarray(x, np.float64) * 100
    return f"{np.mean(x):.1f} ± {np.std(x):.1f}"


def summarize(result: continual.Result) -> dict:
    m = result.metrics
    diag = np.diagonal(result.R, axis1=-2, axis2=-1).mean(-1)
    return {
        "acc": m.acc.tolist(),
        "bwt": m.bwt.tolist(),
        "forgetting": m.mean_forgetting.tolist(),
        "just_trained": diag.tolist(),
        "R_mean": result.R.mean(0).tolist(),
        "wall_time_s": result.wall_time,
        "config": result.config.to_dict(),
    }


def table(results: dict, args: argparse.Namespace) -> str:
    head = (
        "| method | avg accuracy A_T (%) | BWT (%) | forgetting (%) | just-trained (%) | time (s) |"
    )
    rows = [head, "|---|---|---|---|---|---|"]
    for name, r in results.items():
        bwt = "–" if name == "hypernetwork_single" else _stat(r["bwt"])
        fgt = "–" if name == "hypernetwork_single" else _stat(r["forgetting"])
        rows.append(
            f"| {name} | {_stat(r['acc'])} | {bwt} | {fgt} | {_stat(r['just_trained'])} | "
            f"{r['wall_time_s']:.0f} |"
        )
    rows += [
        "",
        "Published references (MNIST, not Fashion-MNIST; full data, 784-1000-1000-10):",
        "",
    ]
    rows += [f"- {who}: {bench} average accuracy {acc}" for who, bench, acc in REFERENCES]
    setting = (
        f"permuted Fashion-MNIST, {args.tasks} tasks, 784-{args.width}-{args.width}-10, "
        f"{args.seeds} seeds, {args.epochs} epoch(s) of {args.train_examples} training images "
        f"per task (batch {args.batch_size}), {args.test_examples} test images per task"
    )
    return f"Setting: {setting}.\n\n" + "\n".join(rows) + "\n"


def _setting(args: argparse.Namespace) -> dict:
    return {k: v for k, v in vars(args).items() if k not in ("learners", "out")}


def _previous(out: Path, args: argparse.Namespace) -> dict:
    """Rows of an earlier run into the same `--out` with the same setting (kept in the table)."""
    path = out / "results.json"
    if not path.exists():
        return {}
    saved = json.loads(path.read_text())
    return saved["results"] if saved.get("args") == _setting(args) else {}


def main(argv: list[str] | None = None) -> dict:
    args = parser().parse_args(argv)
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, v)
    names = [n.strip() for n in args.learners.split(",") if n.strip()]
    for n in names:
        if n not in LEARNERS:
            raise SystemExit(f"--learners: unknown {n!r}; choose from {sorted(LEARNERS)}")
    dataset = subset(data.load("fashion_mnist"), args.train_examples, args.test_examples)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = [(n, args.tasks) for n in names]
    if args.single_task and "hypernetwork" in names:
        LEARNERS["hypernetwork_single"] = LEARNERS["hypernetwork"]
        runs.append(("hypernetwork_single", 1))
    results, t0 = _previous(out, args), time.perf_counter()
    for name, tasks in runs:
        result = continual.run(config_for(name, args, tasks), dataset=dataset)
        results[name] = summarize(result)
        print(f"{name}: A_T {_stat(results[name]['acc'])}  ({result.wall_time:.0f}s)", flush=True)
        atomic_write_json(out / "results.json", {"args": _setting(args), "results": results})
    order = [*LEARNERS, "hypernetwork_single"]
    results = {n: results[n] for n in order if n in results}
    text = table(results, args) + f"\nTotal wall time: {time.perf_counter() - t0:.0f} s.\n"
    atomic_write_text(out / "table.md", text)
    print(text)
    return results


if __name__ == "__main__":
    main()
