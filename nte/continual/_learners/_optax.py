"""A learner from any `optax` gradient transformation on the mean-batch gradient."""

import equinox as eqx
import optax
from jaxtyping import Array, Float, Int, PRNGKeyArray, PyTree

from ..._split import merge, split
from .._learner import AbstractLearner, Task, mean_loss


class OptaxState(eqx.Module):
    """Training state of an [`nte.continual.OptaxLearner`][]: the model and the optimizer state."""

    model: eqx.Module
    opt_state: PyTree


class OptaxLearner(AbstractLearner):
    """Trains the model with an `optax` transformation of the mean-batch gradient.

    Each step computes `∇_θ mean_b cross_entropy(model, x_b, (y_b, mask))` and applies
    `optimizer.update(grads, opt_state, params)`. The base of [`nte.continual.sgd`][] and
    [`nte.continual.adam`][]; pass any `optax.GradientTransformation` to use another optimizer.

    **Arguments:**

    - `optimizer`: an `optax.GradientTransformation`.
    """

    optimizer: optax.GradientTransformation

    def init(self, model: eqx.Module, *, key: PRNGKeyArray) -> OptaxState:
        del key
        params, _ = split(model)
        return OptaxState(model, self.optimizer.init(params))

    def step(
        self, state: OptaxState, x: Float[Array, "batch ..."], y: Int[Array, " batch"], task: Task
    ) -> tuple[OptaxState, dict[str, Array]]:
        params, static = split(state.model)

        def loss(p):
            return mean_loss(merge(p, static), x, y, task)

        value, grads = eqx.filter_value_and_grad(loss)(params)
        updates, opt_state = self.optimizer.update(grads, state.opt_state, params)
        model = merge(optax.apply_updates(params, updates), static)
        return OptaxState(model, opt_state), {"loss": value}

    def eval_model(self, state: OptaxState, task_index: Int[Array, ""]) -> eqx.Module:
        del task_index
        return state.model
