"""The compiled programs of a run (init, train chunk, end of task, evaluation) and their cache.

Each program is compiled once per configuration with `jax.jit` under the run's device mesh
(`_parallel.py`); the training rows come in stripes (`_stripes.py`), the test sets and task
tables replicated.
"""

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax import lax
from jax.experimental.compilation_cache import compilation_cache

from . import _parallel as parallel, _stripes as stripes
from ._config import Config
from ._learner import AbstractLearner, LearnerContext, Task, predict
from ._tasks import Tasks, task_batch, task_inputs


def use_compile_cache(folder: str | None) -> None:
    """Point JAX's persistent compilation cache at `folder` (process-wide; no-op for `None` or
    the folder already in use) and cache every program, however fast it compiles."""
    if folder is None:
        return
    path = str(Path(folder).expanduser().resolve())
    if jax.config.jax_compilation_cache_dir == path:
        return
    Path(path).mkdir(parents=True, exist_ok=True)
    compilation_cache.set_cache_dir(path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    compilation_cache.reset_cache()  # a cache checked before (off, or elsewhere) is re-read


def device_tasks(tasks: Tasks) -> dict[str, np.ndarray]:
    """The task tables replicated on every device (the training rows go in stripes)."""
    names = ("x_test", "y_test", "permutations", "test_index", "test_count", "masks")
    return {n: getattr(tasks, n) for n in (*names, "label_map")}


class _Programs:
    """The compiled programs of one run (train chunk, end of task, evaluation), timed."""

    def __init__(self, config: Config, tasks: Tasks, learner: AbstractLearner, model: Callable):
        self.config, self.learner, self.model, self.static = config, learner, model, None
        self.n_tasks = tasks.n_tasks
        self.has_end_task = type(learner).end_task is not AbstractLearner.end_task
        mode = config.training.seed_mode
        self.use_vmap = learner.vmap_seeds if mode == "auto" else mode == "vmap"
        self.cache: dict[Any, Callable] = {}
        self.compile_time = 0.0
        self.par = parallel.DataParallel(
            config.training, config.devices
        )  # the device mesh (see _parallel.py)

    def _compiled(self, name: str, fn: Callable, *args, **static) -> Callable:
        key = (name, tuple(sorted(static.items())))
        if key not in self.cache:
            t0 = time.perf_counter()
            self.cache[key] = self.par.lower(
                name, fn, *args, static_argnames=tuple(static), **static
            )
            self.cache[key] = self.cache[key].compile()
            self.compile_time += time.perf_counter() - t0
        return self.cache[key]

    def init(self, keys):
        """The stacked initial states (arrays only); sets `self.static` on first use."""
        init = self._compiled("init", lambda k: eqx.filter(self._init(k), eqx.is_array), keys)
        if self.static is None:
            shapes = eqx.filter_eval_shape(self._init, keys)  # no FLOPs: the non-array parts
            self.static = eqx.filter(shapes, eqx.is_array, inverse=True)
        return init(keys)

    def _init(self, keys):
        def one_seed(k):
            return self.learner.init(self.model(k[0]), key=k[1])

        return eqx.filter_vmap(one_seed)(keys)

    def train(self, arrays, dev, keys, t: int, epoch: int, start: int, length: int):
        args = (arrays, dev, keys, np.int32(t), np.int32(epoch), np.int32(start), np.int32(length))
        return self._compiled("train", self._train, *args)(*args)

    def end_task(self, arrays, dev, keys, t: int):
        if not self.has_end_task:  # the default hook is the identity: nothing to compile
            return arrays
        args = (arrays, dev, keys, np.int32(t))
        return self._compiled("end_task", self._end_task, *args)(*args)

    def evaluate(self, arrays, dev):
        return self._compiled("evaluate", self._evaluate, arrays, dev)(arrays, dev)

    def finite(self, arrays):
        """`[seeds]` bool: no NaN or +inf in the state (see `finite`)."""
        fn = lambda a: _over_seeds(finite, a, use_vmap=self.use_vmap)
        return self._compiled("finite", fn, arrays)(arrays)

    def health(self, arrays, t: int):
        """`[seeds, 3]` counts of the evaluation model's weights for task `t`: all, exactly
        zero, at the `max_delta` clip (none without one)."""
        args = (arrays, np.int32(t))
        return self._compiled("health", self._health, *args)(*args)

    def _health(self, arrays, t):
        clip = getattr(self.config.learner, "max_delta", None)

        def one_seed(arr):
            model = self.learner.eval_model(self._state(arr), t)
            leaves = jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array))
            count = lambda f: sum(jnp.sum(f(v), dtype=jnp.int32) for v in leaves)
            at_clip = (lambda v: jnp.abs(v) >= np.float32(clip) * (1 - 1e-6)) if clip else None
            pinned = count(at_clip) if at_clip else jnp.zeros((), jnp.int32)
            total = jnp.asarray(sum(v.size for v in leaves), jnp.int32)
            return jnp.stack([total, count(lambda v: v == 0), pinned])

        return _over_seeds(one_seed, arrays, use_vmap=self.use_vmap)

    def _state(self, arr):
        return eqx.combine(arr, self.static)

    def _train(self, arrays, dev, keys, t, epoch, start, length):
        learner, task = self.learner, Task(t, dev["masks"][t])
        count = dev["stripe_count"][t]  # [stripes]: one example of every stripe per step
        per_stripe = dev["stripe_index"].shape[2]

        def one_seed(arr, k):
            u = jr.uniform(jr.fold_in(jr.fold_in(k[2], t), epoch), count.shape + (per_stripe,))
            valid = jnp.arange(per_stripe) < count[:, None]
            order = jnp.argsort(jnp.where(valid, u, 2.0), axis=1)  # each stripe's order

            def body(i, carry):
                a, total = carry
                pos = lax.dynamic_slice_in_dim(order, start + i, 1, axis=1)
                x, y = parallel.shard_batch(task_inputs(dev, t, *stripes.gather(dev, t, pos)))
                state, aux = learner.step(self._state(a), x, y, task)
                return eqx.filter(state, eqx.is_array), total + aux["loss"]

            # A dynamic trip count: one compiled program serves every chunk length.
            arr, total = lax.fori_loop(0, length, body, (arr, jnp.zeros((), jnp.float32)))
            loss = total / length
            return arr, loss, jnp.isfinite(loss) & finite(arr)

        return _over_seeds(one_seed, arrays, keys, use_vmap=self.use_vmap)

    def _end_task(self, arrays, dev, keys, t):
        n, count = self.config.training.end_task_examples, dev["stripe_count"][t]
        per = -(-n // count.shape[0])  # examples drawn per stripe
        task = Task(t, dev["masks"][t])

        def one_seed(arr, k):
            key = jr.fold_in(k[3], t)
            pos = jr.randint(jr.fold_in(key, 0), count.shape + (per,), 0, count[:, None])
            x, y = (v[:n] for v in stripes.gather(dev, t, pos))  # n examples, stripe-major
            x, y = task_inputs(dev, t, x, y)
            state = self.learner.end_task(self._state(arr), t, x, y, task, key=jr.fold_in(key, 1))
            return eqx.filter(state, eqx.is_array)

        return _over_seeds(one_seed, arrays, keys, use_vmap=self.use_vmap)

    def _evaluate(self, arrays, dev):
        maxn = dev["test_index"].shape[1]

        def one_seed(arr):
            state = self._state(arr)

            def one_task(j):
                model = self.learner.eval_model(state, j)
                x, y = task_batch(dev, j, dev["test_index"][j], test=True)
                logits = lax.map(
                    model, x, batch_size=min(self.config.training.eval_batch_size, maxn)
                )
                valid = jnp.arange(maxn) < dev["test_count"][j]
                correct = (predict(logits, dev["masks"][j]) == y) & valid
                return jnp.sum(correct) / dev["test_count"][j]

            return lax.map(one_task, jnp.arange(self.n_tasks, dtype=jnp.int32))

        return _over_seeds(one_seed, arrays, use_vmap=self.use_vmap)


def finite(arrays) -> jax.Array:
    """`True` if no inexact leaf of `arrays` holds NaN or +inf (−inf is allowed: the
    log-magnitude of a pruned expert in the NTE state)."""
    ok = jnp.asarray(True)
    for v in jax.tree_util.tree_leaves(eqx.filter(arrays, eqx.is_inexact_array)):
        ok = ok & ~jnp.any(jnp.isnan(v) | jnp.isposinf(v))
    return ok


def _over_seeds(fn: Callable, *args, use_vmap: bool = True):
    """`fn` over the leading seed axis: `jax.vmap`, or `lax.map` if not `use_vmap`.

    A single seed is neither: without `vmap` a learner's `lax.cond`s stay conditionals (under
    `vmap` with a batched predicate both branches run).
    """
    n = jax.tree_util.tree_leaves(args)[0].shape[0]
    if n > 1:
        if use_vmap:  # the seed axis is split over the "seed" mesh axis
            return jax.vmap(fn, spmd_axis_name=parallel.SEED_AXIS)(*args)
        return lax.map(lambda a: fn(*a), args)
    out = fn(*jax.tree_util.tree_map(lambda v: v[0], args))
    return jax.tree_util.tree_map(lambda v: v[None], out)


_CACHE: dict[Any, _Programs] = {}
_CACHE_SIZE = 8


def programs(
    config: Config, tasks: Tasks, model: Callable, abstract: eqx.Module, custom: bool
) -> _Programs:
    """The compiled programs for `config` and the factory `model` (its abstract module
    `abstract`), reused across runs whose programs are identical (a `custom` factory is part
    of the key; the default MLP factory is described by `config`)."""
    fields = config.identity()
    for name in ("seed", "eval_every", "checkpoint_every"):
        fields["training"].pop(name)  # these change arguments, not programs
    fields["data"].pop("task_seed")
    arrays = {n: np.shape(getattr(tasks, n)) for n in ("x_train", "x_test", "train_index")}
    devices = (config.devices.devices, config.devices.mesh)
    key = json.dumps([fields, arrays, tasks.test_index.shape, devices], sort_keys=True, default=str)
    key = (key, model if custom else None)
    if key not in _CACHE:
        while len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        learner = config.learner.build(LearnerContext(tasks.n_tasks, abstract))
        _CACHE[key] = _Programs(config, tasks, learner, model)
    return _CACHE[key]
