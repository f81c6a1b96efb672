"""The bookkeeping files this package writes into the folders it owns, shared by every layer.

* :data:`RUN_MARKER` marks a run directory (see ``rkd_pml.runs.contents``);
* :data:`LOCK_NAME` is the lock file of a folder in use (taken by :mod:`.lock`);
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

from .lock import LOCK_NAME, describe_holder

RUN_MARKER = ".rkd-pml-run"


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


__all__ = ["LOCK_NAME", "RUN_MARKER", "describe_holder", "lock_holder"]
