"""One learner for "an optax transformation and a gradient source":
[`nte.continual.OptaxLearner`][].

SGD, Adam, scaled SGD, the NTE posterior update, pruning-only and magnitude pruning are all
`(model, opt_state)` learners: each step computes something from the batch (the mean-batch
gradient, the per-example gradients, the expert log-likelihoods) and hands it to
`optimizer.update`. They differ only in that *gradient source* and the transformation.
"""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, Int, PRNGKeyArray, PyTree

from ..._per_example import per_example_grads
from ..._split import merge, split
from ...likelihood import (
    AbstractMethod,
    Auto,
    Chunked,
    Series,
    Sharded,
    Vmap,
    expert_log_likelihoods,
)
from .._learner import AbstractLearner, Task, batch_targets, cross_entropy


class OptaxState(eqx.Module):
    """Training state of an [`nte.continual.OptaxLearner`][]: the model and the optimizer state."""

    model: eqx.Module
    opt_state: PyTree


class AbstractGradientSource(eqx.Module):
    """What an [`nte.continual.OptaxLearner`][] hands to `optimizer.update` on a batch.

    `__call__(model, x, targets, opt_state) -> (updates_input, loss)`: `targets` are the
    per-example `(labels, masks)` of [`nte.continual.cross_entropy`][]; `loss` is the mean
    batch loss (reported as `aux["loss"]`). `aux(opt_state)` adds diagnostics read from the new
    optimizer state. `vmap_seeds`: see [`nte.continual.AbstractLearner`][].
    """

    vmap_seeds = True

    def __call__(self, model, x, targets, opt_state) -> tuple[Any, Array]:
        raise NotImplementedError

    def aux(self, opt_state: PyTree) -> dict[str, Array]:
        """Diagnostics read from the optimizer state after the update (default: none)."""
        del opt_state
        return {}


def _mean(model, x, targets) -> Array:
    return jnp.mean(jax.vmap(cross_entropy, in_axes=(None, 0, 0))(model, x, targets))


class MeanGradient(AbstractGradientSource):
    """The gradient of the mean-batch cross-entropy (SGD, Adam, pruning)."""

    def __call__(self, model, x, targets, opt_state):
        del opt_state
        params, static = split(model)
        value, grads = jax.value_and_grad(lambda p: _mean(merge(p, static), x, targets))(params)
        return grads, value


class PerExampleGradients(AbstractGradientSource):
    """The per-example gradients `[batch, ...]` ([`nte.per_example_grads`][]; scaled SGD)."""

    def __call__(self, model, x, targets, opt_state):
        del opt_state
        return per_example_grads(cross_entropy, model, x, targets), _mean(model, x, targets)


def likelihood_method(method: str, chunk_size: int | None) -> AbstractMethod:
    """The [`nte.likelihood`][] method object for the harness's `method` name and `chunk_size`
    (the ONE place the harness builds it), split over the data axis of the mesh if there is
    one ([`nte.likelihood.Sharded`][])."""
    if method == "vmap":
        return Sharded(Vmap())
    methods = {"auto": Auto, "chunked": Chunked, "series": Series}
    return Sharded(methods[method](chunk_size=chunk_size))


class TangentLikelihoods(AbstractGradientSource):
    """The expert log-likelihoods `L_i = η Σ_b log(1 − β s_i g_{b,i})` of the batch
    ([`nte.expert_log_likelihoods`][], summed per device under a data mesh), for the NTE
    posterior update ([maths: the posterior update](../math.md#the-posterior-update)).

    **Fields:** `inv_temperature` (β), `eta` (η), `invalid` (the invalid-expert policy), `method`
    and `chunk_size` (the likelihood method, see
    [maths: likelihood methods](../math.md#likelihood-methods)). The signs are read from the
    optimizer state (`opt_state.signs`).
    """

    # The likelihood uses `lax.cond` (series vs chunked, the "cap" second pass); under `vmap`
    # with a batched predicate both branches run, so the harness maps over seeds instead.
    vmap_seeds = False

    inv_temperature: float
    eta: float
    invalid: str
    method: str
    chunk_size: int | None

    def __call__(self, model, x, targets, opt_state):
        loglik = expert_log_likelihoods(  # per-device sums + psum under a data mesh
            cross_entropy,
            model,
            x,
            targets,
            signs=opt_state.signs,
            inv_temperature=self.inv_temperature,
            eta=self.eta,
            invalid=self.invalid,
            method=likelihood_method(self.method, self.chunk_size),
        )
        return loglik, _mean(model, x, targets)

    def aux(self, opt_state):
        return {"num_pruned": opt_state.num_pruned, "num_invalid": opt_state.num_invalid}


Optimizer = optax.GradientTransformation | Callable[[PRNGKeyArray | None], Any]


class OptaxLearner(AbstractLearner):
    """Trains the model with an `optax` transformation of a gradient source.

    Each step computes `source(model, x, targets, opt_state)` (by default the mean-batch
    gradient of [`nte.continual.cross_entropy`][]) and applies
    `optimizer.update(that, opt_state, params)`.

    **Arguments:**

    - `optimizer`: an `optax.GradientTransformation`, or a function `key -> transformation`
      for transformations that draw random state in `init` (it is called with the learner key
      in `init` and with `None` in `step`).
    - `source`: an [`nte.continual.AbstractGradientSource`][] (default
      [`nte.continual.MeanGradient`][]).
    """

    optimizer: Optimizer
    source: AbstractGradientSource = MeanGradient()

    @property
    def vmap_seeds(self) -> bool:  # type: ignore[override]
        return self.source.vmap_seeds

    def transformation(self, key: PRNGKeyArray | None = None) -> optax.GradientTransformation:
        """The optax transformation (built with `key` if `optimizer` is a function)."""
        if isinstance(self.optimizer, optax.GradientTransformation):
            return self.optimizer
        return self.optimizer(key)

    def init(self, model: eqx.Module, *, key: PRNGKeyArray) -> OptaxState:
        params, _ = split(model)
        return OptaxState(model, self.transformation(key).init(params))

    def step(
        self, state: OptaxState, x: Float[Array, "batch ..."], y: Int[Array, " batch"], task: Task
    ) -> tuple[OptaxState, dict[str, Array]]:
        params, static = split(state.model)
        grads, loss = self.source(state.model, x, batch_targets(y, task), state.opt_state)
        updates, opt_state = self.transformation().update(grads, state.opt_state, params)
        model = merge(optax.apply_updates(params, updates), static)
        return OptaxState(model, opt_state), {"loss": loss, **self.source.aux(opt_state)}

    def eval_model(self, state: OptaxState, task_index: Int[Array, ""]) -> eqx.Module:
        del task_index
        return state.model


class ResettingOptaxLearner(OptaxLearner):
    """An [`nte.continual.OptaxLearner`][] whose optimizer state is initialized afresh at every
    task end (e.g. SGD's momentum buffer reset between tasks: `SGDConfig(reset_momentum=True)`)."""

    def end_task(self, state: OptaxState, task_index, x, y, task, *, key) -> OptaxState:
        del task_index, x, y, task
        params, _ = split(state.model)
        return OptaxState(state.model, self.transformation(key).init(params))
