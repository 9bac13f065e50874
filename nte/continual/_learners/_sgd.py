"""Stochastic gradient descent (with optional momentum) as a continual learner."""

import optax

from .._learner import register_learner
from ._optax import OptaxLearner


def sgd(learning_rate: float, momentum: float = 0.0, *, nesterov: bool = False) -> OptaxLearner:
    """SGD on the mean-batch masked cross-entropy (`optax.sgd`).

    **Arguments:**

    - `learning_rate`: the step size (> 0).
    - `momentum`: heavy-ball momentum in `[0, 1)`; `0` is plain SGD.
    - `nesterov`: Nesterov momentum.

    **Returns:**

    An [`nte.continual.OptaxLearner`][].
    """
    if not learning_rate > 0:
        raise ValueError(f"`learning_rate` must be > 0, got {learning_rate!r}.")
    if not 0 <= momentum < 1:
        raise ValueError(f"`momentum` must be in [0, 1), got {momentum!r}.")
    return OptaxLearner(optax.sgd(learning_rate, momentum=momentum or None, nesterov=nesterov))


@register_learner("sgd")
def _from_config(config):
    return sgd(config.lr, momentum=config.momentum, **config.learner_kwargs)
