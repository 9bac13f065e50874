"""The model of a run: the factory `key -> eqx.Module`, its checks, and its identity.

[`nte.continual.run`][] takes any factory `model(key) -> eqx.Module` whose module maps ONE
flattened example (`Float[Array, "features"]`) to `[num_outputs]` logits; by default the
[`nte.nn.MLP`][] of `Config.model`. The factory is checked before anything is trained, and the
structure and leaf shapes of the module it returns are part of the checkpoint identity.
"""

import re
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr

from ..nn import MLP
from ._config import ModelConfig
from ._tasks import Tasks


class DefaultModel(eqx.Module):
    """The factory of the [`nte.nn.MLP`][] described by a [`nte.continual.ModelConfig`][]."""

    config: ModelConfig = eqx.field(static=True)
    in_size: int = eqx.field(static=True)
    out_size: int = eqx.field(static=True)

    def __call__(self, key) -> MLP:
        c = self.config
        return MLP(
            self.in_size,
            c.width,
            c.depth,
            self.out_size,
            use_bias=c.use_bias,
            parameterization=c.parameterization,
            key=key,
        )


def _fail(what: str) -> ValueError:
    return ValueError(f"`model` must be a function `key -> eqx.Module` {what}")


def check_model(model: Any, tasks: Tasks) -> eqx.Module:
    """Check the factory `model` on one key and one example (shapes only, no FLOPs); return the
    abstract module (`jax.ShapeDtypeStruct` leaves). Raises one `ValueError` naming `model`."""
    if not callable(model):
        raise _fail(f"(a callable), got {type(model).__name__}.")
    try:
        abstract = eqx.filter_eval_shape(model, jr.key(0))
    except Exception as e:  # noqa: BLE001 - shown to the user
        raise _fail(f"; calling it on a key failed: {type(e).__name__}: {e}") from e
    if not isinstance(abstract, eqx.Module):
        raise _fail(f"; it returned a {type(abstract).__name__}, not an eqx.Module.")
    x = jax.ShapeDtypeStruct((tasks.num_features,), jnp.float32)
    try:
        out = eqx.filter_eval_shape(lambda k, xi: model(k)(xi), jr.key(0), x)
    except Exception as e:  # noqa: BLE001
        raise _fail(
            f"whose module maps one example of shape ({tasks.num_features},) to logits; the "
            f"call failed: {type(e).__name__}: {e}"
        ) from e
    expected = (tasks.num_outputs,)
    if not (isinstance(out, jax.ShapeDtypeStruct) and out.shape == expected):
        got = out.shape if isinstance(out, jax.ShapeDtypeStruct) else type(out).__name__
        raise _fail(
            f"whose module returns {tasks.num_outputs} logits (the tasks' classes) of shape "
            f"{expected} for one example; it returned {got}."
        )
    return abstract


def model_identity(abstract: eqx.Module) -> dict[str, Any]:
    """The structure (the treedef of its arrays) and the leaf shapes/dtypes of a module."""
    arrays = eqx.filter(abstract, lambda v: isinstance(v, (jax.ShapeDtypeStruct, jax.Array)))
    structure = re.sub(r" at 0x[0-9a-f]+", "", str(jax.tree_util.tree_structure(arrays)))
    leaves = [[list(v.shape), str(v.dtype)] for v in jax.tree_util.tree_leaves(arrays)]
    return {"structure": structure, "leaves": leaves}


def default_model(config: ModelConfig, tasks: Tasks) -> DefaultModel:
    """The factory of `Config.model`'s MLP for `tasks`."""
    return DefaultModel(config, tasks.num_features, tasks.num_outputs)


def seed_keys(seed: int | jax.Array) -> jax.Array:
    """The four keys of one seed of a run: `[0]` builds its model, `[1]` initializes its
    learner, `[2]`, `[3]` its batches and `end_task` hooks."""
    return jr.split(jr.key(seed), 4)


def initial_model(config: Any, seed: int, *, model: Any = None, dataset: Any = None) -> Any:
    """The model seed `seed` of `nte.continual.run(config, model=model, dataset=dataset)` starts
    from, before any step: `model(key)` with that seed's model key (the default MLP of
    `config.model` without `model`; the tasks are loaded to size it). Observers that compare
    training with its start (e.g. [`nte.gradient_alignment`][]) rebuild it with this, so a
    resumed run gets the same model."""
    from ._tasks import load_tasks

    factory = (
        model if model is not None else default_model(config.model, load_tasks(config, dataset))
    )
    return eqx.filter_jit(factory)(seed_keys(seed)[0])  # compiled as in `run` (the same bits)
