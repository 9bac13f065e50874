"""The configuration of a continual-learning run: one field per command-line flag."""

import dataclasses
import json
from typing import Any

from .._distributed import parse_mesh
from .._errors import check_choice

SCENARIOS = ("permuted", "task", "domain", "class")


def _int(value: Any, name: str, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {value!r}.")


def _float(value: Any, name: str, *, minimum: float = 0.0, allow_equal: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not (value >= minimum if allow_equal else value > minimum):
        bound = ">=" if allow_equal else ">"
        raise ValueError(f"`{name}` must be a number {bound} {minimum}, got {value!r}.")


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines a continual-learning run of [`nte.continual.run`][].

    Each field is one flag of `python -m experiments.continual` (`--batch-size` ↔
    `batch_size`). Two runs with equal configs produce identical results.

    **Data and tasks:**

    - `dataset`: a name for `nte.data.load` (`"digits"`, `"fashion_mnist"`, ...).
    - `source`, `data_dir`: passed to `nte.data.load`.
    - `tasks`: the number of tasks.
    - `scenario`: `"permuted"` (see [`nte.continual.permuted_tasks`][]) or a split scenario
      `"task"`, `"domain"`, `"class"` (see [`nte.continual.split_tasks`][]).
    - `task_seed`: the seed of the task permutations (shared by all `seeds`).

    **Model** (an [`nte.nn.MLP`][]): `width`, `depth`, `use_bias`, `parameterization`.

    **Learner:** `learner` (a name from [`nte.continual.available_learners`][]), `lr`,
    `momentum` (sgd), `beta`, `eta`, `max_delta` (nte; `max_delta` also for scaled_sgd) and
    `learner_kwargs` (extra keyword arguments of the learner's factory).

    **Training:** `epochs` per task, `batch_size`, `seeds` (independent models trained in one
    compiled program, with seeds `seed, seed + 1, ...`), `seed`, `seed_mode` (`"vmap"`: `jax.vmap`
    over seeds; `"map"`: `lax.map` over seeds, sequential but keeping `lax.cond`s cheap;
    `"auto"`: the learner's preference, `AbstractLearner.vmap_seeds`).

    **Evaluation and checkpoints:** `eval_every` (also evaluate every k steps of a task; 0:
    only after each task), `checkpoint_every` (also checkpoint every k steps; 0: only at task
    boundaries), `eval_batch_size` (test examples per vectorised forward pass), `out` (the output
    folder; checkpoints go to `out/checkpoint/`; `None`: no checkpoints), `end_task_examples`
    (training examples handed to a learner's `end_task`), `progress` (tqdm bars).

    **Devices** (see [Running at scale](../scale.md)): `devices` (how many devices; `None`:
    all), `mesh` (`"data=4"`, `"seed=2,data=2"`: batches are split over `data`, seeds over
    `seed`; `None`: every device on `data`). `batch_size` must be divisible by the data axis and
    `seeds` by the seed axis. Results agree across device counts up to float32 reduction order.

    **Compilation:** `compile_cache`: a folder for JAX's persistent compilation cache (`None`:
    off). A later run that compiles the same programs (same config shapes, same jax version and
    devices) loads them from there instead of compiling them again; results are unchanged.
    It is set process-wide (`jax.experimental.compilation_cache`), every program is cached
    whatever its compile time, and only use a folder you trust: a cached program is code
    that runs.

    **Debugging:** `stop_after_steps`: checkpoint and stop once this many training steps (over
    all tasks) are done, as if the run had been killed there (rerun with it unset to resume).
    """

    dataset: str = "digits"
    source: str = "auto"
    data_dir: str | None = None
    tasks: int = 5
    scenario: str = "permuted"
    task_seed: int = 0
    learner: str = "nte"
    width: int = 100
    depth: int = 2
    use_bias: bool = True
    parameterization: str = "standard"
    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.01
    momentum: float = 0.0
    beta: float = 0.01
    eta: float = 1.0
    max_delta: float | None = None
    learner_kwargs: dict = dataclasses.field(default_factory=dict)
    seeds: int = 1
    seed: int = 0
    seed_mode: str = "auto"
    eval_every: int = 0
    checkpoint_every: int = 0
    eval_batch_size: int = 1024
    end_task_examples: int = 256
    out: str | None = None
    progress: bool = True
    stop_after_steps: int | None = None
    devices: int | None = None
    mesh: str | None = None
    compile_cache: str | None = None

    def __post_init__(self):
        for name in ("dataset", "source", "learner"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"`{name}` must be a string, got {getattr(self, name)!r}.")
        check_choice(self.scenario, SCENARIOS, "scenario")
        check_choice(self.seed_mode, ("auto", "vmap", "map"), "seed_mode")
        check_choice(self.parameterization, ("standard", "ntk"), "parameterization")
        _int(self.tasks, "tasks", 1)
        _int(self.width, "width", 1)
        _int(self.depth, "depth", 0)
        _int(self.epochs, "epochs", 1)
        _int(self.batch_size, "batch_size", 1)
        _int(self.seeds, "seeds", 1)
        _int(self.seed, "seed", 0)
        _int(self.task_seed, "task_seed", 0)
        _int(self.eval_every, "eval_every", 0)
        _int(self.checkpoint_every, "checkpoint_every", 0)
        _int(self.eval_batch_size, "eval_batch_size", 1)
        _int(self.end_task_examples, "end_task_examples", 1)
        if self.stop_after_steps is not None:
            _int(self.stop_after_steps, "stop_after_steps", 1)
        if self.devices is not None:
            _int(self.devices, "devices", 1)
        parse_mesh(self.mesh)  # raises a ValueError naming `mesh`
        if self.compile_cache is not None and not isinstance(self.compile_cache, str):
            raise ValueError(
                f"`compile_cache` must be a folder path (str) or None, got {self.compile_cache!r}."
            )
        _float(self.lr, "lr")
        _float(self.beta, "beta")
        _float(self.eta, "eta")
        if not (isinstance(self.momentum, (int, float)) and 0 <= self.momentum < 1):
            raise ValueError(f"`momentum` must be in [0, 1), got {self.momentum!r}.")
        if self.max_delta is not None:
            _float(self.max_delta, "max_delta")
        if not isinstance(self.learner_kwargs, dict):
            raise ValueError(f"`learner_kwargs` must be a dict, got {self.learner_kwargs!r}.")

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-serialisable dict."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """The config as a JSON string (sorted keys)."""
        return json.dumps(self.to_dict(), sort_keys=True, indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        """Inverse of `to_dict` (unknown keys raise a `ValueError`)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"`d` has unknown config fields {sorted(unknown)}.")
        return cls(**d)

    def identity(self) -> dict[str, Any]:
        """The fields that determine the results (not `out`, `progress`, `stop_after_steps`,
        `devices`, `mesh`, `compile_cache`)."""
        d = self.to_dict()
        for name in ("out", "progress", "stop_after_steps", "devices", "mesh", "compile_cache"):
            d.pop(name)
        return d
