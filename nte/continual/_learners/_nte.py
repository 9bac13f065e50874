"""The Neural Tangent Ensemble posterior update ([`nte.nte`][]) as a continual learner."""

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, Int, PRNGKeyArray, PyTree

from ..._errors import check_choice, check_positive
from ..._posterior import scale_by_nte
from ..._split import merge, split
from ...likelihood import Auto, Chunked, Series, Sharded, Vmap, expert_log_likelihoods
from .._learner import AbstractLearner, Task, batch_targets, cross_entropy, register_learner


class NTEState(eqx.Module):
    """Training state of an [`nte.continual.NTELearner`][]: the model and the optimizer state.

    `opt_state` is an [`nte.ScaleByNTEState`][] (fixed signs, log-magnitudes, counters).
    """

    model: eqx.Module
    opt_state: PyTree


class NTELearner(AbstractLearner):
    """The NTE posterior update on per-example expert log-likelihoods.

    Each step computes `L_i = η Σ_b log(1 − β s_i g_{b,i})` with
    [`nte.expert_log_likelihoods`][] (no `B × N` tensor when `method="auto"` can avoid it) and
    applies [`nte.nte`][] to it. Build it with [`nte.continual.nte`][].
    """

    # Its likelihood uses `lax.cond` (series vs chunked, the "cap" second pass); under `vmap`
    # with a batched predicate both branches run, so the harness maps over seeds instead.
    vmap_seeds: ClassVar[bool] = False

    inv_temperature: float
    eta: float
    max_delta: float | None
    renormalize: bool
    init_scale: float
    invalid: str
    method: str
    chunk_size: int | None

    def _optimizer(self, key=None):
        # the prior and projection only: β, η and `invalid` belong to the likelihood
        return scale_by_nte(
            max_delta=self.max_delta,
            renormalize=self.renormalize,
            init_scale=self.init_scale,
            key=key,
        )

    def _method(self) -> Sharded:
        """Per-device sums + psum under a data mesh (the method itself without one)."""
        if self.method == "vmap":
            return Sharded(Vmap())
        kind = {"auto": Auto, "chunked": Chunked, "series": Series}[self.method]
        return Sharded(kind(chunk_size=self.chunk_size))

    def init(self, model: eqx.Module, *, key: PRNGKeyArray) -> NTEState:
        params, _ = split(model)
        return NTEState(model, self._optimizer(key).init(params))

    def step(
        self, state: NTEState, x: Float[Array, "batch ..."], y: Int[Array, " batch"], task: Task
    ) -> tuple[NTEState, dict[str, Array]]:
        params, static = split(state.model)
        targets = batch_targets(y, task)
        loglik = expert_log_likelihoods(
            cross_entropy,
            state.model,
            x,
            targets,
            signs=state.opt_state.signs,
            inv_temperature=self.inv_temperature,
            eta=self.eta,
            method=self._method(),
            invalid=self.invalid,
        )
        updates, opt_state = self._optimizer().update(loglik, state.opt_state, params)
        loss = jnp.mean(jax.vmap(cross_entropy, in_axes=(None, 0, 0))(state.model, x, targets))
        model = merge(optax.apply_updates(params, updates), static)
        aux = {
            "loss": loss,
            "num_pruned": opt_state.num_pruned,
            "num_invalid": opt_state.num_invalid,
        }
        return NTEState(model, opt_state), aux

    def eval_model(self, state: NTEState, task_index: Int[Array, ""]) -> eqx.Module:
        del task_index
        return state.model


def nte(
    inv_temperature: float,
    eta: float = 1.0,
    max_delta: float | None = None,
    *,
    renormalize: bool = True,
    init_scale: float = 0.0,
    invalid: str = "cap",
    method: str = "auto",
    chunk_size: int | None = None,
) -> NTELearner:
    """The NTE posterior update as a continual learner.

    **Arguments:**

    - `inv_temperature`: β > 0, multiplies the per-example gradients.
    - `eta`: η > 0, the likelihood exponent (1 is the plain posterior).
    - `max_delta`: optional clip of `|Δ_i|` after renormalization.
    - `renormalize`, `init_scale`: passed to [`nte.nte`][] (the prior and projection).
    - `invalid`: the invalid-expert policy of the likelihood.
    - `method`, `chunk_size`: the likelihood method of [`nte.expert_log_likelihoods`][]
      (`"auto"`, `"chunked"`, `"series"` take `chunk_size`; `"vmap"` ignores it).

    **Returns:**

    An [`nte.continual.NTELearner`][].
    """
    check_positive(inv_temperature, "inv_temperature")
    check_positive(eta, "eta")
    if max_delta is not None:
        check_positive(max_delta, "max_delta")
    check_positive(init_scale, "init_scale", allow_zero=True)
    check_choice(method, ("auto", "vmap", "chunked", "series"), "method")
    return NTELearner(
        float(inv_temperature),
        float(eta),
        None if max_delta is None else float(max_delta),
        bool(renormalize),
        float(init_scale),
        invalid,
        method,
        chunk_size,
    )


@register_learner("nte")
def _from_config(config):
    return nte(config.beta, config.eta, config.max_delta, **config.learner_kwargs)
