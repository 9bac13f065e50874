"""Pruning learners: learning by pruning only ([`nte.pruning.prune_only`][]) and gradual
magnitude pruning ([`nte.pruning.magnitude`][]) around SGD."""

import equinox as eqx
import jax.random as jr
import jax.tree_util as jtu
import optax
from jaxtyping import PRNGKeyArray

from ... import pruning
from ..._split import merge, split
from .._learner import register_learner
from ._optax import OptaxLearner, OptaxState


class PruneOnlyLearner(OptaxLearner):
    """[`nte.pruning.prune_only`][] on the mean-batch gradient: learns only by removing weights.

    With `init_scale = σ > 0` (the init variant) the model starts at θ_init + σ·ε
    (ε ~ N(0, 1), a fresh key per leaf from the learner key) and pruned weights are restored to
    θ_init (Δ = 0); with `σ = 0` (the origin variant) pruned weights become exactly 0. Build
    it with [`nte.continual.prune_only`][].
    """

    init_scale: float = 0.0
    optimizer_kwargs: tuple = eqx.field(static=True, default=())

    def init(self, model: eqx.Module, *, key: PRNGKeyArray) -> OptaxState:
        if self.init_scale == 0:
            return super().init(model, key=key)
        params, static = split(model)
        leaves, treedef = jtu.tree_flatten(params)
        keys = jr.split(key, len(leaves))
        noise = [jr.normal(k, p.shape, p.dtype) for k, p in zip(keys, leaves)]
        start = jtu.tree_unflatten(
            treedef, [p + self.init_scale * n for p, n in zip(leaves, noise)]
        )
        # `update` reads θ0 from the state only, so the state built here (center = θ_init)
        # drives `self.optimizer`, whose own `center` is a placeholder.
        hp = dict(self.optimizer_kwargs)
        state = pruning.prune_only(**hp, variant="init", center=params).init(start)
        return OptaxState(merge(start, static), state)


def prune_only(
    rate: float = 0.01,
    momentum: float = 0.99,
    *,
    cutoff: str = "gaussian",
    degree: float = 1.0,
    init_scale: float = 0.0,
) -> PruneOnlyLearner:
    """A continual learner that only prunes ([`nte.pruning.prune_only`][]).

    **Arguments:**

    - `rate`, `momentum`, `cutoff`, `degree`: as for `nte.pruning.prune_only`.
    - `init_scale`: `0` for the origin variant; `σ > 0` for the init variant (start at
      θ_init + σ·ε, prune back to θ_init).

    **Returns:**

    A [`nte.continual.PruneOnlyLearner`][].
    """
    if not init_scale >= 0:
        raise ValueError(f"`init_scale` must be >= 0, got {init_scale!r}.")
    hp = dict(rate=rate, momentum=momentum, cutoff=cutoff, degree=degree)
    if init_scale == 0:
        opt = pruning.prune_only(**hp)
    else:
        opt = pruning.prune_only(**hp, variant="init", center=lambda p: p)
    return PruneOnlyLearner(opt, init_scale=float(init_scale), optimizer_kwargs=tuple(hp.items()))


def magnitude_sgd(
    learning_rate: float,
    target_sparsity: float = 0.9,
    *,
    momentum: float = 0.0,
    begin_step: int = 0,
    end_step: int | None = 1000,
    frequency: int = 10,
    scope: str = "global",
) -> OptaxLearner:
    """SGD with gradual magnitude pruning ([`nte.pruning.magnitude`][], Zhu & Gupta 2017).

    **Arguments:**

    - `learning_rate`, `momentum`: of the inner `optax.sgd`.
    - `target_sparsity`, `begin_step`, `end_step`, `frequency`, `scope`: as for
      `nte.pruning.magnitude` (steps count over the whole run, all tasks).

    **Returns:**

    An [`nte.continual.OptaxLearner`][].
    """
    inner = optax.sgd(learning_rate, momentum=momentum or None)
    opt = pruning.magnitude(
        inner,
        target_sparsity,
        begin_step=begin_step,
        end_step=end_step,
        frequency=frequency,
        scope=scope,
    )
    return OptaxLearner(opt)


def _degree(config) -> float:
    return float(config.depth + 1)


@register_learner("prune_only")
def _prune_only_from_config(config):
    kw = {"degree": _degree(config)} | dict(config.learner_kwargs)
    return prune_only(**kw)


@register_learner("prune_only_init")
def _prune_only_init_from_config(config):
    kw = {"degree": _degree(config), "init_scale": 0.1} | dict(config.learner_kwargs)
    return prune_only(**kw)


@register_learner("magnitude")
def _magnitude_from_config(config):
    return magnitude_sgd(config.lr, momentum=config.momentum, **config.learner_kwargs)
