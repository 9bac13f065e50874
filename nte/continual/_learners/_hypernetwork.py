"""Continual learning with task-conditioned hypernetworks (von Oswald et al., ICLR 2020).

A [`nte.nn.ChunkedHypernetwork`][] `h(e, Θ)` generates all weights of the target network from a
task embedding `e_t` (one learned row per task). While training task `T`:

```
L(Θ, e_T) = L_task(h(e_T, Θ)) + β_output · (1/|S|) Σ_{t∈S} ‖h(e_t, Θ + ΔΘ) − h*_t‖²
```

- `h*_t` are the weights generated for task `t < T` when task `T − 1` ended (`end_task`
  snapshots `h(e_t, Θ)` for every `t` seen so far into a fixed-shape `[max_tasks, num_weights]`
  buffer);
- `S` is every previous task, or `max_reg_tasks` of them drawn without replacement at each step
  when there are more;
- two-step optimisation (the paper's lookahead): `ΔΘ` is the update the optimizer would make
  from the task loss alone; it is treated as a constant (`stop_gradient`), and the optimizer
  then steps on `∇_Θ L_task + β_output ∇_Θ reg(Θ + ΔΘ)`;
- only `e_T` is trained: the updates of every other task embedding are masked to zero, so the
  embeddings of finished tasks are frozen; the chunk embeddings and the MLP of `h` are shared.
- the optimizer state is reset at every task boundary (a fresh optimizer per task).

The task identity is given at test time (task-incremental oracle): `eval_model(state, t)`
generates task `t`'s network from `e_t`.
"""

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import optax
from jaxtyping import Array, Float, Int, PRNGKeyArray, PyTree, UInt32

from ...nn._hypernetwork import ChunkedHypernetwork
from .._fields import choice, integer, number, of_type, option
from .._learner import (
    AbstractLearner,
    LearnerConfig,
    LearnerContext,
    Task,
    mean_loss,
    register_learner,
)
from ._ewc import optimizer_transformation


class HypernetworkState(eqx.Module):
    """Training state of an [`nte.continual.HypernetworkLearner`][].

    **Fields:** `hnet` (the [`nte.nn.ChunkedHypernetwork`][]); `embeddings` (`[max_tasks,
    embedding_size]`); `opt_state`; `snapshots` (`[max_tasks, num_weights]`, the weights
    generated for each finished task at the last task boundary); `count` (number of valid
    snapshots, int32); `key` (raw `uint32` key data for sampling regularised tasks).
    """

    hnet: ChunkedHypernetwork
    embeddings: Float[Array, "max_tasks embedding_size"]
    opt_state: PyTree
    snapshots: Float[Array, "max_tasks num_weights"]
    count: Int[Array, ""]
    key: UInt32[Array, "..."]


def _check_index(index: Any, max_tasks: int, name: str = "task_index") -> Any:
    """Eager `ValueError` for a concrete out-of-range index; `eqx.error_if` for a traced one."""
    try:
        value = int(index)
    except (TypeError, jax.errors.ConcretizationTypeError):
        bad = (index < 0) | (index >= max_tasks)
        return eqx.error_if(index, bad, f"`{name}` has no task embedding (not in [0, max_tasks)).")
    if not 0 <= value < max_tasks:
        raise ValueError(
            f"`{name}` must be in [0, {max_tasks}) (one task embedding per task), got {value}."
        )
    return index


class HypernetworkLearner(AbstractLearner):
    """A task-conditioned chunked hypernetwork with the output regulariser (von Oswald et al.).

    See the module documentation for the objective. Build it with
    `make_learner("hypernetwork", ...)` ([`nte.continual.HypernetworkConfig`][]).
    """

    optimizer: optax.GradientTransformation
    max_tasks: int
    embedding_size: int
    chunk_size: int
    chunk_embedding_size: int
    hidden: tuple[int, ...]
    beta_output: float
    max_reg_tasks: int
    lookahead: bool
    embedding_std: float

    def init(self, model: eqx.Module, *, key: PRNGKeyArray) -> HypernetworkState:
        hkey, ekey, skey = jr.split(key, 3)
        hnet = ChunkedHypernetwork(
            model,
            self.embedding_size,
            chunk_size=self.chunk_size,
            chunk_embedding_size=self.chunk_embedding_size,
            hidden=self.hidden,
            key=hkey,
        )
        emb = self.embedding_std * jr.normal(ekey, (self.max_tasks, self.embedding_size))
        trainable = (eqx.filter(hnet, hnet.filter_spec()), emb)
        snaps = jnp.zeros((self.max_tasks, hnet.num_weights), emb.dtype)
        count = jnp.zeros((), jnp.int32)
        return HypernetworkState(
            hnet, emb, self.optimizer.init(trainable), snaps, count, jr.key_data(skey)
        )

    def _sample(self, key, count, current):
        """`R` distinct previous-task indices (and their weights) from `[0, count) \\ {current}`."""
        n_reg = max(min(self.max_tasks - 1, self.max_reg_tasks), 1)
        ids = jnp.arange(self.max_tasks)
        valid = (ids < count) & (ids != current)
        order = jnp.argsort(jnp.where(valid, jr.uniform(key, (self.max_tasks,)), 2.0))
        chosen = order[:n_reg]
        w = valid[chosen].astype(jnp.float32)
        return chosen, w / jnp.maximum(jnp.sum(w), 1.0)

    def regularizer(self, hnet, state: HypernetworkState, chosen, weights) -> Array:
        """`Σ_k w_k ‖h(e_k) − h*_k‖²` over the chosen previous tasks (weights sum to 1 or 0)."""

        diff = hnet.weights_batch(state.embeddings[chosen]) - state.snapshots[chosen]
        return jnp.dot(weights, jnp.sum(diff * diff, axis=-1).astype(weights.dtype))

    def step(
        self,
        state: HypernetworkState,
        x: Float[Array, "batch ..."],
        y: Int[Array, " batch"],
        task: Task,
    ) -> tuple[HypernetworkState, dict[str, Array]]:
        t = _check_index(task.index, self.max_tasks, "task.index")
        params, static = eqx.partition(state.hnet, state.hnet.filter_spec())
        theta = (params, state.embeddings)
        row = (jnp.arange(self.max_tasks) == t)[:, None]

        def task_loss(th):
            hnet = eqx.combine(th[0], static)
            return mean_loss(hnet(th[1][t]), x, y, task)

        loss, g = jax.value_and_grad(task_loss)(theta)
        key, sub = jr.split(jr.wrap_key_data(state.key))
        chosen, weights = self._sample(sub, state.count, t)
        if self.beta_output > 0 and self.max_tasks > 1:
            delta, _ = self.optimizer.update(g, state.opt_state, theta)
            delta = (
                jax.lax.stop_gradient(delta)
                if self.lookahead
                else jax.tree.map(jnp.zeros_like, delta)
            )

            def reg_loss(p):
                ahead = eqx.combine(jax.tree.map(jnp.add, p, delta[0]), static)
                return self.regularizer(ahead, state, chosen, weights)

            reg, g_reg = jax.value_and_grad(reg_loss)(params)
            g = (jax.tree.map(lambda a, b: a + self.beta_output * b, g[0], g_reg), g[1])
        else:
            reg = jnp.zeros(())
        g = (g[0], jnp.where(row, g[1], 0))
        updates, opt_state = self.optimizer.update(g, state.opt_state, theta)
        updates = (updates[0], jnp.where(row, updates[1], 0))
        params, emb = optax.apply_updates(theta, updates)
        new = HypernetworkState(
            eqx.combine(params, static),
            emb,
            opt_state,
            state.snapshots,
            state.count,
            jr.key_data(key),
        )
        return new, {"loss": loss, "regularizer": reg}

    def end_task(
        self,
        state: HypernetworkState,
        task_index: Int[Array, ""],
        x: Float[Array, "batch ..."],
        y: Int[Array, " batch"],
        task: Task,
        *,
        key: PRNGKeyArray,
    ) -> HypernetworkState:
        del x, y, task, key
        t = _check_index(task_index, self.max_tasks)
        seen = jnp.arange(self.max_tasks) <= t
        generated = jax.lax.map(state.hnet.weights, state.embeddings)  # one at a time: memory
        snaps = jnp.where(seen[:, None], generated, state.snapshots)
        params = eqx.filter(state.hnet, state.hnet.filter_spec())
        opt_state = self.optimizer.init((params, state.embeddings))
        count = jnp.maximum(state.count, t + 1).astype(jnp.int32)
        return HypernetworkState(state.hnet, state.embeddings, opt_state, snaps, count, state.key)

    def eval_model(self, state: HypernetworkState, task_index: Int[Array, ""]) -> eqx.Module:
        t = _check_index(task_index, self.max_tasks)
        return state.hnet(state.embeddings[t])


def _hidden_check(value: Any, name: str) -> None:
    if not (isinstance(value, (tuple, list)) and all(isinstance(h, int) and h >= 1 for h in value)):
        raise ValueError(f"`{name}` must be a sequence of ints >= 1, got {value!r}.")


@register_learner
@dataclasses.dataclass(frozen=True)
class HypernetworkConfig(LearnerConfig):
    """Task-conditioned chunked hypernetwork with output regulariser (von Oswald et al. 2020)
    (`learner="hypernetwork"`); see the module documentation for the objective."""

    name: ClassVar[str] = "hypernetwork"
    lr: float = option(1e-3, "the optimizer's step size", number())
    max_tasks: int | None = option(
        None, "task embeddings and snapshot slots (None: the run's tasks)",
        integer(1, optional=True),
    )  # fmt: skip
    beta_output: float = option(0.1, "β_output >= 0, weight of the output regulariser",
                                number(strict=False))  # fmt: skip
    embedding_size: int = option(32, "size of each task embedding", integer(1))
    chunk_size: int = option(2000, "weights generated per chunk", integer(1))
    chunk_embedding_size: int = option(32, "size of each chunk embedding", integer(1))
    hidden: Sequence[int] = option((100, 50), "hidden sizes of the hypernetwork MLP",
                                     _hidden_check)  # fmt: skip
    max_reg_tasks: int = option(30, "previous tasks regularised per step", integer(1))
    lookahead: bool = option(True, "regularise at Θ + ΔΘ (the two-step scheme)", of_type(bool))
    embedding_std: float = option(1.0, "std of the initial task embeddings", number())
    optimizer: str = option("adam", "the optimizer", choice("adam", "sgd"))

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "hidden", tuple(self.hidden))  # a JSON list → a tuple

    def build(self, context: LearnerContext) -> HypernetworkLearner:
        max_tasks = self.max_tasks if self.max_tasks is not None else context.tasks
        if max_tasks is None:
            raise ValueError("`max_tasks` must be given when the number of tasks is not known.")
        return HypernetworkLearner(
            optimizer_transformation(self.optimizer, self.lr),
            max_tasks,
            self.embedding_size,
            self.chunk_size,
            self.chunk_embedding_size,
            tuple(self.hidden),
            float(self.beta_output),
            self.max_reg_tasks,
            bool(self.lookahead),
            float(self.embedding_std),
        )
