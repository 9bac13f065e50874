"""Verified, atomic checkpoints of a run: one file holding the state, its config and a checksum.

Everything needed to resume (the stacked training state, the position in the task sequence, the
accuracy matrix so far) lives in ONE file, `state.eqx`:

    payload (eqx.tree_serialise_leaves) | trailer JSON | trailer length (8 bytes) | MAGIC

The trailer holds the payload's SHA-256 and byte count and the run's config identity. The file
is written atomically (a temporary file moved into place), so a run killed at any moment leaves
either the previous or the new checkpoint. On resume the checksum, the config and the finiteness
of the loaded arrays are verified; any failure is one [`CheckpointError`][] naming the file and
what to do. The JSON summary beside it is for humans.
"""

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import equinox as eqx
import jax.tree_util as jtu
import numpy as np

from .._internal._io import atomic_write, atomic_write_json, atomic_write_text, read_json
from ._config import fill_new_fields

STATE_FILE = "state.eqx"
PROGRESS_FILE = "progress.json"
CONFIG_FILE = "run_config.json"
RECORDS_FILE = "observations.json"
MAGIC = b"NTECKPT1"
_CHUNK = 1 << 24


class CheckpointError(ValueError):
    """A checkpoint that cannot be trusted: corrupt, truncated, of another config or structure,
    or holding non-finite values. The message names the file and the fix."""


def _fix(folder: Path) -> str:
    return f"rerun with --overwrite (`Config.overwrite=True`) or delete {str(folder)!r}"


class _Hashing:
    """A write-only file wrapper that hashes and counts what passes through it."""

    def __init__(self, f: Any):  # a binary file
        self.f, self.sha, self.size, self.error = f, hashlib.sha256(), 0, None

    def write(self, data) -> int:
        data = memoryview(data).cast("B")
        self.sha.update(data)
        self.size += len(data)
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e  # equinox wraps it in a TreePathError naming a leaf
            raise


def _write(f: IO[bytes], tree: Any, identity: Any) -> None:
    h = _Hashing(f)
    try:
        eqx.tree_serialise_leaves(h, tree)
    except Exception:
        if h.error is not None:  # e.g. no space left: the file's error, not a leaf's
            raise h.error from None
        raise
    trailer = json.dumps(
        {"format": 1, "sha256": h.sha.hexdigest(), "bytes": h.size, "identity": identity},
        sort_keys=True,
    ).encode()
    f.write(trailer + len(trailer).to_bytes(8, "big") + MAGIC)


def save(folder: str | os.PathLike, tree: Any, summary: dict[str, Any], *, identity=None) -> None:
    """Atomically write `tree` (arrays) with its checksum and `identity` (the run's config, a
    JSON value), then the JSON `summary`, into `folder`."""
    folder = Path(folder)
    atomic_write(folder / STATE_FILE, lambda f: _write(f, tree, identity), binary=True)
    atomic_write_json(folder / PROGRESS_FILE, summary)


def _trailer(path: Path, f: IO[bytes]) -> dict:
    """The verified trailer of an open checkpoint file (checksum checked over the payload)."""
    size = f.seek(0, os.SEEK_END)
    bad = lambda why: CheckpointError(f"checkpoint {str(path)!r} is corrupt: {why}; ")
    if size < 16:
        raise bad("too short to be a checkpoint")
    f.seek(size - 16)
    length, magic = int.from_bytes(f.read(8), "big"), f.read(8)
    if magic != MAGIC or length > size - 16:
        raise bad("no checkpoint trailer (truncated, or not written by this version)")
    f.seek(size - 16 - length)
    try:
        trailer = json.loads(f.read(length))
    except ValueError:
        raise bad("its trailer is not valid JSON") from None
    if trailer.get("bytes") != size - 16 - length:
        raise bad(f"{size - 16 - length} payload bytes, the trailer says {trailer.get('bytes')}")
    f.seek(0)
    sha, left = hashlib.sha256(), trailer["bytes"]
    while left:
        chunk = f.read(min(_CHUNK, left))
        sha.update(chunk)
        left -= len(chunk)
    if sha.hexdigest() != trailer.get("sha256"):
        raise bad("its SHA-256 checksum does not match its contents")
    return trailer


def differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """The dotted keys at which two JSON values differ (e.g. `["learner.lr: 0.01 -> 0.2"]`)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            key = f"{prefix}.{k}" if prefix else str(k)
            if k not in old or k not in new:
                out.append(f"{key}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}")
            else:
                out += differences(old[k], new[k], key)
        return out
    return [] if old == new else [f"{prefix or '<value>'}: {old!r} -> {new!r}"]


def _check_finite(path: Path, tree: Any) -> None:
    """NaN or +inf anywhere is corruption (−inf is allowed: the log-magnitude of a pruned
    expert in the NTE state)."""
    for key, leaf in jtu.tree_leaves_with_path(tree):
        a = np.asarray(leaf)
        if np.issubdtype(a.dtype, np.inexact) and (np.isnan(a).any() or np.isposinf(a).any()):
            raise CheckpointError(
                f"checkpoint {str(path)!r} holds NaN or +inf values at {jtu.keystr(key)}; "
                "refusing to train on them: "
            )


def load(
    folder: str | os.PathLike, like: Any, *, identity=None, finite: Callable = lambda t: t
) -> Any | None:
    """The verified checkpointed tree in `folder` (structured like `like`), or `None` if there
    is none. With `identity`, the checkpoint must have been written by the same config;
    `finite(tree)` is the part that must hold no NaN or +inf (default: all of it).

    Raises [`CheckpointError`][] (naming the file and what to do) if the file is corrupt or
    truncated, was written by another config or for another state structure, or holds NaN.
    """
    folder = Path(folder)
    path = folder / STATE_FILE
    if not path.exists():
        return None
    try:
        with open(path, "rb") as f:
            trailer = _trailer(path, f)
            f.seek(0)
            diff = [] if identity is None else _changes(trailer["identity"], identity)
            if diff:
                raise CheckpointError(
                    f"checkpoint {str(path)!r} was written by a different configuration "
                    f"({'; '.join(diff)}): "
                )
            try:
                tree = eqx.tree_deserialise_leaves(f, like)
            except Exception as e:  # noqa: BLE001 - any failure means "not this structure"
                raise CheckpointError(
                    f"checkpoint {str(path)!r} does not match this run's state structure "
                    f"({type(e).__name__}: {e}); "
                ) from None
        _check_finite(path, finite(tree))
    except CheckpointError as e:
        raise CheckpointError(f"{e}{_fix(folder)}.") from None
    return tree


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def save_records(folder: str | os.PathLike, records: list[dict[str, Any]]) -> None:
    """Atomically write the observation records (a JSON list) into `folder`."""
    atomic_write_json(Path(folder) / RECORDS_FILE, records)


def load_records(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """The observation records saved in `folder` (`[]` if none)."""
    path = Path(folder) / RECORDS_FILE
    return read_json(path) if path.exists() else []


def _changes(recorded: dict[str, Any], identity: dict[str, Any]) -> list[str]:
    """`differences` of a recorded identity and this run's, fields added since left aside
    when this run has them at their defaults (`fill_new_fields`)."""
    new = _json(identity)
    return differences(fill_new_fields(recorded, new), new)


def check_config(folder: str | os.PathLike, identity: dict[str, Any]) -> None:
    """Check the run's config equals the one recorded in `folder` (if any); writes nothing.

    Raises [`CheckpointError`][] naming the differing fields if `folder` holds a checkpoint of
    a different configuration. A field the recorded config lacks (added to `Config` since)
    counts as equal when this run leaves it at its default.
    """
    path = Path(folder) / CONFIG_FILE
    if path.exists():
        diff = _changes(read_json(path), identity)
        if diff:
            raise CheckpointError(
                f"`out` ({Path(folder).parent}) holds a checkpoint of a different configuration "
                f"({'; '.join(diff)}); use another `out` folder, rerun with --overwrite, or "
                "delete it to start afresh."
            )


def write_config(folder: str | os.PathLike, identity: dict[str, Any]) -> None:
    """Record the run's config in `folder` (once it is accepted: after `check_config` and a
    verified `load`)."""
    path = Path(folder) / CONFIG_FILE
    if not path.exists():
        atomic_write_text(path, json.dumps(_json(identity), indent=2, sort_keys=True))
