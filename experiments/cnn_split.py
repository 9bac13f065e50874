"""Momentum and forgetting with a CNN on split Fashion-MNIST (task-incremental), and NTE.

The paper's modern-CNN claim in CPU form: SGD with momentum ∈ {0, 0.5, 0.9, 0.99} (the same
learning rate, fixed in advance), then the NTE posterior on the same `nte.nn.CNN`
(channels 8, 16; 28×28 inputs). 5 tasks of 2 classes, a masked softmax per task, 1 epoch per
task on the first `--train-rows` training rows (a subset, for CPU time), all test rows, seeds
0 … seeds−1 (vmapped). Reported after all tasks: accuracy on the previous task (task 4) and
the first task (task 1), the forgetting of the first task (its best accuracy minus its final
one) and the mean forgetting over tasks 1–4, mean ± std over seeds.

    python -m experiments.cnn_split [--seeds 3] [--train-rows 6000] [--lr 0.01]
"""

import argparse
import dataclasses
import time

import numpy as np

import nte
from nte import continual

from ._help import HelpFormatter


def _subset(dataset, rows: int):
    return dataclasses.replace(
        dataset, x_train=dataset.x_train[:rows], y_train=dataset.y_train[:rows]
    )


def _row(name: str, R: np.ndarray, seconds: float) -> str:
    final = R[:, -1]  # [seeds, T]
    prev, first = final[:, -2], final[:, 0]
    forget_first = R[:, :, 0].max(axis=1) - first
    forget_mean = (R[:, :-1, :-1].max(axis=1) - final[:, :-1]).mean(axis=1)
    cells = [prev, first, forget_first, forget_mean]
    text = "".join(f"{c.mean():>8.3f} ± {c.std():.3f}" for c in cells)
    return f"{name:<16}{text}{seconds:>8.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.cnn_split",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds per learner")
    parser.add_argument("--train-rows", type=int, default=6000, help="training rows used")
    parser.add_argument("--lr", type=float, default=0.01, help="SGD learning rate")
    parser.add_argument("--beta", type=float, default=0.03, help="NTE β")
    parser.add_argument(
        "--momenta", type=float, nargs="+", default=[0.0, 0.5, 0.9, 0.99], help="SGD momenta"
    )
    args = parser.parse_args()
    dataset = _subset(nte.data.load("fashion_mnist"), args.train_rows)
    base = continual.Config(
        dataset="fashion_mnist", tasks=5, scenario="task", epochs=1, batch_size=32,
        seeds=args.seeds, progress=False,
    )  # fmt: skip
    model = lambda key: nte.nn.CNN((1, 28, 28), 10, channels=(8, 16), key=key)
    runs = {f"SGD m={m:g}": dict(learner="sgd", lr=args.lr, momentum=m) for m in args.momenta}
    runs["NTE"] = dict(learner="nte", beta=args.beta)
    head = "".join(f"{h:>16}" for h in ("prev task", "first task", "forget first", "mean forget"))
    print(f"split Fashion-MNIST, {args.train_rows} training rows, {args.seeds} seeds")
    print(f"{'learner':<16}{head}{'s':>8}")
    for name, kwargs in runs.items():
        start = time.perf_counter()
        result = continual.run(base.replace(**kwargs), model=model, dataset=dataset)
        print(_row(name, np.asarray(result.R), time.perf_counter() - start), flush=True)


if __name__ == "__main__":
    main()
