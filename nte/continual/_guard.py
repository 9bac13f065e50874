"""What keeps a run's output folder honest: one process at a time, no leftovers, no silent
degenerate runs.

- [`hold`][]: an exclusive lock on `Config.training.out` for the whole run (re-entrant within
  a process, so the command line can hold it around `run` and its own writes);
- [`clean`][]: the temporary files of killed writers are removed (safe once the lock is held:
  no live writer can own them) and, with `overwrite`, the folder's contents are discarded;
- [`health_warnings`][]: the warnings of a run whose weights are (nearly) all zero or all at
  the `max_delta` clip.
"""

import contextlib
import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .._internal._io import orphan_temporaries
from .._internal._lock import FolderLock

METRICS_FILE = "metrics.json"
CHECKPOINT_FOLDER = "checkpoint"
CONFIG_FILE = "config.json"
# The other files of a run's folder (written by `python -m experiments.continual`).
RESULT_FILES = (CONFIG_FILE, "accuracy_matrix.png", "per_task_accuracy.png")
# A run is degenerate when more than this fraction of its weights is zero / at the clip.
DEGENERATE = 0.99

_HELD: dict[Path, int] = {}


@contextlib.contextmanager
def hold(folder: str | os.PathLike) -> Iterator[None]:
    """Hold the exclusive lock of `folder` (a `FolderLockedError` naming the holder's PID if
    another process has it); nested `hold`s of the same folder in one process are free."""
    key = Path(folder).resolve()
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    with FolderLock(folder):
        _HELD[key] = 1
        try:
            yield
        finally:
            del _HELD[key]


def clean(folder: str | os.PathLike, *, overwrite: bool) -> None:
    """Remove the orphan temporary files in `folder`; with `overwrite`, remove its checkpoint,
    then its metrics, then the other files a run writes (`RESULT_FILES`; nothing else is
    touched). Call with the lock held."""
    folder = Path(folder)
    for path in orphan_temporaries(folder):
        path.unlink(missing_ok=True)
    if not overwrite or not folder.is_dir():
        return
    shutil.rmtree(folder / CHECKPOINT_FOLDER, ignore_errors=True)
    (folder / METRICS_FILE).unlink(missing_ok=True)
    for name in RESULT_FILES:
        (folder / name).unlink(missing_ok=True)


def health_update(health: np.ndarray, first: np.ndarray, counts: Any, task: int) -> None:
    """Fold one task end's `[seeds, 3]` weight counts (all, zero, at clip) into the running
    maxima `health` (`[2]`: fraction zero, fraction at the clip, worst seed) and `first`
    (`[2]`: the first task at which each crossed `DEGENERATE`, −1 if none), in place."""
    counts = np.asarray(counts, np.float64)
    fractions = np.max(counts[:, 1:] / np.maximum(counts[:, :1], 1.0), axis=0)
    np.maximum(health, fractions, out=health)
    crossed = (fractions > DEGENERATE) & (first < 0)
    first[crossed] = task


def health_warnings(health: np.ndarray, first: np.ndarray, max_delta: float | None) -> list[str]:
    """The warnings of a degenerate run (see `health_update`)."""
    out = []
    if first[0] >= 0:
        out.append(
            f"degenerate run: {100 * health[0]:.2f}% of the weights are exactly zero (from the "
            f"end of task {int(first[0])}); the learner has pruned nearly everything (a too "
            "large eta or lr?)"
        )
    if first[1] >= 0:
        out.append(
            f"degenerate run: {100 * health[1]:.2f}% of the weights are pinned at the max_delta "
            f"clip ({max_delta:g}) (from the end of task {int(first[1])}); raise max_delta"
        )
    return out


def status(
    diverged: tuple | None, health: np.ndarray, first: np.ndarray, max_delta, *, complete: bool
) -> tuple[str, list[str]]:
    """A run's status (`"complete"`, `"stopped"` or `"diverged"`) and its warnings, each also
    issued as a `RuntimeWarning`; `diverged` is `(task, step, chunk start, seeds)` or `None`."""
    notes = health_warnings(health, first, max_delta)
    if diverged is not None:
        t, step, since, seeds = diverged
        notes.insert(0, (
            f"diverged: the loss or the parameters became non-finite (NaN or inf) in task {t} "
            f"between steps {since} and {step} (seeds {seeds}); the learner was stopped there"
        ))  # fmt: skip
    for note in notes:
        warnings.warn(note, RuntimeWarning, stacklevel=4)
    if diverged is not None:
        return "diverged", notes
    return ("complete" if complete else "stopped"), notes
