"""Training a learner on a sequence of tasks: [`nte.continual.run`][], in named steps.

`run` = `_prepare` (check the config, the model factory and the observers; load the tasks;
compile the programs; put the data on the devices) → `_resume` (the checkpoint, if any) →
per task `_train_task` (chunks of steps: `_train_chunk`, then `_after_chunk`: history,
observers, checkpoint) and `_end_task` (the learner's hook, the row `R[t]`, observers,
checkpoint) → `_finish` (the [`nte.continual.Result`][]). The carried state is a typed
`Progress` (what a checkpoint holds); `_Run` holds what is fixed once prepared.

The data and the task index arrays are put on the devices once: the training rows in stripes
(each data-parallel device holds only its own, see `_stripes.py`), the test sets and task tables
replicated. Each chunk of training steps is ONE compiled loop (over steps) inside `jax.vmap`
(over seeds); batches are drawn on device from `jax.random.fold_in(fold_in(data_key, task),
epoch)`, so the batch order does not depend on how steps are chunked or on the number of
devices, and a resumed run replays exactly the same batches.
"""

import contextlib
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._internal._io import atomic_write_json
from .._split import merge
from . import _checkpoint as ckpt, _guard as guard, _parallel as parallel, _stripes as stripes
from ._config import Config
from ._metrics import metrics
from ._model import check_model, default_model, model_identity, seed_keys
from ._observe import Observer, check_observers, keep_until, observe
from ._programs import device_tasks, programs, use_compile_cache
from ._result import Result
from ._tasks import Tasks, load_tasks


class Progress(NamedTuple):
    """The state carried from step to step of a run, and what a checkpoint holds."""

    state: Any  # the stacked learner states (arrays only), [seeds, ...]
    position: np.ndarray  # (task, step within task) of the next step
    done_steps: np.ndarray  # training steps done per seed, over all tasks
    n_hist: np.ndarray  # history rows filled
    R: np.ndarray  # [seeds, T, T]
    baseline: np.ndarray  # [seeds, T]
    history: np.ndarray  # [seeds, H, T]
    history_steps: np.ndarray  # [H]
    times: np.ndarray  # [4] seconds (train, eval, compile, wall) of the checkpointed segments
    health: np.ndarray  # [2] worst fraction of weights zero / at the clip at a task end
    health_task: np.ndarray  # [2] first task end at which each exceeded guard.DEGENERATE


@dataclasses.dataclass(eq=False)
class _Run:
    """What is fixed once a run is prepared, plus its timers and observation records."""

    config: Config
    prog: Any  # the compiled programs (`_programs._Programs`)
    spe: list[int]  # steps per epoch of each task
    n_steps: list[int]  # steps of each task
    folder: Path | None  # the checkpoint folder
    keys: Any  # [seeds, 4] PRNG keys
    dev: dict  # the task tables (replicated), then also the striped training rows
    striped: dict  # the training rows in stripes (already on the devices)
    observers: tuple[Observer, ...]
    t_start: float
    compile0: float
    times: dict = dataclasses.field(default_factory=lambda: {"train": 0.0, "eval": 0.0})
    observations: list = dataclasses.field(default_factory=list)
    identity: Any = None  # the config and model identity, checked in every checkpoint
    times0: Any = None  # the [4] seconds of the earlier segments (see `Progress.times`)
    diverged: tuple | None = None  # (task, step in task, chunk start, seeds) when it diverged

    @property
    def offset(self) -> list[int]:
        return [0, *np.cumsum(self.n_steps).tolist()]

    def timed(self, kind: str, fn: Callable, *args) -> Any:
        c0, t0 = self.prog.compile_time, time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        self.times[kind] += time.perf_counter() - t0 - (self.prog.compile_time - c0)
        return out


def _steps_per_epoch(batch_size: int, tasks: Tasks) -> list[int]:
    spe = [int(n) // batch_size for n in tasks.train_count]
    if min(spe) < 1:
        raise ValueError(
            f"`batch_size` ({batch_size}) must be <= the smallest task's number of "
            f"training examples ({int(tasks.train_count.min())})."
        )
    return spe


def _prepare(config: Any, model: Any, dataset: Any, observers: Any, stack: Any) -> _Run:
    """Check every input, load the tasks, compile the programs, put the data on the devices."""
    if not isinstance(config, Config):
        raise TypeError(f"`config` must be an nte.continual.Config, got {type(config).__name__}.")
    t_start = time.perf_counter()
    observers = (*config.learner.observers, *check_observers(observers))
    tr = config.training
    use_compile_cache(config.devices.compile_cache)
    tasks = load_tasks(config, dataset)
    spe = _steps_per_epoch(tr.batch_size, tasks)
    factory = default_model(config.model, tasks) if model is None else model
    abstract = check_model(factory, tasks)
    folder = Path(tr.out) / guard.CHECKPOINT_FOLDER if tr.out is not None else None
    identity = {**config.identity(), "model_module": model_identity(abstract)}
    if folder is not None and parallel.is_main():  # only process 0 writes (under the lock)
        stack.enter_context(guard.hold(tr.out))  # held until `run` returns
        guard.clean(tr.out, overwrite=tr.overwrite)
        ckpt.check_config(folder, identity)  # reads only: written once accepted (`_accept`)
    prog = programs(config, tasks, factory, abstract, custom=model is not None)
    seeds = jnp.arange(tr.seed, tr.seed + tr.seeds)
    keys = prog.par.place_seeds(jax.vmap(seed_keys)(seeds))
    striped = stripes.StripedData(tasks, tr.batch_size, prog.par.mesh).arrays()
    n_steps = [tr.epochs * k for k in spe]
    return _Run(
        config, prog, spe, n_steps, folder, keys, device_tasks(tasks), striped, observers,
        t_start, 0.0, identity=identity,
    )  # fmt: skip


def _fresh(r: _Run) -> Progress:
    tr, T = r.config.training, r.prog.n_tasks
    n_hist = sum(n // tr.eval_every for n in r.n_steps) if tr.eval_every else 0
    S = tr.seeds
    return Progress(
        state=r.prog.init(r.keys),
        position=np.zeros(2, np.int64),
        done_steps=np.zeros((), np.int64),
        n_hist=np.zeros((), np.int64),
        R=np.full((S, T, T), np.nan, np.float32),
        baseline=np.full((S, T), np.nan, np.float32),
        history=np.full((S, n_hist, T), np.nan, np.float32),
        history_steps=np.full(n_hist, -1, np.int64),
        times=np.zeros(4, np.float64),
        health=np.zeros(2, np.float64),
        health_task=np.full(2, -1, np.int64),
    )


def _resume(r: _Run) -> Progress:
    """The initial progress, or the checkpointed one; the state and data on the devices."""
    r.compile0 = r.prog.compile_time
    p = _fresh(r)
    if r.folder is not None:
        loaded = ckpt.load(r.folder, p, identity=r.identity, finite=lambda q: q.state)
        if loaded is not None:
            p = Progress(loaded.state, *(np.asarray(v) for v in loaded[1:]))
            r.observations = keep_until(ckpt.load_records(r.folder), int(p.done_steps))
    state, r.keys, dev = r.prog.par.place(p.state, r.keys, r.dev)
    r.dev = {**dev, **r.striped}
    r.times0 = p.times.copy()
    return p._replace(state=state)


def _accept(r: _Run) -> None:
    """The config is accepted (checked, checkpoint verified): record it in `out`."""
    if r.folder is None or not parallel.is_main():
        return
    ckpt.write_config(r.folder, r.identity)
    atomic_write_json(r.folder.parent / guard.CONFIG_FILE, r.config.to_dict())


def _times(r: _Run) -> np.ndarray:
    """The cumulative seconds (train, eval, compile, wall) over every segment of the run."""
    now = [r.times["train"], r.times["eval"], r.prog.compile_time - r.compile0]
    return r.times0 + np.array([*now, time.perf_counter() - r.t_start])


def _checkpoint(r: _Run, p: Progress) -> None:
    """Atomically write the progress (and the observation records) to the checkpoint folder."""
    if r.folder is None:
        return
    t, s = (int(v) for v in p.position)
    summary = {"task": t, "step_in_task": s, "done_steps": int(p.done_steps)}
    state = r.prog.par.host(p.state)  # gathered from every process
    if r.prog.par.is_main:
        ckpt.save_records(r.folder, r.observations)  # before the state: see keep_until
        p = p._replace(state=state, times=_times(r))
        ckpt.save(r.folder, p, summary, identity=r.identity)


def _observe(r: _Run, p: Progress, kind: str, task: int) -> None:
    if not r.observers:
        return
    state = merge(r.prog.par.host(p.state), r.prog.static)
    seeds = range(r.config.training.seed, r.config.training.seed + r.config.training.seeds)
    step = int(p.done_steps)
    record = observe(r.observers, r.prog.learner, state, kind, task, step, list(seeds))
    r.observations.append(record)


def _evaluate(r: _Run, p: Progress) -> np.ndarray:
    """`[seeds, T]` test accuracies of every task."""
    return np.asarray(r.timed("eval", r.prog.evaluate, p.state, r.dev))


def _chunk_end(r: _Run, t: int, s: int, budget: int | None) -> int:
    tr, spe = r.config.training, r.spe[t]
    end = min((s // spe + 1) * spe, r.n_steps[t])
    for k in (tr.eval_every, tr.checkpoint_every, tr.observe_every):
        if k:
            end = min(end, (s // k + 1) * k)
    if budget is not None:
        end = min(end, s + max(budget, 1))
    return end


def _train_chunk(r: _Run, p: Progress, t: int, s: int, end: int) -> tuple[Progress, Any]:
    """Steps `s..end` of task `t` in one compiled call (the per-chunk boundary); sets
    `r.diverged` if the loss or the state is not finite afterwards."""
    e = s // r.spe[t]
    state, loss, ok = r.timed(
        "train", r.prog.train, p.state, r.dev, r.keys, t, e, s - e * r.spe[t], end - s
    )
    _diverged(r, ok, t, end, s)
    p = p._replace(
        state=state,
        done_steps=p.done_steps + (end - s),
        position=np.array([t, end], np.int64),
    )
    return p, loss


def _after_chunk(r: _Run, p: Progress, t: int, stopped: bool) -> Progress:
    """History evaluation, observers and checkpoint at the end of a chunk (as configured)."""
    tr, s = r.config.training, int(p.position[1])
    if tr.eval_every and s % tr.eval_every == 0:
        h = int(p.n_hist)
        p.history[:, h] = _evaluate(r, p)
        p.history_steps[h] = r.offset[t] + s
        p = p._replace(n_hist=np.asarray(h + 1))
    if tr.observe_every and s % tr.observe_every == 0:
        _observe(r, p, "step", t)
    if s < r.n_steps[t] and (stopped or (tr.checkpoint_every and s % tr.checkpoint_every == 0)):
        _checkpoint(r, p)
    return p


def _diverged(r: _Run, ok: Any, t: int, step: int, since: int) -> None:
    ok = np.asarray(ok)
    if not ok.all():
        seeds = (np.flatnonzero(~ok) + r.config.training.seed).tolist()
        r.diverged = (t, step, since, seeds)


def _end_task(r: _Run, p: Progress, t: int) -> Progress:
    """The learner's `end_task` hook, row `R[t]`, the weights' health, the observers, a
    checkpoint (unless the state is no longer finite: `r.diverged`)."""
    p = p._replace(state=r.timed("eval", r.prog.end_task, p.state, r.dev, r.keys, t))
    _diverged(r, r.prog.finite(p.state), t, r.n_steps[t], r.n_steps[t])
    if r.diverged is not None:
        return p
    p.R[:, t] = _evaluate(r, p)
    guard.health_update(p.health, p.health_task, r.prog.health(p.state, t), t)
    p = p._replace(position=np.array([t + 1, 0], np.int64))
    _observe(r, p, "task_end", t)
    _checkpoint(r, p)
    return p


def _progress_bar(r: _Run, t: int, initial: int):
    if not r.config.training.progress:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    desc = f"{r.config.learner.name} task {t + 1}/{r.prog.n_tasks}"
    return tqdm(total=r.n_steps[t], initial=initial, desc=desc, leave=True, dynamic_ncols=True)


def _train_task(r: _Run, p: Progress, t: int) -> tuple[Progress, bool]:
    """Train task `t` from the current position; `True` if the run stopped early."""
    stop = r.config.training.stop_after_steps
    s = int(p.position[1]) if int(p.position[0]) == t else 0
    bar, stopped = _progress_bar(r, t, s), False
    while s < r.n_steps[t] and not stopped:
        budget = None if stop is None else stop - int(p.done_steps)
        end = _chunk_end(r, t, s, budget)
        p, loss = _train_chunk(r, p, t, s, end)
        s = end
        if r.diverged is not None:
            stopped = True
            break
        stopped = stop is not None and int(p.done_steps) >= stop
        if bar is not None:
            bar.update(end - bar.n)
            bar.set_postfix(loss=f"{float(np.mean(loss)):.4f}")
        p = _after_chunk(r, p, t, stopped)
    if s == r.n_steps[t] and r.diverged is None:
        p = _end_task(r, p, t)
    if bar is not None:
        bar.close()
    return p, stopped or r.diverged is not None


def _finish(r: _Run, p: Progress) -> Result:
    R, baseline = p.R.astype(np.float64), p.baseline.astype(np.float64)
    done, (train, evals, compiled, wall) = int(p.done_steps), _times(r)
    status, notes = guard.status(
        r.diverged, p.health, p.health_task, getattr(r.config.learner, "max_delta", None),
        complete=int(p.position[0]) == r.prog.n_tasks,
    )  # fmt: skip
    return Result(
        config=r.config,
        R=R,
        baseline=baseline,
        metrics=metrics(R, baseline),
        history=p.history.astype(np.float64),
        history_steps=p.history_steps,
        finished=status == "complete",
        steps=done,
        wall_time=float(wall),
        train_time=float(train),
        eval_time=float(evals),
        compile_time=float(compiled),
        steps_per_second=done / max(float(train), 1e-12),
        state=merge(r.prog.par.host(p.state), r.prog.static),
        observations=list(r.observations),
        status=status,
        diverged_at=None if r.diverged is None else r.diverged[:2],
        warnings=notes,
    )


def run(
    config: Config,
    *,
    model: Any = None,
    dataset: Any = None,
    observers: Any = (),
) -> Result:
    """Train `config.learner` on `config.data.tasks` tasks in sequence; evaluate after each task.

    After the baseline (untrained) evaluation, for each task `t`: `epochs` passes over the task's
    training set in minibatches of `batch_size`, one example from each of `batch_size` stripes
    of the task (example p of the task is in stripe p mod `batch_size`; each stripe is shuffled
    per epoch; ⌊n_t / batch_size⌋ steps per epoch; see `nte/continual/_stripes.py`),
    then the learner's `end_task` hook, then the test accuracy on every task → row `R[t]`
    ([maths: continual-learning metrics](../math.md#continual-learning-metrics)). With
    `training.eval_every = k > 0`, every task is also evaluated every `k` steps
    (`Result.history`).

    `training.seeds` models (seeds `seed, seed + 1, ...`) are trained together: one compiled
    loop per chunk of steps, `vmap`ped over seeds. Seed `s` uses
    `jax.random.split(jax.random.key(s), 4)` = (model init, learner init, batch order, end-of-task
    sample), so a run with `seeds = n` equals `n` runs with `seeds = 1`.

    With `training.out` set, checkpoints are written atomically to `out/checkpoint/` at every
    task boundary and every `checkpoint_every` steps. Calling `run` again with the same config
    (and a model of the same structure and shapes) resumes from the last checkpoint and produces
    the same `R` as an uninterrupted run. An untrustworthy checkpoint (corrupt, of another
    config, holding NaN) raises an [`nte.continual.CheckpointError`][] naming the file. `out`
    is locked for the call (a second process fails at once, naming this PID); killed writers'
    temporary files are removed first; `out/config.json` is written once the config is
    accepted; `training.overwrite` discards what `out` held. Timings add up over resumes.
    The loss and state are checked for NaN/+inf at every chunk boundary: the first non-finite
    value stops the run (`Result.status == "diverged"`, `Result.diverged_at`). Weights
    (nearly) all zero or all at the `max_delta` clip at a task end give a warning
    (`Result.warnings`, each also a `RuntimeWarning`).

    **Arguments:**

    - `config`: a [`nte.continual.Config`][].
    - `model`: a function `key -> eqx.Module` whose module maps ONE flattened example
      (`[features]`) to `[num_outputs]` logits (e.g. `lambda k: eqx.nn.MLP(64, 10, 32, 1,
      key=k)`, or an [`nte.nn.CNN`][], which accepts flattened images). It is traced once
      under `jax.vmap` over the seeds' keys (one model per seed). Default: the
      [`nte.nn.MLP`][] of `config.model`. Checked on one key and one example before any
      training (a `ValueError` naming `model`).
    - `dataset`: optionally an `nte.data.Dataset`-like object to use instead of loading
      `config.data.dataset`.
    - `observers`: functions `(model, state, event) -> dict of numbers` called at every task
      end (and every `training.observe_every` steps), see [`nte.continual.Event`][]; their
      values are in `Result.observations`.

    **Returns:**

    A [`nte.continual.Result`][].
    """
    with contextlib.ExitStack() as stack:
        r = _prepare(config, model, dataset, observers, stack)
        p = _resume(r)
        _accept(r)
        if int(p.position[0]) == 0 and int(p.position[1]) == 0:
            p = p._replace(baseline=_evaluate(r, p))
        for t in range(int(p.position[0]), r.prog.n_tasks):
            p, stopped = _train_task(r, p, t)
            if stopped:
                break
        return _finish(r, p)
