"""The lock that keeps a run directory to one process at a time: :mod:`rkd_pml.files.lock`
(``fcntl.flock`` on ``.rkd-pml-lock`` in the run directory), under the names runs use."""

from __future__ import annotations

from ..files.lock import LOCK_NAME, RunLock, RunLockedError, read_holder

__all__ = ["LOCK_NAME", "RunLock", "RunLockedError", "read_holder"]
