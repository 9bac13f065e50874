"""Elastic weight consolidation (Kirkpatrick et al. 2017) and online EWC (Schwarz et al. 2018).

## Offline EWC: all past quadratics in three fixed-shape buffers

EWC trains task `T` on `L_T(θ) + (λ/2) Σ_{t<T} Σ_i F_{t,i} (θ_i − θ*_{t,i})²`, one quadratic per
past task (Fisher `F_t`, anchor `θ*_t` = the parameters after task `t`). A sum of diagonal
quadratics is again one diagonal quadratic plus a constant:

```
Σ_t F_t (θ − θ*_t)² = F̄ (θ − θ̄)² + C     (elementwise, then summed over i)
F̄ = Σ_t F_t        θ̄ = Σ_t F_t θ*_t / F̄  (θ̄ = θ*_t where F̄ = 0)
C = Σ_t F_t θ*_t² − F̄ θ̄²                 (≥ 0, does not depend on θ)
```

so the state keeps `fisher = F̄`, `anchor = θ̄` and the scalar `offset = Σ_i C_i`, whatever the
number of tasks (the `lax.scan` carry of the harness has fixed shapes). Adding task `t` uses
the stable update `a(θ−p)² + b(θ−q)² = (a+b)(θ − (ap+bq)/(a+b))² + ab/(a+b) (p−q)²`. Value
and gradient are exactly those of the per-task sum (up to float rounding); the penalty
reported as `aux["penalty"]` includes `C`.

## Online EWC

One running Fisher and one anchor: at the end of task `t`, `F ← γ F + F_t` and `θ* ← θ_t`,
then the penalty is `(λ/2) Σ_i F_i (θ_i − θ*_i)²`. Schwarz et al. write the penalty with
`γ F` (the decayed Fisher of the previous tasks); that differs from ours by the constant
factor `γ`, i.e. our λ is their `γ λ`.
"""

import dataclasses
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, Int, PRNGKeyArray, PyTree

from ..._split import merge, split
from .._fields import choice, integer, number, option
from .._fisher import FISHER_VARIANTS, ewc_penalty, fisher_diagonal
from .._learner import (
    AbstractLearner,
    LearnerConfig,
    LearnerContext,
    Task,
    mean_loss,
    register_learner,
)
from ._basic import LEARNING_RATE, MOMENTUM, sgd_transformation

OPTIMIZERS = ("sgd", "adam")


def _gamma_check(value: Any, name: str) -> None:
    if not (isinstance(value, (int, float)) and 0 < value <= 1):
        raise ValueError(f"`{name}` must be in (0, 1], got {value!r}.")


class EWCState(eqx.Module):
    """Training state of an [`nte.continual.EWCLearner`][].

    **Fields:** `model`; `opt_state`; `fisher` (`F̄`, params-shaped); `anchor` (`θ̄`,
    params-shaped); `offset` (the scalar constant `C`, see the module docs); `tasks` (the number
    of Fishers accumulated, an int32 scalar).
    """

    model: eqx.Module
    opt_state: PyTree
    fisher: PyTree
    anchor: PyTree
    offset: Float[Array, ""]
    tasks: Int[Array, ""]


def _combine(fisher, anchor, offset, f_new, a_new):
    """Merge `F̄(θ−θ̄)² + C` with `F_t(θ−θ_t)²` into one diagonal quadratic (module docs)."""
    total = jax.tree_util.tree_map(jnp.add, fisher, f_new)

    def mean(f, a, fn, an, t):
        return jnp.where(t > 0, (f * a + fn * an) / jnp.where(t > 0, t, 1), an)

    def extra(f, a, fn, an, t):
        return jnp.sum(jnp.where(t > 0, f * fn / jnp.where(t > 0, t, 1), 0) * (a - an) ** 2)

    new_anchor = jax.tree_util.tree_map(mean, fisher, anchor, f_new, a_new, total)
    extras = jax.tree_util.tree_map(extra, fisher, anchor, f_new, a_new, total)
    return total, new_anchor, offset + sum(jax.tree_util.tree_leaves(extras))


class EWCLearner(AbstractLearner):
    """EWC (`gamma=None`) or online EWC (`0 < gamma <= 1`) on an `optax` optimizer.

    Each step minimises `mean_b cross_entropy + (λ/2) Σ_i F_i (θ_i − θ*_i)²` (see the module
    docs of `nte.continual._learners._ewc` for how past tasks are stored); `end_task` estimates
    the diagonal Fisher of the finished task with [`nte.continual.fisher_diagonal`][] on the
    first `fisher_examples` examples it is given. Build it with `make_learner("ewc", ...)` or
    `make_learner("online_ewc", ...)` ([`nte.continual.EWCConfig`][],
    [`nte.continual.OnlineEWCConfig`][]).
    """

    optimizer: optax.GradientTransformation
    ewc_lambda: float
    gamma: float | None
    fisher: str
    fisher_examples: int | None
    fisher_chunk_size: int | None

    def init(self, model: eqx.Module, *, key: PRNGKeyArray) -> EWCState:
        del key
        params, _ = split(model)
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        return EWCState(
            model,
            self.optimizer.init(params),
            zeros,
            params,
            jnp.zeros(()),
            jnp.zeros((), jnp.int32),
        )

    def penalty(self, state: EWCState, params: PyTree) -> Array:
        """`(λ/2) [Σ_i F̄_i (θ_i − θ̄_i)² + C]`: the penalty summed over the past tasks."""
        quad = ewc_penalty(params, state.fisher, state.anchor, self.ewc_lambda)
        return quad + 0.5 * self.ewc_lambda * state.offset

    def step(
        self, state: EWCState, x: Float[Array, "batch ..."], y: Int[Array, " batch"], task: Task
    ) -> tuple[EWCState, dict[str, Array]]:
        params, static = split(state.model)

        def loss(p):
            data = mean_loss(merge(p, static), x, y, task)
            pen = ewc_penalty(p, state.fisher, state.anchor, self.ewc_lambda)
            return data + pen, (data, pen)

        (_, (data, pen)), grads = eqx.filter_value_and_grad(loss, has_aux=True)(params)
        updates, opt_state = self.optimizer.update(grads, state.opt_state, params)
        model = merge(optax.apply_updates(params, updates), static)
        penalty = pen + 0.5 * self.ewc_lambda * state.offset
        state = eqx.tree_at(lambda s: (s.model, s.opt_state), state, (model, opt_state))
        return state, {"loss": data, "penalty": penalty}

    def end_task(
        self,
        state: EWCState,
        task_index: Int[Array, ""],
        x: Float[Array, "batch ..."],
        y: Int[Array, " batch"],
        task: Task,
        *,
        key: PRNGKeyArray,
    ) -> EWCState:
        del task_index
        n = x.shape[0] if self.fisher_examples is None else self.fisher_examples
        if n > x.shape[0]:
            raise ValueError(
                f"`fisher_examples` ({n}) must be <= the number of examples given to `end_task` "
                f"({x.shape[0]}; `Config.training.end_task_examples`)."
            )
        f_new = fisher_diagonal(
            state.model,
            x[:n],
            y[:n],
            mask=task.mask,
            variant=self.fisher,
            key=key,
            chunk_size=self.fisher_chunk_size,
        )
        params, _ = split(state.model)
        if self.gamma is None:
            fisher, anchor, offset = _combine(
                state.fisher, state.anchor, state.offset, f_new, params
            )
        else:
            decay = lambda f, fn: self.gamma * f + fn
            fisher = jax.tree_util.tree_map(decay, state.fisher, f_new)
            anchor, offset = params, jnp.zeros_like(state.offset)
        return EWCState(state.model, state.opt_state, fisher, anchor, offset, state.tasks + 1)

    def eval_model(self, state: EWCState, task_index: Int[Array, ""]) -> eqx.Module:
        del task_index
        return state.model


def optimizer_transformation(name: str, lr: float, momentum: float = 0.0):
    """`optax.sgd` or `optax.adam` by name (EWC and the hypernetwork)."""
    return optax.adam(lr) if name == "adam" else sgd_transformation(lr, momentum)


FISHER_EXAMPLES = "end-of-task examples the Fisher averages over (None: all given)"


@register_learner
@dataclasses.dataclass(frozen=True)
class EWCConfig(LearnerConfig):
    """Elastic weight consolidation (Kirkpatrick et al., PNAS 2017) (`learner="ewc"`).

    Trains on `L_T(θ) + (λ/2) Σ_{t<T} Σ_i F_{t,i} (θ_i − θ*_{t,i})²`, with one diagonal Fisher
    `F_t` (estimated at the end of task `t` by [`nte.continual.fisher_diagonal`][]) and anchor
    `θ*_t` per past task, stored in fixed shapes as one merged quadratic (exactly equivalent;
    see the module docs).
    """

    name: ClassVar[str] = "ewc"
    lr: float = option(0.05, LEARNING_RATE, number())
    ewc_lambda: float = option(1.0, "λ >= 0, the penalty strength (with the ½ kept)",
                               number(strict=False))  # fmt: skip
    fisher: str = option("empirical", "Fisher estimator", choice(*FISHER_VARIANTS))
    fisher_examples: int | None = option(None, FISHER_EXAMPLES, integer(1, optional=True))
    fisher_chunk_size: int | None = option(
        64, "per-example gradients held in memory at once", integer(1, optional=True)
    )
    optimizer: str = option("sgd", "the optimizer", choice(*OPTIMIZERS))
    momentum: float = option(0.0, MOMENTUM, number(strict=False, below=1.0))

    def _gamma(self) -> float | None:
        return None

    def build(self, context: LearnerContext) -> EWCLearner:
        return EWCLearner(
            optimizer_transformation(self.optimizer, self.lr, self.momentum),
            float(self.ewc_lambda),
            self._gamma(),
            self.fisher,
            self.fisher_examples,
            self.fisher_chunk_size,
        )


@register_learner
@dataclasses.dataclass(frozen=True)
class OnlineEWCConfig(EWCConfig):
    """Online EWC (Schwarz et al., ICML 2018): one running Fisher and one anchor
    (`learner="online_ewc"`).

    At the end of task `t`: `F ← γ F + F_t` and `θ* ← θ_t`; training minimises
    `L_T(θ) + (λ/2) Σ_i F_i (θ_i − θ*_i)²`. (Schwarz et al. weight the penalty by `γ F`; their
    λ is our `λ/γ`.)
    """

    name: ClassVar[str] = "online_ewc"
    gamma: float = option(1.0, "the decay γ ∈ (0, 1] of the running Fisher", _gamma_check)

    def _gamma(self) -> float | None:
        return float(self.gamma)
