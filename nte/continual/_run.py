"""Training a learner on a sequence of tasks: [`nte.continual.run`][].

The data and the task index arrays are put on the devices once: the training rows in stripes
(each data-parallel device holds only its own, see `_stripes.py`), the test sets and task tables
replicated. Each chunk of training steps is ONE compiled loop (over steps) inside `jax.vmap`
(over seeds); batches are drawn on device from `jax.random.fold_in(fold_in(data_key, task),
epoch)`, so the batch order does not depend on how steps are chunked or on the number of
devices, and a resumed run replays exactly the same batches.
"""

import dataclasses
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .._split import merge
from . import _checkpoint as ckpt, _parallel as parallel, _stripes as stripes
from ._config import Config
from ._metrics import Metrics, metrics
from ._programs import device_tasks, programs, use_compile_cache
from ._tasks import Tasks, permuted_tasks, split_tasks


@dataclasses.dataclass(frozen=True, eq=False)
class Result:
    """The outcome of [`nte.continual.run`][] (numpy arrays; `seeds` is the leading axis).

    **Fields:**

    - `config`: the [`nte.continual.Config`][].
    - `R`: `[seeds, T, T]`, `R[s, t, j]` = test accuracy on task `j` after training task `t`.
    - `baseline`: `[seeds, T]`, test accuracy of the untrained model on each task.
    - `metrics`: [`nte.continual.Metrics`][] per seed.
    - `history`, `history_steps`: with `eval_every > 0`, `[seeds, H, T]` accuracies on every
      task at global step `history_steps[h]` (`[H]`).
    - `finished`: `False` if the run stopped early (`stop_after_steps`).
    - `steps`: training steps done per seed (over all tasks, including resumed ones).
    - `wall_time`: seconds spent in this call; `train_time`, `eval_time`, `compile_time`: the
      parts spent in compiled training chunks, in evaluation/end-of-task hooks, and compiling.
    - `steps_per_second`: training steps (per seed) per second of `train_time`.
    - `state`: the final training states, stacked over seeds.
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
            "steps": self.steps,
            "wall_time_s": self.wall_time,
            "train_time_s": self.train_time,
            "eval_time_s": self.eval_time,
            "compile_time_s": self.compile_time,
            "train_fraction": self.train_time / max(self.wall_time, 1e-12),
            "steps_per_second": self.steps_per_second,
        }


def _json(x: Any) -> Any:
    """Numbers and arrays as (nested lists of) floats; nan becomes None."""
    if isinstance(x, (bool, int, str)) or x is None:
        return x
    x = np.asarray(x, np.float64)
    if x.ndim == 0:
        return None if np.isnan(x) else float(x)
    return [_json(v) for v in x]


def load_tasks(config: Config, dataset: Any = None) -> Tasks:
    """The task sequence of `config` (loading `config.dataset` with `nte.data.load` if needed)."""
    if dataset is None:
        from .. import data  # nte.data, imported lazily

        dataset = data.load(config.dataset, source=config.source, data_dir=config.data_dir)
    if config.scenario == "permuted":
        return permuted_tasks(dataset, config.tasks, key=jr.key(config.task_seed))
    return split_tasks(dataset, config.tasks, scenario=config.scenario)


def _steps_per_epoch(config: Config, tasks: Tasks) -> list[int]:
    spe = [int(n) // config.batch_size for n in tasks.train_count]
    if min(spe) < 1:
        raise ValueError(
            f"`batch_size` ({config.batch_size}) must be <= the smallest task's number of "
            f"training examples ({int(tasks.train_count.min())})."
        )
    return spe


def _chunk_end(config: Config, s: int, spe: int, n_t: int, budget: int | None) -> int:
    end = min((s // spe + 1) * spe, n_t)
    for k in (config.eval_every, config.checkpoint_every):
        if k:
            end = min(end, (s // k + 1) * k)
    if budget is not None:
        end = min(end, s + max(budget, 1))
    return end


def _progress(config: Config, total: int, initial: int, desc: str):
    if not config.progress:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, desc=desc, leave=True, dynamic_ncols=True)


def run(config: Config, *, dataset: Any = None) -> Result:
    """Train `config.learner` on `config.tasks` tasks in sequence and evaluate after each task.

    After the baseline (untrained) evaluation, for each task `t`: `epochs` passes over the task's
    training set in minibatches of `batch_size`, one example from each of `batch_size` stripes
    of the task (example p of the task is in stripe p mod `batch_size`; each stripe is shuffled
    per epoch; ⌊n_t / batch_size⌋ steps per epoch; see `nte/continual/_stripes.py`),
    then the learner's `end_task` hook, then the test accuracy on every task → row `R[t]`. With
    `eval_every = k > 0`, every task is also evaluated every `k` steps (`Result.history`).

    `config.seeds` models (seeds `seed, seed + 1, ...`) are trained together: one compiled
    `lax.scan` per chunk of steps, `vmap`ped over seeds. Seed `s` uses
    `jax.random.split(jax.random.key(s), 4)` = (model init, learner init, batch order, end-of-task
    sample), so a run with `seeds = n` equals `n` runs with `seeds = 1`.

    With `config.out` set, checkpoints are written atomically to `out/checkpoint/` at every task
    boundary and every `checkpoint_every` steps. Calling `run` again with the same config
    resumes from the last checkpoint and produces the same `R` as an uninterrupted run.

    **Arguments:**

    - `config`: a [`nte.continual.Config`][].
    - `dataset`: optionally an `nte.data.Dataset`-like object to use instead of loading
      `config.dataset`.

    **Returns:**

    A [`nte.continual.Result`][].
    """
    if not isinstance(config, Config):
        raise TypeError(f"`config` must be an nte.continual.Config, got {type(config).__name__}.")
    t_start = time.perf_counter()
    use_compile_cache(config.compile_cache)
    tasks = load_tasks(config, dataset)
    folder = Path(config.out) / "checkpoint" if config.out is not None else None
    if folder is not None and parallel.is_main():  # only process 0 writes
        ckpt.check_config(folder, config.identity())
    prog = programs(config, tasks)
    compile0 = prog.compile_time
    S, T = config.seeds, tasks.n_tasks
    spe = _steps_per_epoch(config, tasks)
    n_steps = [config.epochs * k for k in spe]
    n_hist = sum(n // config.eval_every for n in n_steps) if config.eval_every else 0
    seeds = jnp.arange(config.seed, config.seed + S)
    keys = prog.par.place_seeds(jax.vmap(lambda s: jr.split(jr.key(s), 4))(seeds))
    arrays = prog.init(keys)
    dev = device_tasks(tasks)
    striped = stripes.StripedData(tasks, config.batch_size, prog.par.mesh).arrays()
    # Keep only this process's slice of the training rows (now on its devices).
    tasks = dataclasses.replace(tasks, x_train=tasks.x_train[:0], y_train=tasks.y_train[:0])

    ck = {
        "state": arrays,
        "position": np.zeros(2, np.int64),  # (task, step within task) of the next step
        "done_steps": np.zeros((), np.int64),
        "n_hist": np.zeros((), np.int64),
        "R": np.full((S, T, T), np.nan, np.float32),
        "baseline": np.full((S, T), np.nan, np.float32),
        "history": np.full((S, n_hist, T), np.nan, np.float32),
        "history_steps": np.full(n_hist, -1, np.int64),
    }
    if folder is not None:
        loaded = ckpt.load(folder, ck, identity=config.identity(), finite=lambda c: c["state"])
        if loaded is not None:
            ck = {k: (v if k == "state" else np.asarray(v)) for k, v in loaded.items()}
    ck["state"], keys, dev = prog.par.place(ck["state"], keys, dev)
    dev = {**dev, **striped}
    times = {"train": 0.0, "eval": 0.0}
    done0 = int(ck["done_steps"])

    def timed(kind, fn, *args):
        c0, t0 = prog.compile_time, time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        times[kind] += time.perf_counter() - t0 - (prog.compile_time - c0)
        return out

    def save():
        if folder is None:
            return
        t, s = (int(v) for v in ck["position"])
        summary = {"task": t, "step_in_task": s, "done_steps": int(ck["done_steps"])}
        state = prog.par.host(ck["state"])  # gathered from every process
        if prog.par.is_main:
            ckpt.save(folder, {**ck, "state": state}, summary, identity=config.identity())

    if int(ck["position"][0]) == 0 and int(ck["position"][1]) == 0:
        ck["baseline"] = np.asarray(timed("eval", prog.evaluate, ck["state"], dev))
    offset = [0, *np.cumsum(n_steps).tolist()]
    stop = config.stop_after_steps
    stopped = False
    t0 = int(ck["position"][0])
    for t in range(t0, T):
        s = int(ck["position"][1]) if t == t0 else 0
        bar = _progress(config, n_steps[t], s, f"task {t + 1}/{T}")
        while s < n_steps[t] and not stopped:
            budget = None if stop is None else stop - int(ck["done_steps"])
            end = _chunk_end(config, s, spe[t], n_steps[t], budget)
            e = s // spe[t]
            ck["state"], loss = timed(
                "train", prog.train, ck["state"], dev, keys, t, e, s - e * spe[t], end - s
            )
            ck["done_steps"] = ck["done_steps"] + (end - s)
            s = end
            ck["position"] = np.array([t, s], np.int64)
            stopped = stop is not None and int(ck["done_steps"]) >= stop
            if bar is not None:
                bar.update(end - bar.n)
                bar.set_postfix(loss=f"{float(np.mean(loss)):.4f}")
            if config.eval_every and s % config.eval_every == 0:
                h = int(ck["n_hist"])
                ck["history"][:, h] = np.asarray(timed("eval", prog.evaluate, ck["state"], dev))
                ck["history_steps"][h] = offset[t] + s
                ck["n_hist"] = np.asarray(h + 1)
            if s < n_steps[t] and (
                stopped or (config.checkpoint_every and s % config.checkpoint_every == 0)
            ):
                save()
        if s == n_steps[t]:
            ck["state"] = timed("eval", prog.end_task, ck["state"], dev, keys, t)
            ck["R"][:, t] = np.asarray(timed("eval", prog.evaluate, ck["state"], dev))
            ck["position"] = np.array([t + 1, 0], np.int64)
            save()
        if bar is not None:
            bar.close()
        if stopped:
            break
    finished = int(ck["position"][0]) == T
    wall = time.perf_counter() - t_start
    R, baseline = ck["R"].astype(np.float64), ck["baseline"].astype(np.float64)
    return Result(
        config=config,
        R=R,
        baseline=baseline,
        metrics=metrics(R, baseline),
        history=ck["history"].astype(np.float64),
        history_steps=ck["history_steps"],
        finished=finished,
        steps=int(ck["done_steps"]),
        wall_time=wall,
        train_time=times["train"],
        eval_time=times["eval"],
        compile_time=prog.compile_time - compile0,
        steps_per_second=(int(ck["done_steps"]) - done0) / max(times["train"], 1e-12),
        state=merge(prog.par.host(ck["state"]), prog.static),
    )
