"""The Neural Tangent Ensemble posterior update ([`nte.nte`][]) as a continual learner."""

import equinox as eqx
import jax
from jaxtyping import Array, Float, Int, PRNGKeyArray, PyTree

import nte as _root  # the optimizer and likelihoods live in the top-level package

from ..._errors import check_choice, check_positive
from ..._sharded_likelihood import sharded_expert_log_likelihoods
from ..._split import merge, split
from .._learner import AbstractLearner, Task, batch_targets, cross_entropy, register_learner


class NTEState(eqx.Module):
    """Training state of an [`nte.continual.NTELearner`][]: model, optimizer state, fixed signs."""

    model: eqx.Module
    opt_state: PyTree
    signs: PyTree


class NTELearner(AbstractLearner):
    """The NTE posterior update on per-example expert log-likelihoods (design doc §2).

    Each step computes `L_i = η Σ_b log(1 − β s_i g_{b,i})` with
    [`nte.expert_log_likelihoods`][] (no `B × N` tensor when `method="auto"` can avoid it) and
    applies [`nte.nte`][] to it. Build it with [`nte.continual.nte`][].
    """

    inv_temperature: float
    eta: float
    max_delta: float | None
    renormalize: bool
    init_scale: float
    invalid: str
    method: str
    chunk_size: int | None

    def _optimizer(self, key=None):
        return _root.nte(
            self.inv_temperature,
            eta=self.eta,
            max_delta=self.max_delta,
            renormalize=self.renormalize,
            init_scale=self.init_scale,
            invalid=self.invalid,
            key=key,
        )

    def init(self, model: eqx.Module, *, key: PRNGKeyArray) -> NTEState:
        params, static = split(model)
        opt_state = self._optimizer(key).init(params)
        signs = getattr(opt_state, "signs", None)
        if signs is None:
            signs = _root.sign_mask(params)
        return NTEState(model, opt_state, signs)

    def step(
        self, state: NTEState, x: Float[Array, "batch ..."], y: Int[Array, " batch"], task: Task
    ) -> tuple[NTEState, dict[str, Array]]:
        params, static = split(state.model)
        targets = batch_targets(y, task)
        loglik = sharded_expert_log_likelihoods(  # per-device sums + psum under a data mesh
            cross_entropy,
            state.model,
            x,
            targets,
            signs=state.signs,
            inv_temperature=self.inv_temperature,
            eta=self.eta,
            method=self.method,
            chunk_size=self.chunk_size,
        )
        updates, opt_state = self._optimizer().update(loglik, state.opt_state, params)
        new_params = jax.tree_util.tree_map(lambda p, u: p + u, params, updates)
        loss = jax.numpy.mean(
            jax.vmap(cross_entropy, in_axes=(None, 0, 0))(state.model, x, targets)
        )
        return NTEState(merge(new_params, static), opt_state, state.signs), {"loss": loss}

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
    - `renormalize`, `init_scale`, `invalid`: passed to [`nte.nte`][].
    - `method`, `chunk_size`: passed to [`nte.expert_log_likelihoods`][].

    **Returns:**

    An [`nte.continual.NTELearner`][].
    """
    check_positive(inv_temperature, "inv_temperature")
    check_positive(eta, "eta")
    if max_delta is not None:
        check_positive(max_delta, "max_delta")
    check_positive(init_scale, "init_scale", allow_zero=True)
    check_choice(method, ("auto", "naive", "chunked", "series"), "method")
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
