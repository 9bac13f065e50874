"""An exclusive lock on an output folder, so two processes never work in the same one."""

import errno
import fcntl
import os
from pathlib import Path

LOCK_FILE = ".lock"


class FolderLockedError(RuntimeError):
    """Another process holds the lock of the folder (the message names its PID)."""


class FolderLock:
    """`with FolderLock(folder):` holds an exclusive `fcntl.flock` on `folder/.lock`.

    A second process (or a second lock in the same process) fails at once with
    [`FolderLockedError`][] naming the holder's PID. The lock dies with its process, so a
    killed run never leaves a stale lock; the `.lock` file itself stays (it holds the last
    holder's PID, for humans).
    """

    def __init__(self, folder: str | os.PathLike, *, what: str = "`out`"):
        self.folder = Path(folder)
        self.what = what
        self._fd: int | None = None

    def __enter__(self) -> "FolderLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise FolderLockedError(
                f"{self.what} folder {str(self.folder)!r} is in use by another process "
                f"(PID {holder}); wait for it to finish or choose another folder."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
