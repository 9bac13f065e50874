"""Adam as a continual learner."""

import optax

from .._learner import register_learner
from ._optax import OptaxLearner


def adam(
    learning_rate: float, *, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
) -> OptaxLearner:
    """Adam on the mean-batch masked cross-entropy (`optax.adam`).

    **Arguments:**

    - `learning_rate`: the step size (> 0).
    - `b1`, `b2`, `eps`: Adam's moment decay rates and denominator offset.

    **Returns:**

    An [`nte.continual.OptaxLearner`][].
    """
    if not learning_rate > 0:
        raise ValueError(f"`learning_rate` must be > 0, got {learning_rate!r}.")
    return OptaxLearner(optax.adam(learning_rate, b1=b1, b2=b2, eps=eps))


@register_learner("adam")
def _from_config(config):
    return adam(config.lr, **config.learner_kwargs)
