"""The learner interface of the continual-learning harness, its shared loss, and its registry.

A *learner* is everything that differs between continual-learning methods (SGD, Adam, the NTE
posterior update, EWC, hypernetworks, pruning, ...): how the training state is built, how one
batch updates it, what happens at a task boundary and which model is evaluated on a task. The
harness ([`nte.continual.run`][]) owns everything else: data on device, batching, permutations,
evaluation, seeds (`vmap`), checkpoints, metrics.

The interface is documented on `AbstractLearner` (read it to add a learner).
"""

import abc
import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray, PyTree, Scalar

from ._fields import validate

# A large negative finite fill for masked logits: exp(fill - max) == 0 exactly in float32/64,
# and unlike -inf it never produces inf - inf = nan anywhere.
_MASK_FILL = -1e30


class Task(eqx.Module):
    """What a learner knows about the task of the current batch (a small pytree).

    **Fields:**

    - `index`: the task index, an `int32` scalar array.
    - `mask`: `Bool[Array, "classes"]`, the logits this task may use (task-incremental split
      tasks); all `True` for permuted, domain- and class-incremental tasks.
    """

    index: Int[Array, ""]
    mask: Bool[Array, " classes"]


def masked_log_softmax(
    logits: Float[Array, " classes"], mask: Bool[Array, " classes"]
) -> Float[Array, " classes"]:
    """`log_softmax` over the classes selected by `mask`; masked entries get a huge negative value.

    The masked logits are replaced (by `jnp.where`) before the softmax, so they receive
    exactly zero gradient and the log-probabilities of unmasked classes are finite.
    """
    return jax.nn.log_softmax(jnp.where(mask, logits, _MASK_FILL))


def cross_entropy(
    model: Callable[[Any], Array],
    x: Float[Array, "..."],
    target: tuple[Int[Array, ""], Bool[Array, " classes"]],
) -> Scalar:
    """Masked softmax cross-entropy of `model` on ONE example: the loss every learner trains.

    `−log softmax(f(x) restricted to mask)[label]`. With an all-true mask this is the plain
    cross-entropy. The signature `(model, x, target)` is the per-example `loss_fn` convention of
    [`nte.per_example_grads`][], so it can be vmapped over a batch of `(x, (label, mask))`.

    **Arguments:**

    - `model`: a callable on one example returning logits `[classes]`.
    - `x`: one input.
    - `target`: `(label, mask)`: an int scalar label and a bool `[classes]` mask; the label must
      be an unmasked class (otherwise the loss is ~1e30, never nan).

    **Returns:**

    A scalar loss.
    """
    label, mask = target
    return -masked_log_softmax(model(x), mask)[label]


def batch_targets(
    y: Int[Array, " batch"], task: Task
) -> tuple[Int[Array, " batch"], Bool[Array, "batch classes"]]:
    """Per-example targets `(label, mask)` for [`nte.continual.cross_entropy`][] on a batch."""
    return y, jnp.broadcast_to(task.mask, y.shape + task.mask.shape)


def mean_loss(model: Callable[[Any], Array], x: Array, y: Array, task: Task) -> Scalar:
    """Mean of [`nte.continual.cross_entropy`][] over a batch (for mean-gradient learners)."""
    labels, masks = batch_targets(y, task)
    return jnp.mean(jax.vmap(cross_entropy, in_axes=(None, 0, 0))(model, x, (labels, masks)))


def predict(logits: Float[Array, "... classes"], mask: Bool[Array, " classes"]) -> Array:
    """Argmax over the classes selected by `mask` (task-incremental prediction)."""
    return jnp.argmax(jnp.where(mask, logits, -jnp.inf), axis=-1)


class AbstractLearner(eqx.Module):
    """A continual-learning method, as pure, jittable, vmappable functions of a state pytree.

    Subclass it (an `eqx.Module` whose fields are the hyperparameters) and implement `init`,
    `step` and `eval_model`. The harness calls them inside ONE `jax.jit`-compiled loop over
    steps and `jax.vmap` (or `lax.map`) over seeds, so they must be traceable: no Python control
    flow on array values, no host callbacks, no side effects.

    - `init(model, *, key) -> state`: the training state built from a freshly initialised
      model. `state` is any pytree (usually an `eqx.Module`) holding the model, the optimizer
      state and anything else (EWC's Fisher and anchors, a hypernetwork's snapshots). Its array
      leaves must keep their shapes and dtypes across `step`/`end_task` (they are the loop
      carry and are checkpointed with `eqx.tree_serialise_leaves`). Non-array leaves
      (activation functions, static fields) are kept from `init`, so create every leaf that
      changes later as a JAX array (`jnp.zeros(())`, not `0.0`). Store a PRNG key as
      `jax.random.key_data(key)` (a `uint32` array), not as a typed key array.
    - `step(state, x, y, task) -> (state, aux)`: one update on one batch. `x` is
      `Float[Array, "batch features"]` (already permuted and flattened by the harness), `y`
      is `Int[Array, "batch"]` (already remapped for the scenario), `task` is a
      [`nte.continual.Task`][]: `task.index` (an int32 scalar) and `task.mask` (a bool
      `[classes]` mask of the logits the task may use; all true except for task-incremental
      split tasks). `aux` is a dict of scalar arrays with at least `"loss"`.
    - `eval_model(state, task_index) -> model`: the model (a callable on ONE example) that
      predicts on task `task_index` (an int32 scalar array, possibly traced). Most learners
      return `state.model`; a hypernetwork generates the task's weights here.

    Optionally override:

    - `end_task(state, task_index, x, y, task, *, key) -> state`: called once after the last
      step of each task, with a sample of that task's training data
      (`Config.training.end_task_examples` examples drawn on device, already
      permuted/remapped) and a fresh `key`. Default: the identity (and then the harness
      compiles nothing for it). EWC computes its Fisher here; a hypernetwork snapshots its
      outputs.
    - `vmap_seeds` (a `bool`, default `True`): with `Config.training.seed_mode="auto"`,
      several seeds are trained with `jax.vmap` (`True`) or `lax.map` (`False`: better for
      learners using `lax.cond`, whose both branches run under `vmap`).

    Train on [`nte.continual.cross_entropy`][] (masked softmax cross-entropy on ONE example;
    masked logits get exactly zero gradient) so that every learner has the same objective.

    Finally give it a section of hyperparameters, a [`nte.continual.LearnerConfig`][]
    registered with [`nte.continual.register_learner`][], so that `Config(learner="<name>")`,
    `make_learner("<name>", ...)` and `--learner <name>` build it. Put the learner in its own
    module `nte/continual/_learners/_<name>.py`, import it in
    `nte/continual/_learners/__init__.py` and export its public names in
    `nte/continual/__init__.py`.
    """

    vmap_seeds: ClassVar[bool] = True

    @abc.abstractmethod
    def init(self, model: eqx.Module, *, key: PRNGKeyArray) -> PyTree:
        """Build the training state from a freshly initialised model."""

    @abc.abstractmethod
    def step(
        self, state: PyTree, x: Float[Array, "batch ..."], y: Int[Array, " batch"], task: Task
    ) -> tuple[PyTree, dict[str, Array]]:
        """One update on one batch; returns the new state and a dict of scalar diagnostics."""

    def end_task(
        self,
        state: PyTree,
        task_index: Int[Array, ""],
        x: Float[Array, "batch ..."],
        y: Int[Array, " batch"],
        task: Task,
        *,
        key: PRNGKeyArray,
    ) -> PyTree:
        """Hook at the end of each task (default: return `state` unchanged)."""
        del task_index, x, y, task, key
        return state

    @abc.abstractmethod
    def eval_model(self, state: PyTree, task_index: Int[Array, ""]) -> Callable[[Any], Array]:
        """The model (a callable on one example) evaluated on task `task_index`."""


class LearnerContext(NamedTuple):
    """What a learner section may read about the run when it builds its learner.

    **Fields:**

    - `tasks`: the number of tasks of the run (`None` outside a run).
    - `model`: the model of one seed, possibly abstract (`jax.ShapeDtypeStruct` leaves; `None`
      outside a run).
    """

    tasks: int | None = None
    model: Any = None


@dataclasses.dataclass(frozen=True)
class LearnerConfig:
    """The hyperparameters of one learner: the `learner` section of a [`nte.continual.Config`][].

    Each registered learner has its own subclass (a frozen dataclass): its fields are the
    learner's hyperparameters, each with a default and a help text (`field.metadata["help"]`),
    checked in `__post_init__`; `name` (a class variable) is the registry key and `build` makes
    the [`nte.continual.AbstractLearner`][]. The run loop reads no hyperparameter: it only calls
    `build`.

    To add a learner, subclass it and register it:

    ```python
    @register_learner
    @dataclasses.dataclass(frozen=True)
    class AnchoredConfig(LearnerConfig):
        name: ClassVar[str] = "anchored"
        lr: float = option(0.05, "step size", number())

        def build(self, context):
            return Anchored(self.lr)
    ```
    """

    name: ClassVar[str] = ""
    # observers every run of this learner calls before the user's (`run(..., observers=)`)
    observers: ClassVar[tuple] = ()

    def __post_init__(self):
        validate(self)

    def build(self, context: LearnerContext) -> "AbstractLearner":
        """The learner these hyperparameters describe (`context`: the run's tasks and model)."""
        raise NotImplementedError(f"{type(self).__name__} must implement `build`.")

    def to_dict(self) -> dict[str, Any]:
        """`{"name": name, <hyperparameter>: value, ...}` (JSON-serialisable)."""
        return {"name": self.name, **dataclasses.asdict(self)}


_REGISTRY: dict[str, type[LearnerConfig]] = {}


def register_learner(cls: type[LearnerConfig]) -> type[LearnerConfig]:
    """Register a [`nte.continual.LearnerConfig`][] subclass under its `name` (a decorator).

    After registration `Config(learner=name)`, `make_learner(name, ...)` and
    `--learner name` build the learner with `cls(**hyperparameters).build(context)`.

    **Arguments:**

    - `cls`: a dataclass subclass of `LearnerConfig` with a `name` not registered already.

    **Returns:**

    `cls`, unchanged.
    """
    if not (isinstance(cls, type) and issubclass(cls, LearnerConfig)):
        raise TypeError(f"`cls` must be a LearnerConfig subclass, got {cls!r}.")
    name = cls.name
    if not isinstance(name, str) or not name:
        raise ValueError(f"`cls.name` must be a non-empty string, got {name!r}.")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"`cls.name` {name!r} is already a registered learner.")
    _REGISTRY[name] = cls
    return cls


def available_learners() -> tuple[str, ...]:
    """The registered learner names (`Config(learner=...)`, `make_learner`), sorted."""
    return tuple(sorted(_REGISTRY))


def learner_config(name: str, **hyperparameters: Any) -> LearnerConfig:
    """The section of learner `name` with `hyperparameters` (the others keep their defaults).

    Raises a `ValueError` naming `learner` for an unknown name, and one naming the
    hyperparameter for a keyword the learner does not have.
    """
    if name not in _REGISTRY:
        raise ValueError(f"`learner` must be one of {available_learners()}, got {name!r}.")
    cls = _REGISTRY[name]
    own = [f.name for f in dataclasses.fields(cls)]
    for key in hyperparameters:
        if key not in own:
            raise ValueError(
                f"`{key}` is not a hyperparameter of learner {name!r} (its hyperparameters: "
                f"{', '.join(own) or 'none'})."
            )
    return cls(**hyperparameters)


def make_learner(
    learner: "str | LearnerConfig",
    *,
    tasks: int | None = None,
    model: Any = None,
    **hyperparameters: Any,
) -> AbstractLearner:
    """Build a learner from the registry: `make_learner("nte", beta=0.03)`.

    **Arguments:**

    - `learner`: a registered name ([`nte.continual.available_learners`][]) or a
      [`nte.continual.LearnerConfig`][] (then `hyperparameters` override its fields).
    - `tasks`, `model`: the [`nte.continual.LearnerContext`][] (needed by learners whose
      defaults depend on the run: the hypernetwork's `max_tasks`, pruning's `degree`).
    - `hyperparameters`: fields of the learner's section.

    **Returns:**

    An [`nte.continual.AbstractLearner`][].
    """
    if isinstance(learner, LearnerConfig):
        section = dataclasses.replace(learner, **hyperparameters)
    else:
        section = learner_config(learner, **hyperparameters)
    return section.build(LearnerContext(tasks, model))
