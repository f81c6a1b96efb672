"""The folder of a teacher cache: how one is recognised, what a build may replace, its lock.

A cache folder holds its marker ``.rkd-pml-cache`` (written when a build starts), the cache's
files (:data:`~.teacher_cache_format.CACHE_FILES`) and, while a build runs, the lock
``.rkd-pml-lock`` (removed when the build ends) and the tensors being written,
``.cache.safetensors.partial``. Caches written before the marker existed are recognised by
the ``"format"`` of their ``manifest.json``.

Building into a folder (:meth:`CacheFolder.prepare`):

* a new or empty folder is used as is; what a build that died left (its partial tensors, its
  temporary files, its marker) is removed under the lock, never blocking the next build;
* a cache is replaced only with ``overwrite``, and only when it holds nothing but a cache's
  files: anything else is named and nothing is removed; any other folder is refused;
* the folder may not be, contain or lie inside an input (the teacher, the data root), nor
  contain the current directory;
* a folder another process is building into is refused, naming that process.
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Mapping
from pathlib import Path

from ..files import TEMP_PATTERN, atomic_write_text
from ..files.lock import LOCK_NAME, RunLock
from ..files.paths import path_relation
from .teacher_cache_format import CACHE_FILES, FORMAT, MANIFEST_NAME, TENSORS_NAME

MARKER = ".rkd-pml-cache"
PARTIAL_NAME = f".{TENSORS_NAME}.partial"
_OWN_NAMES = frozenset({*CACHE_FILES, MARKER})
_LEGACY_TEMP = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp$")  # tempfile.mkstemp of earlier versions


class CacheFolder:
    """A cache folder locked for one build; ``partial`` is where the tensors are written.
    End the build with :meth:`finish` (the cache is complete) or :meth:`abandon`."""

    def __init__(self, path: Path, lock: RunLock, created: bool):
        self.path, self._lock, self._created = path, lock, created
        self._wrote_marker = False

    @property
    def partial(self) -> Path:
        return self.path / PARTIAL_NAME

    @classmethod
    def prepare(
        cls,
        out_dir: str | os.PathLike[str],
        overwrite: bool,
        inputs: Mapping[str, str | os.PathLike[str] | None] | None = None,
    ) -> CacheFolder:
        """Check, create and lock ``out_dir``; remove a replaced cache and a dead build's leftovers.

        ``inputs``: what the build reads, by description (``{"the teacher": dir}``).
        FileExistsError / ValueError naming the folder (and what is in the way) before anything
        is created or removed; :class:`~rkd_pml.files.lock.RunLockedError` when another process
        builds into it.
        """
        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise FileExistsError(f"out_dir {out} exists and is not a directory; choose another --out")
        _check_inputs(out, inputs or {})
        _check_replaceable(out, overwrite)  # before the lock: a foreign folder gets no lock file
        created = not out.exists()
        out.mkdir(parents=True, exist_ok=True)
        folder = cls(out, RunLock.acquire(out, what="teacher cache", remove=True), created)
        try:
            replace = _check_replaceable(out, overwrite)  # again, now that no build can start
            for item in _removal_plan(out, replace):
                item.unlink(missing_ok=True)
            marker = {"format": FORMAT, "note": "a teacher cache; rkd-pml teacher-cache --overwrite replaces it"}
            atomic_write_text(out / MARKER, json.dumps(marker) + "\n", what="teacher cache marker")
            folder._wrote_marker = True
        except BaseException:
            folder.abandon()
            raise
        return folder

    def finish(self) -> None:
        """The cache is complete: let the folder go (the lock file goes with it)."""
        self._lock.release()

    def abandon(self) -> None:
        """The build failed: remove what it wrote (the cache is incomplete), let the folder go,
        and remove the folder when the build created it and it is empty."""
        try:
            self.partial.unlink(missing_ok=True)
            if not (self.path / MANIFEST_NAME).exists():  # no manifest, no cache: its files go
                for name in CACHE_FILES:
                    (self.path / name).unlink(missing_ok=True)
                if self._wrote_marker:
                    (self.path / MARKER).unlink(missing_ok=True)
        finally:
            self._lock.release()
        if self._created:
            try:
                self.path.rmdir()
            except OSError:
                pass


def is_cache(path: Path) -> tuple[bool, str]:
    """``(True, "")`` for a teacher cache folder of this package, else ``(False, why not)``."""
    if _is_file(path / MARKER):
        return True, ""
    manifest = path / MANIFEST_NAME
    if not _is_file(manifest):
        return False, f"no {MARKER} marker and no {MANIFEST_NAME}"
    try:
        data = json.loads(manifest.read_bytes()[: 1 << 24].decode("utf-8"))
    except (OSError, ValueError):
        return False, f"no {MARKER} marker, and its {MANIFEST_NAME} is not readable JSON"
    if isinstance(data, dict) and data.get("format") == FORMAT:
        return True, ""  # a cache written before the marker existed
    return False, f"no {MARKER} marker, and its {MANIFEST_NAME} is not a teacher cache's"


def _check_inputs(out: Path, inputs: Mapping[str, str | os.PathLike[str] | None]) -> None:
    for what, given in inputs.items():
        relation = None if given is None else path_relation(out, given)
        if relation is not None:
            raise ValueError(
                f"out_dir {out} {relation} {given}, {what}: writing there could destroy it; choose another --out"
            )
    if path_relation(out, os.getcwd()) == "contains":
        raise ValueError(f"out_dir {out} contains the current directory {os.getcwd()}; choose another --out")


def _check_replaceable(out: Path, overwrite: bool) -> bool:
    """True when ``out`` holds a cache to replace; raises when it holds anything else."""
    if not out.is_dir():
        return False
    content, foreign = _sort(out)
    if not content and not foreign:
        return False  # empty, or what a dead build left
    cache, reason = is_cache(out)
    if not cache:
        raise FileExistsError(
            f"{'refusing to overwrite' if overwrite else 'out_dir'} {out}: it is not a teacher cache ({reason}) "
            f"and holds {_name(out / (foreign or content)[0])}; choose another --out"
        )
    if foreign:
        raise FileExistsError(
            f"refusing to {'overwrite' if overwrite else 'write to'} {out}: {_name(out / foreign[0])} is not part "
            "of a teacher cache; move it elsewhere (or delete it) first, or choose another --out"
        )
    if not overwrite:
        raise FileExistsError(f"out_dir {out} is a teacher cache; pass overwrite=True (--overwrite) to replace it")
    return True


def _sort(out: Path) -> tuple[list[str], list[str]]:
    """(the cache's files, anything else) in ``out``; the lock, the marker and a dead build's
    leftovers are neither."""
    content, foreign = [], []
    for name in sorted(os.listdir(out)):
        if name == LOCK_NAME or (name == MARKER and _is_file(out / MARKER)) or _leftover(out, name):
            continue
        (content if name in CACHE_FILES and _is_file(out / name) else foreign).append(name)
    return content, foreign


def _leftover(out: Path, name: str) -> bool:
    """A file that a build which died left: its partial tensors or a temporary file of one of
    the cache's files (only files whose names and contents are this package's)."""
    item = out / name
    if not _is_file(item):
        return False
    if name == PARTIAL_NAME:
        return item.is_symlink() or _is_file(out / MARKER) or _has_cache_header(item)
    match = TEMP_PATTERN.match(name) or _LEGACY_TEMP.match(name)
    return match is not None and match.group("target") in _OWN_NAMES


def _removal_plan(out: Path, replace: bool) -> list[Path]:
    """A dead build's leftovers, then (``replace``) the cache's files, the manifest first."""
    content, _ = _sort(out)
    plan = [out / name for name in sorted(os.listdir(out)) if _leftover(out, name)]
    if replace:
        plan += [out / name for name in sorted(content, key=lambda n: n != MANIFEST_NAME)]
    return plan


def _has_cache_header(file: Path) -> bool:
    """True when ``file`` begins with the safetensors header this package writes for a cache."""
    try:
        with open(file, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > 1 << 20:
                return False
            header = json.loads(f.read(length).decode("utf-8"))
    except (OSError, ValueError, struct.error):
        return False
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return isinstance(metadata, dict) and metadata.get("content") == FORMAT


def _is_file(path: Path) -> bool:
    """A regular file or a symbolic link (only the link is ever removed)."""
    return path.is_symlink() or path.is_file()


def _name(item: Path) -> str:
    return f"{'folder' if item.is_dir() and not item.is_symlink() else 'file'} {item}"


__all__ = ["MARKER", "PARTIAL_NAME", "CacheFolder", "is_cache"]
