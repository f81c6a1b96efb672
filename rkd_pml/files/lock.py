"""The lock that keeps a folder (a run directory, a teacher cache) to one process at a time.

The lock is ``fcntl.flock`` on the file ``.rkd-pml-lock`` in the folder, held on an open
descriptor for as long as the work lasts. The holder writes its process id, host, start time
and command into that file, so a second process is refused with a message naming it. The
operating system drops the lock when the holder exits, however it exits (``kill -9``
included), so a lock left by a dead process never blocks.

Within one process a directory may be locked again (for example a run resumed after an
interrupted call whose objects are still alive): the lock is counted and released with the
last holder. Forked children (data-loader workers) inherit the lock but never release it.

A lock taken with ``remove=True`` deletes its file when released (while still holding it);
a process that opened the file just before then finds, once locked, that the file it locked
is no longer the one in the folder, and starts over with the new one.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import threading
import time
import warnings
import weakref
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: runs are not locked
    fcntl = None

LOCK_NAME = ".rkd-pml-lock"

_GUARD = threading.Lock()
_HELD: dict[str, "_Held"] = {}  # lock file (real path) -> descriptor held by this process


class RunLockedError(OSError):
    """The folder is in use by another process; ``holder`` is what that process wrote
    (``pid``, ``host``, ``started``, ``command``), or ``{}`` when it could not be read."""

    def __init__(self, message: str, holder: dict[str, Any] | None = None):
        super().__init__(errno.EBUSY, message)
        self.message = message
        self.holder = dict(holder or {})

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):
        return (type(self), (self.message, self.holder))


class _Held:
    def __init__(self, fd: int | None, remove: bool = False):
        self.fd = fd
        self.count = 1
        self.pid = os.getpid()
        self.remove = remove


class RunLock:
    """A held lock on one folder; :meth:`release` (or garbage collection, or the end of
    the process) lets it go."""

    def __init__(self, folder: Path, key: str):
        self.folder = folder
        self._key = key
        self._finalizer = weakref.finalize(self, _release, key)

    @classmethod
    def acquire(cls, folder: str | os.PathLike, what: str = "run directory", remove: bool = False) -> "RunLock":
        """Lock ``folder`` (an existing directory) or raise :class:`RunLockedError` naming the
        process that holds it; ``what`` names the folder in that message ("teacher cache").
        ``remove``: delete the lock file when the last holder releases it."""
        folder = Path(folder)
        key = os.path.realpath(folder / LOCK_NAME)
        with _GUARD:
            held = _HELD.get(key)
            if held is not None and held.pid == os.getpid():
                held.count += 1
                held.remove = held.remove or remove
                return cls(folder, key)
            _HELD[key] = _Held(_lock_file(folder, key, what), remove)
        return cls(folder, key)

    @property
    def held(self) -> bool:
        return self._finalizer.alive

    def release(self) -> None:
        """Let the lock go (once; later calls do nothing)."""
        self._finalizer()


def _lock_file(folder: Path, key: str, what: str) -> int | None:
    """Open and lock ``key``, write this process's description in it; the descriptor."""
    for _ in range(100):
        fd = _try_lock(folder, key, what)
        if fd is None or _still_there(fd, key):
            return fd
        os.close(fd)  # its holder removed the file as we locked it: lock the new one
    raise RunLockedError(f"{what} {folder}: its lock file keeps being replaced; try again")


def _still_there(fd: int, key: str) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(key)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _try_lock(folder: Path, key: str, what: str) -> int | None:
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(key, flags, 0o666)
    except OSError as exc:
        raise OSError(
            exc.errno, f"cannot create the lock file {key}: {os.strerror(exc.errno or 0).lower()}; "
            f"the {what} must be writable"
        ) from None
    if fcntl is None:  # pragma: no cover
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            holder = _read_holder(fd)
            os.close(fd)
            raise RunLockedError(_busy_message(folder, holder, what), holder) from None
        # a file system without locks (ENOLCK, EOPNOTSUPP): go on unprotected, but say so
        warnings.warn(
            f"cannot lock {key} ({os.strerror(exc.errno or 0)}): a second process using "
            f"{folder} at the same time would not be stopped",
            RuntimeWarning,
            stacklevel=5,
        )
    _write_holder(fd)
    return fd


def _release(key: str) -> None:
    with _GUARD:
        held = _HELD.get(key)
        if held is None or held.pid != os.getpid():
            return  # a forked child: the lock is its parent's
        held.count -= 1
        if held.count > 0:
            return
        del _HELD[key]
        if held.fd is None:
            return
        try:
            if held.remove and _still_there(held.fd, key):
                os.unlink(key)  # while still locked: see the module's docstring
            else:
                os.ftruncate(held.fd, 0)  # no stale description for the next holder's rivals
        except OSError:
            pass
        try:
            if fcntl is not None:
                fcntl.flock(held.fd, fcntl.LOCK_UN)
        finally:
            os.close(held.fd)


def _write_holder(fd: int) -> None:
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv)[:500],
    }
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode("utf-8"), 0)
    except OSError:
        pass  # the lock holds without its description


def _read_holder(fd: int, attempts: int = 5) -> dict[str, Any]:
    """What the holder wrote in the lock file (it may be a moment late writing it)."""
    for attempt in range(attempts):
        try:
            raw = os.pread(fd, 4096, 0)
            data = json.loads(raw.decode("utf-8"))
            if isinstance(data, dict):
                return data
        except (OSError, ValueError):
            pass
        if attempt + 1 < attempts:
            time.sleep(0.05)
    return {}


def read_holder(folder: str | os.PathLike) -> dict[str, Any]:
    """The description in ``folder``'s lock file (``{}`` when there is none): who holds it,
    if it is held."""
    try:
        fd = os.open(Path(folder) / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return {}
    try:
        return _read_holder(fd, attempts=1)
    finally:
        os.close(fd)


def describe_holder(holder: dict[str, Any]) -> str:
    """``"process 123 on host h (since ...: command)"``, or ``"another process"``."""
    if not holder.get("pid"):
        return "another process"
    who = f"process {holder['pid']} on host {holder.get('host', '?')}"
    if holder.get("started"):
        who += f" (since {holder['started']}" + (f": {holder['command']})" if holder.get("command") else ")")
    return who


def _busy_message(folder: Path, holder: dict[str, Any], what: str = "run directory") -> str:
    return (
        f"{what} {folder} is in use by {describe_holder(holder)}; wait for it to finish or stop it, "
        "or choose another --out"
    )


__all__ = ["LOCK_NAME", "RunLock", "RunLockedError", "describe_holder", "read_holder"]
