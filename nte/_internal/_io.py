"""Atomic file writes and JSON: the one home for "write a file so a kill never leaves it torn".

Every writer puts its bytes in a temporary file in the destination folder, flushes and fsyncs
it, then moves it into place with `os.replace` (atomic on POSIX). Temporary files are named
`.<name>.tmp<pid>` so that an interrupted writer's leftovers can be found by
[`orphan_temporaries`][].
"""

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

TMP_MARK = ".tmp"


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")


def atomic_write(path: str | os.PathLike, write: Callable[[IO], Any], *, binary: bool) -> None:
    """Call `write(file)` on a temporary file next to `path`, then move it onto `path`.

    Raises `OSError` naming `path` when the write fails (e.g. no space left); the temporary
    file is removed and `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    try:
        with open(tmp, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OSError(e.errno, f"could not write {path}: {e.strerror or e}") from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` atomically."""
    atomic_write(path, lambda f: f.write(text), binary=False)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    atomic_write(path, lambda f: f.write(data), binary=True)


def to_json(obj: Any) -> str:
    """`obj` as indented JSON with sorted keys (numpy scalars and paths become plain values)."""
    return json.dumps(obj, indent=2, sort_keys=True, default=_plain)


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as JSON ([`to_json`][]) to `path` atomically."""
    atomic_write_text(path, to_json(obj) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """The JSON value stored in `path`; `ValueError` naming the file if it is not valid JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{path} is not valid JSON ({e}); delete it or rerun with --overwrite."
        ) from None


def atomic_savefig(fig: Any, path: str | os.PathLike, **kwargs: Any) -> None:
    """`fig.savefig(path, **kwargs)` atomically (the format is taken from `path`'s suffix)."""
    fmt = kwargs.pop("format", Path(path).suffix.lstrip(".") or None)
    atomic_write(path, lambda f: fig.savefig(f, format=fmt, **kwargs), binary=True)


def orphan_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Temporary files left in `folder` (recursively) by writers that were killed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return [p for p in folder.rglob(f".*{TMP_MARK}*") if p.is_file() and _is_ours(p.name)]


def _is_ours(name: str) -> bool:
    head, sep, pid = name.rpartition(TMP_MARK)
    return bool(sep) and head.startswith(".") and pid.isdigit()
