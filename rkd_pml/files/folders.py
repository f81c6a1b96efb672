"""The bookkeeping files this package writes into the folders it owns, shared by every layer.

* :data:`RUN_MARKER` marks a run directory (see ``rkd_pml.training.run_contents``);
* :data:`LOCK_NAME` is the lock file of a folder in use, taken by ``rkd_pml.training.run_lock``
  (which keeps its own copy of the name and of :func:`describe_holder`'s wording: it is
  imported alone, standard library only, by a test's lock-holding process);
  :func:`lock_holder` tells, without taking the lock, whether a process holds it.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: folders are not locked
    fcntl = None

RUN_MARKER = ".rkd-pml-run"
LOCK_NAME = ".rkd-pml-lock"


def lock_holder(folder: str | os.PathLike) -> dict[str, Any] | None:
    """``None`` when no process holds the lock of ``folder`` (no lock file, or one left by a
    process that ended); else what the holder wrote in it (``pid``, ``host``, ``started``,
    ``command``; ``{}`` when unreadable)."""
    try:
        fd = os.open(Path(folder) / LOCK_NAME, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        if fcntl is None:  # pragma: no cover
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # refused while an exclusive holder lives
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return None  # a file system without locks: nobody can hold it
            try:
                data = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
            except (OSError, ValueError):
                data = None
            return data if isinstance(data, dict) else {}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
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


__all__ = ["LOCK_NAME", "RUN_MARKER", "describe_holder", "lock_holder"]
