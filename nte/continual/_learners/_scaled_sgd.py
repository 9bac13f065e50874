"""Scaled (and optionally projected) SGD, the additive NTE variant, as a continual learner."""

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, Int, PRNGKeyArray, PyTree

import nte as _root

from ..._errors import check_positive
from ..._per_example import per_example_grads
from ..._split import merge, split
from .._learner import AbstractLearner, Task, batch_targets, cross_entropy, register_learner


class ScaledSGDState(eqx.Module):
    """Training state of an [`nte.continual.ScaledSGDLearner`][]."""

    model: eqx.Module
    opt_state: PyTree


class ScaledSGDLearner(AbstractLearner):
    """Scaled SGD on per-example gradients ([`nte.scale_by_scaled_sgd`][], design doc §3).

    Each step computes the per-example gradients of [`nte.continual.cross_entropy`][] and
    applies `Δ ← Δ − lr·|Δ|⊙g_b` for every example of the batch in turn. Build it with
    [`nte.continual.scaled_sgd`][].
    """

    optimizer: optax.GradientTransformationExtraArgs

    def init(self, model: eqx.Module, *, key: PRNGKeyArray) -> ScaledSGDState:
        del key
        params, _ = split(model)
        return ScaledSGDState(model, self.optimizer.init(params))

    def step(
        self,
        state: ScaledSGDState,
        x: Float[Array, "batch ..."],
        y: Int[Array, " batch"],
        task: Task,
    ) -> tuple[ScaledSGDState, dict[str, Array]]:
        params, static = split(state.model)
        targets = batch_targets(y, task)
        grads = per_example_grads(cross_entropy, state.model, x, targets)
        updates, opt_state = self.optimizer.update(grads, state.opt_state, params)
        loss = jnp.mean(jax.vmap(cross_entropy, in_axes=(None, 0, 0))(state.model, x, targets))
        model = merge(optax.apply_updates(params, updates), static)
        return ScaledSGDState(model, opt_state), {"loss": loss}

    def eval_model(self, state: ScaledSGDState, task_index: Int[Array, ""]) -> eqx.Module:
        del task_index
        return state.model


def scaled_sgd(
    learning_rate: float, *, renormalize: bool = False, max_delta: float | None = None
) -> ScaledSGDLearner:
    """Scaled SGD: per example `Δ ← Δ − lr·|Δ|⊙g_b` ([`nte.scale_by_scaled_sgd`][]).

    **Arguments:**

    - `learning_rate`: the step size (> 0).
    - `renormalize`: rescale `Δ` to the initial L1 norm after each batch.
    - `max_delta`: optional clip of `|Δ_i|`.

    **Returns:**

    An [`nte.continual.ScaledSGDLearner`][].
    """
    check_positive(learning_rate, "learning_rate")
    if max_delta is not None:
        check_positive(max_delta, "max_delta")
    tx = _root.scale_by_scaled_sgd(learning_rate, renormalize=renormalize, max_delta=max_delta)
    return ScaledSGDLearner(tx)


@register_learner("scaled_sgd")
def _from_config(config):
    return scaled_sgd(config.lr, max_delta=config.max_delta, **config.learner_kwargs)
