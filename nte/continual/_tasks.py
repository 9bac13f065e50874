"""Continual-learning task sequences: permuted tasks and split tasks.

A [`nte.continual.Tasks`][] keeps ONE copy of the dataset plus small per-task index arrays:
a pixel permutation per task (`[tasks, features]`), the example indices of each task, a class
mask and a label map. The harness applies them on device inside the compiled step (a gather),
so the dataset is never copied once per task.
"""

import dataclasses
import types
from typing import Any

import jax
import jax.random as jr
import numpy as np
from jaxtyping import PRNGKeyArray

from .._errors import check_choice

SCENARIOS = ("task", "domain", "class")


@dataclasses.dataclass(frozen=True, eq=False)
class Tasks:
    """A sequence of continual-learning tasks over one dataset (host numpy arrays).

    **Fields:**

    - `name`: a short description, e.g. `"permuted-digits"`.
    - `scenario`: `"permuted"`, `"task"`, `"domain"` or `"class"`.
    - `x_train`, `x_test`: `float32 [examples, features]` (flattened images).
    - `y_train`, `y_test`: `int32 [examples]`, the dataset's original labels.
    - `permutations`: `int32 [tasks, features]`, the pixel permutation of each task (the identity
      for split tasks); task `t` sees `x[:, permutations[t]]`.
    - `train_index`, `test_index`: `int32 [tasks, max_examples]`, the examples of each task
      (padded with 0 beyond `train_count[t]`/`test_count[t]`).
    - `train_count`, `test_count`: `int32 [tasks]`, the number of examples of each task.
    - `masks`: `bool [tasks, outputs]`, the logits each task may use.
    - `label_map`: `int32 [tasks, classes]`, original label → training target of each task.
    - `num_outputs`: the size of the network's output layer.
    - `image_shape`: the shape of one image before flattening.
    """

    name: str
    scenario: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    permutations: np.ndarray
    train_index: np.ndarray
    train_count: np.ndarray
    test_index: np.ndarray
    test_count: np.ndarray
    masks: np.ndarray
    label_map: np.ndarray
    num_outputs: int
    image_shape: tuple[int, ...]

    @property
    def n_tasks(self) -> int:
        """The number of tasks."""
        return int(self.permutations.shape[0])

    @property
    def num_features(self) -> int:
        """The number of input features (pixels) of one example."""
        return int(self.x_train.shape[1])


def _meta(dataset: Any, name: str, default: Any = None) -> Any:
    if hasattr(dataset, name):
        return getattr(dataset, name)
    metadata = getattr(dataset, "metadata", None) or {}
    return metadata.get(name, default)


def _arrays(dataset: Any) -> tuple[np.ndarray, ...]:
    try:
        arrays = [
            np.asarray(getattr(dataset, k)) for k in ("x_train", "y_train", "x_test", "y_test")
        ]
    except AttributeError as e:
        raise TypeError(
            "`dataset` must have `x_train`, `y_train`, `x_test`, `y_test` (an nte.data.Dataset), "
            f"got {type(dataset).__name__}."
        ) from e
    x_tr, y_tr, x_te, y_te = arrays
    if x_tr.shape[0] != y_tr.shape[0] or x_te.shape[0] != y_te.shape[0]:
        raise ValueError("`dataset` has different numbers of images and labels.")
    if x_tr.shape[1:] != x_te.shape[1:] or x_tr.shape[0] == 0 or x_te.shape[0] == 0:
        raise ValueError("`dataset` must have non-empty train/test images of one shape.")
    flat = lambda x: np.ascontiguousarray(x.reshape(x.shape[0], -1), dtype=np.float32)
    return flat(x_tr), y_tr.astype(np.int32), flat(x_te), y_te.astype(np.int32)


def _num_classes(dataset: Any, y_train: np.ndarray, y_test: np.ndarray) -> int:
    n = _meta(dataset, "num_classes")
    n = int(n) if n is not None else int(max(y_train.max(), y_test.max())) + 1
    if y_train.min() < 0 or max(y_train.max(), y_test.max()) >= n:
        raise ValueError(f"`dataset` labels must lie in [0, {n}).")
    return n


def _check_n_tasks(n_tasks: Any, maximum: int | None = None) -> None:
    if not isinstance(n_tasks, int) or isinstance(n_tasks, bool) or n_tasks < 1:
        raise ValueError(f"`n_tasks` must be an int >= 1, got {n_tasks!r}.")
    if maximum is not None and n_tasks > maximum:
        raise ValueError(f"`n_tasks` must be <= {maximum} (the number of classes), got {n_tasks}.")


def _name(dataset: Any) -> str:
    return str(_meta(dataset, "name", "dataset"))


def permuted_tasks(
    dataset: Any, n_tasks: int, *, key: PRNGKeyArray, keep_first: bool = True
) -> Tasks:
    """Permuted tasks: every task is the whole dataset under its own fixed pixel permutation.

    All tasks share the `num_classes`-way head and use every logit. The permutations are stored
    as one `int32 [n_tasks, features]` array and applied on device by the harness.

    **Arguments:**

    - `dataset`: an `nte.data.Dataset` (anything with `x_train`, `y_train`, `x_test`, `y_test`).
    - `n_tasks`: the number of tasks (>= 1).
    - `key`: a `jax.random` key; task `t`'s permutation uses `jax.random.fold_in(key, t)`.
    - `keep_first`: the first task keeps the original pixel order (the identity permutation).

    **Returns:**

    A [`nte.continual.Tasks`][].
    """
    _check_n_tasks(n_tasks)
    x_tr, y_tr, x_te, y_te = _arrays(dataset)
    num_classes = _num_classes(dataset, y_tr, y_te)
    d = x_tr.shape[1]
    perms = np.stack([np.asarray(jr.permutation(jr.fold_in(key, t), d)) for t in range(n_tasks)])
    if keep_first:
        perms[0] = np.arange(d)
    rep = lambda n: np.broadcast_to(np.arange(n, dtype=np.int32), (n_tasks, n)).copy()
    return Tasks(
        name=f"permuted-{_name(dataset)}",
        scenario="permuted",
        x_train=x_tr,
        y_train=y_tr,
        x_test=x_te,
        y_test=y_te,
        permutations=perms.astype(np.int32),
        train_index=rep(len(y_tr)),
        train_count=np.full(n_tasks, len(y_tr), np.int32),
        test_index=rep(len(y_te)),
        test_count=np.full(n_tasks, len(y_te), np.int32),
        masks=np.ones((n_tasks, num_classes), bool),
        label_map=np.broadcast_to(np.arange(num_classes, dtype=np.int32), (n_tasks, num_classes)),
        num_outputs=num_classes,
        image_shape=tuple(_meta(dataset, "image_shape", None) or (d,)),
    )


def _indices(y: np.ndarray, groups: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    members = [np.flatnonzero(np.isin(y, g)).astype(np.int32) for g in groups]
    counts = np.array([len(m) for m in members], np.int32)
    index = np.zeros((len(groups), counts.max()), np.int32)
    for t, m in enumerate(members):
        index[t, : len(m)] = m
    return index, counts


def split_tasks(dataset: Any, n_tasks: int, *, scenario: str) -> Tasks:
    """Split tasks: the classes are partitioned into `n_tasks` consecutive groups, one per task.

    **Scenarios:**

    - `"task"` (task-incremental): one `num_classes`-way head; softmax and argmax are restricted
      to the task's classes (a mask).
    - `"domain"` (domain-incremental): a `k`-way head (`k = num_classes / n_tasks`, which must
      be an integer); labels are remapped to their position within the task's group.
    - `"class"` (class-incremental): one `num_classes`-way head, all logits, no mask.

    **Arguments:**

    - `dataset`: an `nte.data.Dataset`.
    - `n_tasks`: the number of tasks, `1 <= n_tasks <= num_classes`; classes are split as evenly
      as possible (`numpy.array_split` of `0..num_classes-1`).
    - `scenario`: `"task"`, `"domain"` or `"class"`.

    **Returns:**

    A [`nte.continual.Tasks`][].
    """
    check_choice(scenario, SCENARIOS, "scenario")
    x_tr, y_tr, x_te, y_te = _arrays(dataset)
    num_classes = _num_classes(dataset, y_tr, y_te)
    _check_n_tasks(n_tasks, num_classes)
    if scenario == "domain" and num_classes % n_tasks:
        raise ValueError(
            f"`n_tasks` must divide the number of classes ({num_classes}) for scenario='domain', "
            f"got {n_tasks}."
        )
    groups = np.array_split(np.arange(num_classes), n_tasks)
    train_index, train_count = _indices(y_tr, groups)
    test_index, test_count = _indices(y_te, groups)
    if train_count.min() == 0 or test_count.min() == 0:
        raise ValueError("`dataset` has a task without train or test examples.")
    label_map = np.broadcast_to(np.arange(num_classes, dtype=np.int32), (n_tasks, num_classes))
    label_map = label_map.copy()
    num_outputs = num_classes
    masks = np.ones((n_tasks, num_classes), bool)
    if scenario == "task":
        masks = np.stack([np.isin(np.arange(num_classes), g) for g in groups])
    elif scenario == "domain":
        num_outputs = num_classes // n_tasks
        masks = np.ones((n_tasks, num_outputs), bool)
        for t, g in enumerate(groups):
            label_map[t, g] = np.arange(len(g))
    d = x_tr.shape[1]
    return Tasks(
        name=f"split-{_name(dataset)}-{scenario}",
        scenario=scenario,
        x_train=x_tr,
        y_train=y_tr,
        x_test=x_te,
        y_test=y_te,
        permutations=np.broadcast_to(np.arange(d, dtype=np.int32), (n_tasks, d)).copy(),
        train_index=train_index,
        train_count=train_count,
        test_index=test_index,
        test_count=test_count,
        masks=masks,
        label_map=label_map,
        num_outputs=num_outputs,
        image_shape=tuple(_meta(dataset, "image_shape", None) or (d,)),
    )


def task_batch(tasks_device: dict, t: jax.Array, index: jax.Array, *, test: bool = False):
    """Gather examples `index` of task `t` on device: permuted inputs and remapped targets."""
    x = tasks_device["x_test" if test else "x_train"][index]
    y = tasks_device["y_test" if test else "y_train"][index]
    return task_inputs(tasks_device, t, x, y)


def task_inputs(tasks_device: dict, t: jax.Array, x: jax.Array, y: jax.Array):
    """Task `t`'s view of dataset examples `x`, `y`: its pixel permutation and label map."""
    return x[:, tasks_device["permutations"][t]], tasks_device["label_map"][t][y]


def holdout(dataset: Any, fraction: float, *, seed: int = 0) -> Any:
    """`dataset` with a validation split in place of its test set: a random `fraction` of the
    training examples (chosen by `seed`, at least one) becomes the test set, the rest the
    training set; the test images are never used. Selects hyperparameters without touching
    the test set (`DataConfig.validation`)."""
    if not isinstance(fraction, float | int) or not 0.0 < fraction < 1.0:
        raise ValueError(f"`fraction` must lie in (0, 1), got {fraction!r}.")
    x, y, _, y_test = _arrays(dataset)
    n_val = max(1, int(round(fraction * len(y))))
    if n_val >= len(y):
        raise ValueError(f"`fraction` {fraction} leaves no training examples of {len(y)}.")
    order = np.random.default_rng(seed).permutation(len(y))
    val, train = np.sort(order[:n_val]), np.sort(order[n_val:])
    return types.SimpleNamespace(
        name=f"{_name(dataset)}-validation",
        x_train=x[train], y_train=y[train], x_test=x[val], y_test=y[val],
        num_classes=_num_classes(dataset, y, y_test),
        image_shape=_meta(dataset, "image_shape", None),
    )  # fmt: skip


def load_tasks(config: Any, dataset: Any = None) -> Tasks:
    """The task sequence of `config.data` ([`nte.continual.Config`][]), loading
    `config.data.dataset` with `nte.data.load` unless `dataset` is given; with
    `config.data.validation > 0` the test set is a held-out part of the training set
    (`holdout`, seeded by `task_seed`)."""
    d = config.data
    if dataset is None:
        from .. import data  # nte.data, imported lazily

        dataset = data.load(d.dataset, source=d.source, data_dir=d.data_dir)
    if d.validation > 0:
        try:
            dataset = holdout(dataset, d.validation, seed=d.task_seed)
        except ValueError as e:  # named as the config names it
            raise ValueError(str(e).replace("`fraction`", "`validation`")) from None
    if d.scenario == "permuted":
        return permuted_tasks(
            dataset, d.tasks, key=jr.key(d.task_seed), keep_first=not d.permute_first
        )
    return split_tasks(dataset, d.tasks, scenario=d.scenario)
