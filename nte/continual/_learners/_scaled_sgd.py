"""Scaled (and optionally projected) SGD, the first-order NTE variant, as a continual learner."""

import optax

import nte as _root

from ..._errors import check_positive
from .._learner import register_learner
from ._optax import OptaxLearner


def scaled_sgd(
    learning_rate: float, *, renormalize: bool = False, max_delta: float | None = None
) -> OptaxLearner:
    """Scaled SGD: `Δ ← Δ − lr·|Δ|⊙g` ([`nte.scale_by_scaled_sgd`][]), design doc §3.

    **Arguments:**

    - `learning_rate`: the step size (> 0).
    - `renormalize`: project `Δ` back onto the initial L1 norm after each step.
    - `max_delta`: optional clip of `|Δ_i|`.

    **Returns:**

    An [`nte.continual.OptaxLearner`][].
    """
    check_positive(learning_rate, "learning_rate")
    tx = _root.scale_by_scaled_sgd(learning_rate, renormalize=renormalize, max_delta=max_delta)
    return OptaxLearner(optax.with_extra_args_support(tx))


@register_learner("scaled_sgd")
def _from_config(config):
    return scaled_sgd(config.lr, max_delta=config.max_delta, **config.learner_kwargs)
