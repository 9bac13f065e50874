"""The configuration of a continual-learning run, in sections: data, model, learner, training,
devices.

Each section is a frozen dataclass whose fields carry a default, a help text
(`field.metadata["help"]`) and a check, so a command line can be generated from them
(`python -m experiments.continual` does). The learner section is the
[`nte.continual.LearnerConfig`][] of the chosen learner: it alone holds that learner's
hyperparameters.
"""

import dataclasses
import json
from typing import Any

from .._distributed import parse_mesh
from ..data._load import SOURCES
from ._fields import choice, integer, number, of_type, option, validate
from ._learner import LearnerConfig, available_learners, learner_config

SCENARIOS = ("permuted", "task", "domain", "class")


def _mesh(value: Any, name: str) -> None:
    del name
    parse_mesh(value)  # raises a ValueError naming `mesh`


class _Section:
    def __post_init__(self):
        validate(self)


@dataclasses.dataclass(frozen=True)
class DataConfig(_Section):
    """The dataset and its task sequence ([`nte.continual.load_tasks`][])."""

    dataset: str = option("digits", "a name for nte.data.load (digits, fashion_mnist, ...)",
                          of_type(str))  # fmt: skip
    source: str = option("auto", "where nte.data.load reads the dataset", choice(*SOURCES))
    data_dir: str | None = option(None, "passed to nte.data.load", of_type(str, optional=True))
    tasks: int = option(5, "the number of tasks", integer(1))
    scenario: str = option("permuted", "permuted, or a split scenario: task, domain, class",
                           choice(*SCENARIOS))  # fmt: skip
    task_seed: int = option(0, "seed of the task permutations (shared by all seeds)", integer(0))
    permute_first: bool = option(
        False, "permuted scenario: permute the first task too (the paper's protocol)", of_type(bool)
    )
    validation: float = option(
        0.0, "fraction of the training set held out and evaluated instead of the test set "
        "(0: the test set)", number(strict=False, below=1.0),
    )  # fmt: skip

    def __post_init__(self):
        validate(self)
        if self.permute_first and self.scenario != "permuted":
            raise ValueError(
                "`permute_first` applies to the permuted scenario only, got "
                f"scenario={self.scenario!r}."
            )


@dataclasses.dataclass(frozen=True)
class ModelConfig(_Section):
    """The default model, an [`nte.nn.MLP`][] (ignored when `run` is given a `model`)."""

    width: int = option(100, "hidden width", integer(1))
    depth: int = option(2, "hidden layers", integer(0))
    use_bias: bool = option(True, "biases in every layer", of_type(bool))
    parameterization: str = option("standard", "standard or ntk", choice("standard", "ntk"))


@dataclasses.dataclass(frozen=True)
class TrainingConfig(_Section):
    """Epochs, batches, seeds, evaluation, observation and checkpoints of a run."""

    epochs: int = option(3, "passes over each task", integer(1))
    batch_size: int = option(32, "examples per step", integer(1))
    seeds: int = option(3, "models trained in one program (seeds seed, seed + 1, ...)",
                        integer(1))  # fmt: skip
    seed: int = option(0, "the first seed", integer(0))
    seed_mode: str = option("auto", "vmap, map (lax.map) or auto (the learner's preference)",
                            choice("auto", "vmap", "map"))  # fmt: skip
    eval_every: int = option(0, "also evaluate every k steps (0: after each task only)",
                             integer(0))  # fmt: skip
    checkpoint_every: int = option(0, "also checkpoint every k steps (0: at task ends only)",
                                   integer(0))  # fmt: skip
    observe_every: int = option(0, "also call the observers every k steps (0: at task ends)",
                                integer(0))  # fmt: skip
    eval_batch_size: int = option(1024, "test examples per forward pass", integer(1))
    end_task_examples: int = option(256, "training examples given to end_task", integer(1))
    out: str | None = option(None, "output folder; checkpoints in out/checkpoint (None: none)",
                             of_type(str, optional=True))  # fmt: skip
    progress: bool = option(True, "tqdm progress bars", of_type(bool))
    stop_after_steps: int | None = option(
        None, "checkpoint and stop after this many steps (debugging)", integer(1, optional=True)
    )
    overwrite: bool = option(
        False, "discard what `out` holds (checkpoint, then metrics, then the rest) and retrain",
        of_type(bool),
    )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class DevicesConfig(_Section):
    """Devices and compilation ([Running at scale](../scale.md)); they do not change results
    beyond float32 reduction order."""

    devices: int | None = option(None, "how many devices (None: all)", integer(1, optional=True))
    mesh: str | None = option(None, "e.g. data=4 or seed=2,data=2 (None: all on data)", _mesh)
    compile_cache: str | None = option(
        None, "folder of JAX's persistent compilation cache (a trusted folder)",
        of_type(str, optional=True),
    )  # fmt: skip


SECTIONS = {
    "data": DataConfig,
    "model": ModelConfig,
    "training": TrainingConfig,
    "devices": DevicesConfig,
}
# The fields that do not change the results (left out of the checkpoint identity).
NOT_IDENTITY = {"training": ("out", "progress", "stop_after_steps", "observe_every", "overwrite")}
_FIELD_SECTION = {f.name: s for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)}


def _learner(learner: Any, hyperparameters: dict[str, Any]) -> LearnerConfig:
    if learner is None:
        learner = "nte"
    if isinstance(learner, str):
        return learner_config(learner, **hyperparameters)
    if not isinstance(learner, LearnerConfig):
        raise ValueError(
            f"`learner` must be a name from {available_learners()} or a LearnerConfig, "
            f"got {learner!r}."
        )
    own = {f.name for f in dataclasses.fields(learner)}
    for key in hyperparameters:
        if key not in own:
            raise ValueError(
                f"`{key}` is neither a field of a Config section ({', '.join(SECTIONS)}) nor a "
                f"hyperparameter of learner {learner.name!r} ({', '.join(sorted(own))})."
            )
    return dataclasses.replace(learner, **hyperparameters)


@dataclasses.dataclass(frozen=True, init=False)
class Config:
    """Everything that defines a continual-learning run of [`nte.continual.run`][].

    Five sections: `data` ([`nte.continual.DataConfig`][]), `model`
    ([`nte.continual.ModelConfig`][]), `learner` (the [`nte.continual.LearnerConfig`][] of the
    chosen learner, e.g. [`nte.continual.NTEConfig`][]), `training`
    ([`nte.continual.TrainingConfig`][]) and `devices` ([`nte.continual.DevicesConfig`][]).
    Two runs with equal configs produce identical results.

    **Construction.** Give sections, flat keywords, or both:

    ```python
    Config(dataset="digits", tasks=5, learner="nte", beta=0.03, epochs=1, seeds=2)
    Config(data=DataConfig(tasks=5), learner=NTEConfig(beta=0.03), training=TrainingConfig(seeds=2))
    ```

    A flat keyword goes to the section that has a field of that name; every other keyword is
    a hyperparameter of the learner (`learner` is a registered name or a `LearnerConfig`), and
    one the learner does not have raises a `ValueError` naming it. `learner_kwargs` (a dict) is
    merged into the learner's keywords. `devices=<int>` is the flat field `devices.devices` (a
    device count), `devices=DevicesConfig(...)` the section. Flat keywords override the
    sections given, so
    `dataclasses.replace(config, lr=0.1)` and `config.replace(lr=0.1)` work too. The defaults
    are those of `python -m experiments.continual`.
    """

    data: DataConfig
    model: ModelConfig
    learner: LearnerConfig
    training: TrainingConfig
    devices: DevicesConfig

    def __init__(
        self,
        *,
        data: Any = None,
        model: Any = None,
        learner: Any = None,
        training: Any = None,
        devices: Any = None,
        learner_kwargs: Any = None,
        **flat: Any,
    ):
        if devices is not None and not isinstance(devices, DevicesConfig):
            flat["devices"] = devices  # the flat field `devices.devices` (a device count)
            devices = None
        given = {"data": data, "model": model, "training": training, "devices": devices}
        sections = {}
        for name, cls in SECTIONS.items():
            value = cls() if given[name] is None else given[name]
            if not isinstance(value, cls):
                raise ValueError(
                    f"`{name}` must be an nte.continual.{cls.__name__}, got {value!r}."
                )
            own = {k: v for k, v in flat.items() if _FIELD_SECTION.get(k) == name}
            sections[name] = dataclasses.replace(value, **own) if own else value
        if learner_kwargs is not None and not isinstance(learner_kwargs, dict):
            raise ValueError(f"`learner_kwargs` must be a dict, got {learner_kwargs!r}.")
        rest = {k: v for k, v in flat.items() if k not in _FIELD_SECTION}
        sections["learner"] = _learner(learner, {**(learner_kwargs or {}), **rest})
        for name, value in sections.items():
            object.__setattr__(self, name, value)

    def replace(self, **changes: Any) -> "Config":
        """A copy with sections or flat fields changed (as in the constructor)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-serialisable dict of sections (`learner` includes its `name`)."""
        d = {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}
        return {**d, "learner": self.learner.to_dict()}

    def to_json(self) -> str:
        """The config as a JSON string (sorted keys)."""
        return json.dumps(self.to_dict(), sort_keys=True, indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        """Inverse of `to_dict` (unknown sections or fields raise a `ValueError`)."""
        unknown = set(d) - {*SECTIONS, "learner"}
        if unknown:
            raise ValueError(f"`d` has unknown config sections {sorted(unknown)}.")
        sections = {}
        for name, section in SECTIONS.items():
            names = {f.name for f in dataclasses.fields(section)}
            extra = set(d.get(name, {})) - names
            if extra:
                raise ValueError(f"`d[{name!r}]` has unknown fields {sorted(extra)}.")
            sections[name] = section(**d.get(name, {}))
        hp = {k: tuple(v) if isinstance(v, list) else v  # JSON lists were tuples
              for k, v in d.get("learner", {"name": "nte"}).items()}  # fmt: skip
        return cls(**sections, learner=learner_config(hp.pop("name"), **hp))

    def identity(self) -> dict[str, Any]:
        """The sections that determine the results: all but `devices` and the training fields
        `out`, `progress`, `stop_after_steps`, `observe_every`, `overwrite`."""
        d = self.to_dict()
        d.pop("devices")
        for name, fields in NOT_IDENTITY.items():
            for f in fields:
                d[name].pop(f)
        return d


def fill_new_fields(recorded: dict[str, Any], identity: dict[str, Any]) -> dict[str, Any]:
    """`recorded` (a run's identity written by an earlier version) with the section fields it
    lacks taken from `identity` where `identity` holds their default: a field added since the
    run was written, left at its default, does not make the run a different configuration.
    Both are JSON values (tuples as lists)."""
    learner = identity.get("learner", {}).get("name")
    if learner not in available_learners():
        return recorded
    defaults = json.loads(json.dumps(Config(learner=learner).identity()))
    out = dict(recorded)
    for section, fields in identity.items():
        old, known = out.get(section), defaults.get(section, {})
        if not isinstance(old, dict) or not isinstance(fields, dict):
            continue
        new = {k: v for k, v in fields.items() if k not in old and k in known and known[k] == v}
        out[section] = {**old, **new}
    return out
