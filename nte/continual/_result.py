"""The outcome of a continual-learning run: [`nte.continual.Result`][] and its JSON summary."""

import dataclasses
from typing import Any

import numpy as np

from ._config import Config
from ._metrics import Metrics


@dataclasses.dataclass(frozen=True, eq=False)
class Result:
    """The outcome of [`nte.continual.run`][] (numpy arrays; `seeds` is the leading axis).

    Metrics: [maths: continual-learning metrics](../math.md#continual-learning-metrics).

    **Fields:**

    - `config`: the [`nte.continual.Config`][].
    - `R`: `[seeds, T, T]`, `R[s, t, j]` = test accuracy on task `j` after training task `t`.
    - `baseline`: `[seeds, T]`, test accuracy of the untrained model on each task.
    - `metrics`: [`nte.continual.Metrics`][] per seed.
    - `history`, `history_steps`: with `eval_every > 0`, `[seeds, H, T]` accuracies on every
      task at global step `history_steps[h]` (`[H]`).
    - `finished`: `True` if every task was trained (`status == "complete"`).
    - `steps`: training steps done per seed (over all tasks, including resumed ones).
    - `wall_time`: seconds spent in the run, summed over its resumed segments; `train_time`,
      `eval_time`, `compile_time`: the parts spent in compiled training chunks, in
      evaluation/end-of-task hooks, and compiling (also summed over the segments).
    - `steps_per_second`: training steps (per seed) per second of `train_time`.
    - `state`: the final training states, stacked over seeds.
    - `observations`: the records of the observers (see [`nte.continual.Event`][]): one dict
      per event, `{"kind", "task", "step", name: [value per seed], ...}`.
    - `status`: `"complete"`, `"stopped"` (`stop_after_steps`) or `"diverged"`: the loss or
      the state became non-finite (checked at every chunk boundary and after every
      `end_task`); the run stopped there, so the accuracies it did not reach stay NaN (`null`
      in the summary) and the metrics built on them are NaN.
    - `diverged_at`: `(task, step within the task)` of the chunk boundary where the
      non-finite value was found, or `None`.
    - `warnings`: one line per problem found (the divergence; more than 99% of the weights
      exactly zero, or at the `max_delta` clip, at a task end), each also issued as a
      `RuntimeWarning`.
    """

    config: Config
    R: np.ndarray
    baseline: np.ndarray
    metrics: Metrics
    history: np.ndarray
    history_steps: np.ndarray
    finished: bool
    steps: int
    wall_time: float
    train_time: float
    eval_time: float
    compile_time: float
    steps_per_second: float
    state: Any
    observations: list
    status: str = "complete"
    diverged_at: tuple[int, int] | None = None
    warnings: list = dataclasses.field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """A JSON-serialisable dict: R, metrics as mean ± std over seeds, timings."""

        def stats(x):
            x = np.asarray(x, np.float64)
            return {"mean": _json(np.mean(x, 0)), "std": _json(np.std(x, 0)), "per_seed": _json(x)}

        m = self.metrics
        return {
            "R": stats(self.R),
            "baseline": stats(self.baseline),
            "ACC": stats(m.acc),
            "BWT": stats(m.bwt),
            "FWT": stats(m.fwt),
            "forgetting": stats(m.forgetting),
            "mean_forgetting": stats(m.mean_forgetting),
            "history": {"steps": _json(self.history_steps), **stats(self.history)},
            "finished": self.finished,
            "status": self.status,
            "diverged_at": _diverged(self.diverged_at),
            "warnings": list(self.warnings),
            "steps": self.steps,
            "wall_time_s": self.wall_time,
            "train_time_s": self.train_time,
            "eval_time_s": self.eval_time,
            "compile_time_s": self.compile_time,
            "train_fraction": self.train_time / max(self.wall_time, 1e-12),
            "steps_per_second": self.steps_per_second,
            "observations": self.observations,
        }


def _diverged(at: tuple[int, int] | None) -> dict[str, int] | None:
    return None if at is None else {"task": int(at[0]), "step": int(at[1])}


def _json(x: Any) -> Any:
    """Numbers and arrays as (nested lists of) floats; nan becomes None."""
    if isinstance(x, (bool, int, str)) or x is None:
        return x
    x = np.asarray(x, np.float64)
    if x.ndim == 0:
        return None if np.isnan(x) else float(x)
    return [_json(v) for v in x]
