"""What a run directory may hold, how one is recognised, and what replacing one removes.

A run directory is recognised by its marker file ``.rkd-pml-run`` (written when the run is
created) or, for runs written before the marker existed, by a ``config.json`` holding the
``job`` of one of this package's training jobs. A folder written by ``EmbeddingModel.save``
(``model.safetensors`` and a model ``config.json``) is not a run.

Replacing a run removes its known files only: the files listed in :data:`RUN_FILES`, the
known files of its ``checkpoints/`` and ``model/`` folders, temporary files of interrupted
writes and the run directories nested in it (a demo's ``teacher/``...). Anything else stops
the replacement, named, before anything is removed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from ..files import is_temporary, remove_orphaned_temporaries
from ..files.folders import RUN_MARKER as MARKER
from ..files.paths import path_relation
from .lock import LOCK_NAME, RunLock

#: Files a run writes at its top level.
RUN_FILES = frozenset({"config.json", "metrics.jsonl", "results.json", "recall.png"})

#: Folders a run writes, with the files each may hold.
RUN_FOLDERS = {
    "checkpoints": frozenset({"last.pt", "best.pt"}),
    "model": frozenset({"model.safetensors", "config.json"}),
}

#: The ``job`` values of config.json in runs written before the marker existed.
LEGACY_JOBS = frozenset({"train", "train-triplet", "train-teacher", "train-baseline", "distill", "demo"})

_BOOKKEEPING = frozenset({MARKER, LOCK_NAME})

#: The files whose temporary files earlier versions named ``.<name>.<8 characters>.tmp``.
LEGACY_TEMP_TARGETS = RUN_FILES | {MARKER} | RUN_FOLDERS["checkpoints"] | RUN_FOLDERS["model"]


def _temporary(name: str) -> bool:
    return is_temporary(name, LEGACY_TEMP_TARGETS)


def entries(path: Path) -> list[str]:
    """Names in ``path`` other than the marker and the lock (what makes it non-empty)."""
    return sorted(name for name in os.listdir(path) if name not in _BOOKKEEPING)


def recognise_run(path: Path) -> tuple[bool, str]:
    """``(True, "")`` for a run directory of this package, else ``(False, why not)``."""
    if (path / MARKER).is_file():
        return True, ""
    config = path / "config.json"
    if not config.is_file():
        return False, f"no {MARKER} marker and no config.json"
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False, f"no {MARKER} marker, and its config.json is not readable JSON"
    if isinstance(data, dict) and data.get("job") in LEGACY_JOBS:
        return True, ""
    if isinstance(data, dict) and str(data.get("format", "")).endswith("EmbeddingModel"):
        return False, f"it is a saved model (written by EmbeddingModel.save), not a run; no {MARKER} marker"
    return False, f"no {MARKER} marker, and its config.json is not the configuration of a run"


def removal_plan(path: Path) -> list[Path]:
    """Everything that replacing the run ``path`` removes, deepest first (folders after their
    files); FileExistsError naming the first entry that is not a run's."""
    plan: list[Path] = []
    for name in entries(path):
        item = path / name
        if item.is_symlink():  # the link goes, never what it points to
            if name in RUN_FILES or name in RUN_FOLDERS or _temporary(name):
                plan.append(item)
                continue
            _refuse(path, item)
        if item.is_file() and (name in RUN_FILES or _temporary(name)):
            plan.append(item)
        elif item.is_dir() and name in RUN_FOLDERS:
            for child in sorted(os.listdir(item)):
                inner = item / child
                if (inner.is_file() or inner.is_symlink()) and (
                    child in RUN_FOLDERS[name] or _temporary(child)
                ):
                    plan.append(inner)
                else:
                    _refuse(path, inner)
            plan.append(item)
        elif item.is_dir() and recognise_run(item)[0]:  # a nested run (a demo's teacher/)
            plan.extend(removal_plan(item))
            plan.extend(item / b for b in sorted(_BOOKKEEPING) if (item / b).exists())
            plan.append(item)
        else:
            _refuse(path, item)
    return plan


def _refuse(run: Path, item: Path) -> None:
    kind = "folder" if item.is_dir() and not item.is_symlink() else "file"
    raise FileExistsError(
        f"refusing to overwrite {run}: the {kind} {item} is not part of an rkd-pml run; "
        "move it elsewhere (or delete it) first, or choose another --out"
    )


def nested_runs(path: Path) -> list[Path]:
    """The run directories inside the run ``path`` (at any depth)."""
    found = []
    for name in entries(path):
        item = path / name
        if name not in RUN_FOLDERS and item.is_dir() and not item.is_symlink() and recognise_run(item)[0]:
            found.append(item)
            found.extend(nested_runs(item))
    return found


def clear_run(path: Path) -> None:
    """Remove the files of the run ``path`` (whose lock the caller holds), keeping the
    directory and its lock; the runs nested in it are locked first, so a job still running
    in one stops the replacement before anything is removed."""
    locks = []
    try:
        for nested in nested_runs(path):
            locks.append(RunLock.acquire(nested, remove=True))
        plan = removal_plan(path)  # with the nested runs' lock files, now that they are held
        for item in plan:
            if item.is_dir() and not item.is_symlink():
                os.rmdir(item)
            else:
                try:
                    os.unlink(item)
                except FileNotFoundError:
                    pass
    finally:
        for lock in reversed(locks):
            lock.release()


def remove_orphans(path: Path) -> list[Path]:
    """Remove the temporary files that a killed process left in the run ``path``, its
    ``checkpoints/`` and its ``model/`` folder (call it under the run's lock)."""
    removed = []
    for folder in (path, *(path / name for name in RUN_FOLDERS)):
        removed += remove_orphaned_temporaries(folder, legacy_targets=LEGACY_TEMP_TARGETS)
    return removed


def check_inputs(path: Path, inputs: Iterable[str | os.PathLike]) -> None:
    """ValueError when ``path`` is, contains or lies inside one of the existing ``inputs``
    (symbolic links resolved; a name that is not on disk, such as a timm model's, is skipped)."""
    for given in inputs:
        relation = path_relation(path, given)
        if relation is not None:
            raise ValueError(
                f"output directory {path} {relation} {given}, an input of this run: writing there "
                "could destroy it; choose another --out"
            )
