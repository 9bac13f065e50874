"""Atomic checkpoints of a run: one Equinox leaf file plus a small JSON summary.

Everything needed to resume (the stacked training state, the position in the task sequence, the
accuracy matrix so far) lives in ONE file written by `eqx.tree_serialise_leaves` to a temporary
file and moved into place with `os.replace`, so a run killed at any moment leaves either the
previous or the new checkpoint, never a torn one. The JSON summary is for humans.
"""

import json
import os
from pathlib import Path
from typing import Any

import equinox as eqx

from .._internal._io import atomic_write, atomic_write_json, atomic_write_text, read_json

STATE_FILE = "state.eqx"
PROGRESS_FILE = "progress.json"
CONFIG_FILE = "run_config.json"
RECORDS_FILE = "observations.json"


def save(folder: str | os.PathLike, tree: Any, summary: dict[str, Any]) -> None:
    """Atomically write `tree` (arrays) and then the JSON `summary` into `folder`."""
    folder = Path(folder)
    atomic_write(folder / STATE_FILE, lambda f: eqx.tree_serialise_leaves(f, tree), binary=True)
    atomic_write_json(folder / PROGRESS_FILE, summary)


def load(folder: str | os.PathLike, like: Any) -> Any | None:
    """The checkpointed tree in `folder` (structured like `like`), or `None` if there is none."""
    path = Path(folder) / STATE_FILE
    if not path.exists():
        return None
    return eqx.tree_deserialise_leaves(path, like)


def save_records(folder: str | os.PathLike, records: list[dict[str, Any]]) -> None:
    """Atomically write the observation records (a JSON list) into `folder`."""
    atomic_write_json(Path(folder) / RECORDS_FILE, records)


def load_records(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """The observation records saved in `folder` (`[]` if none)."""
    path = Path(folder) / RECORDS_FILE
    return read_json(path) if path.exists() else []


def check_config(folder: str | os.PathLike, identity: dict[str, Any]) -> None:
    """Record the run's config in `folder`, or check it equals the one recorded before.

    Raises `ValueError` if `folder` holds a checkpoint of a different configuration.
    """
    path = Path(folder) / CONFIG_FILE
    text = json.dumps(identity, indent=2, sort_keys=True)
    if path.exists():
        if json.loads(path.read_text()) != json.loads(text):
            raise ValueError(
                f"`out` ({Path(folder).parent}) holds a checkpoint of a different configuration; "
                "use another `out` folder or delete it to start afresh."
            )
    else:
        atomic_write_text(path, text)
