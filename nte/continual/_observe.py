"""Observers: functions of the models and learner states called at task ends (and every k steps).

An observer is `observer(model, state, event) -> dict[str, number or array]`, called on the
host once per seed: `model` is the learner's evaluation model for `event.task`
(`learner.eval_model(state, task)`), `state` that seed's learner state (e.g. an
[`nte.continual.OptaxState`][]), `event` an [`nte.continual.Event`][]. The returned numbers
land in `Result.observations` and in `metrics.json` (`Result.summary()["observations"]`): one
record per event, each value a list over seeds.
"""

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


class Event(NamedTuple):
    """When an observer is called.

    **Fields:** `kind` (`"task_end"`: after a task's `end_task` hook and evaluation; `"step"`:
    every `Config.training.observe_every` steps), `task` (the task index), `step` (training
    steps done, over all tasks), `seed` (the seed of the model observed).
    """

    kind: str
    task: int
    step: int
    seed: int


Observer = Callable[[Any, Any, Event], dict[str, Any]]


def check_observers(observers: Any) -> tuple[Observer, ...]:
    """`observers` as a tuple, or a `ValueError` naming `observers`."""
    if callable(observers):
        observers = (observers,)
    if not isinstance(observers, (tuple, list)) or not all(callable(o) for o in observers):
        raise ValueError(
            "`observers` must be a sequence of functions `(model, state, event) -> dict`, "
            f"got {observers!r}."
        )
    return tuple(observers)


def _value(v: Any, name: str) -> Any:
    try:
        a = np.asarray(v, np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"observer value {name!r} must be a number or an array, got {v!r}.") from e
    return float(a) if a.ndim == 0 else a.tolist()


def observe(
    observers: tuple[Observer, ...],
    learner: Any,
    state: Any,
    kind: str,
    task: int,
    step: int,
    seeds: Sequence[int],
) -> dict[str, Any]:
    """One record `{"kind", "task", "step", name: [value per seed], ...}` of every observer on
    the stacked host `state` (leading seed axis)."""
    record: dict[str, Any] = {"kind": kind, "task": task, "step": step}
    for i, seed in enumerate(seeds):
        one = jax.tree_util.tree_map(lambda v, i=i: v[i] if eqx.is_array(v) else v, state)
        model = learner.eval_model(one, jnp.int32(task))
        for obs in observers:
            out = obs(model, one, Event(kind, task, step, seed))
            if not isinstance(out, dict):
                raise TypeError(f"an observer must return a dict, got {type(out).__name__}.")
            for name, v in out.items():
                if name in ("kind", "task", "step"):
                    raise ValueError(f"observer value name {name!r} is reserved.")
                record.setdefault(name, []).append(_value(v, name))
    return record


def keep_until(records: list[dict[str, Any]], done_steps: int) -> list[dict[str, Any]]:
    """The records of a resumed run's checkpoint, up to the steps it has done."""
    return [r for r in records if r["step"] <= done_steps]


def ensemble_observer(model: Any, state: Any, event: Event) -> dict[str, Any]:
    """The tangent ensemble of an NTE learner ([`nte.ensemble_stats`][]): experts pruned, the
    effective ensemble size `exp(H(w))`, its fraction of all experts, and the mass of each
    parameter leaf (`ensemble_mass<path>`), expanded around the learner's own θ0 (the origin,
    or `ScaleByNTEState.origin` in the init variant). The NTE learner logs it by default.
    """
    del event
    from .._ensemble_stats import ensemble_stats
    from .._posterior import ScaleByNTEState

    is_nte = lambda x: isinstance(x, ScaleByNTEState)  # noqa: E731
    found = [s for s in jax.tree.leaves(state, is_leaf=is_nte) if is_nte(s)]
    stats = ensemble_stats(model, center=found[0].origin if found else None)
    size = sum(np.size(x) for x in jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array)))
    masses = jax.tree_util.tree_flatten_with_path(stats.mass)[0]
    return {
        "ensemble_num_pruned": stats.num_pruned,
        "ensemble_effective_size": stats.effective_size,
        "ensemble_effective_fraction": stats.effective_size / size,
        **{f"ensemble_mass{jax.tree_util.keystr(p)}": m for p, m in masses},
    }
