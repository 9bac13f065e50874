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

STATE_FILE = "state.eqx"
PROGRESS_FILE = "progress.json"
CONFIG_FILE = "run_config.json"


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` atomically (temporary file in the same folder + `os.replace`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save(folder: str | os.PathLike, tree: Any, summary: dict[str, Any]) -> None:
    """Atomically write `tree` (arrays) and then the JSON `summary` into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{STATE_FILE}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        eqx.tree_serialise_leaves(f, tree)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / STATE_FILE)
    atomic_write_text(folder / PROGRESS_FILE, json.dumps(summary, indent=2, sort_keys=True))


def load(folder: str | os.PathLike, like: Any) -> Any | None:
    """The checkpointed tree in `folder` (structured like `like`), or `None` if there is none."""
    path = Path(folder) / STATE_FILE
    if not path.exists():
        return None
    return eqx.tree_deserialise_leaves(path, like)


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
