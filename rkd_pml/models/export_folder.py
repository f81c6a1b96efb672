"""The folder of an export: what may be written or replaced, and the all-or-nothing write.

Every export folder holds the marker file ``.rkd-pml-export`` next to timm's
``model.safetensors`` and ``config.json``. ``overwrite`` replaces only such a folder (or an
empty one), and only while it holds nothing else: a file the export did not write stops the
replacement, named. Never replaced, overwrite or not: a run directory (its ``.rkd-pml-run``
marker, or a ``config.json`` with a training ``job``), a folder whose lock (``.rkd-pml-lock``)
a process holds, an input of the export, a folder holding an input, the current directory or
a folder holding it. Every check runs before any folder is created.

The files are written into a fresh temporary folder next to the target
(``.<name>.tmp-<8 hex digits>``, permissions from the umask as for any new folder) that is
then renamed into place; the previous export is moved aside and its files removed. A failure
(a full disk) removes the temporary folder and leaves the previous export as it was.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import warnings
from pathlib import Path
from typing import Callable, Iterable

from ..files import WriteError, atomic_write, fsync_directory, temp_name
from ..files.folders import LOCK_NAME, RUN_MARKER, describe_holder, lock_holder

#: The marker of an export folder (written first into every export).
EXPORT_MARKER = ".rkd-pml-export"

#: The files an export writes (besides its marker).
EXPORT_FILES = frozenset({"config.json", "model.safetensors"})

_MARKER_TEXT = (
    "This folder was written by `rkd-pml export` (rkd_pml.models.export_timm); "
    "`--overwrite` replaces it whole.\n"
)


def check_out_dir(
    out_dir: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str]], overwrite: bool
) -> tuple[Path, list[str]]:
    """The export folder of ``out_dir`` (symbolic links resolved) and the names of the files
    it holds (``[]`` when it is missing or empty); raises ValueError or an OSError naming
    ``out_dir`` when it may not be written. Creates nothing."""
    text = os.fspath(out_dir)
    if not text.strip():
        raise ValueError("the export folder (--out) is empty: name a folder to write")
    out = Path(os.path.realpath(text))
    _check_relations(out, text, inputs)
    if os.path.lexists(out) and not out.is_dir():
        raise FileExistsError(f"export folder {text!r} exists and is not a directory; choose another --out")
    ancestor = next(p for p in out.parents if os.path.lexists(p))
    if not ancestor.is_dir():
        raise NotADirectoryError(f"export folder {text!r}: {ancestor} is not a directory; choose another --out")
    if not out.is_dir():
        return out, []
    return out, _replaceable_files(out, text, overwrite)


def _check_relations(out: Path, text: str, inputs: Iterable[str | os.PathLike[str]]) -> None:
    for given in inputs:
        source = Path(os.path.realpath(given))
        if out == source or source in out.parents or out in source.parents:
            raise ValueError(
                f"export folder {text!r} would write into the source {os.fspath(given)!r} (or replace a "
                "folder holding it): choose another --out"
            )
    cwd = Path(os.path.realpath(os.getcwd()))
    if out == cwd or out in cwd.parents:
        raise ValueError(
            f"export folder {text!r} is the current directory or holds it: the export replaces its folder "
            "whole; choose another --out"
        )


def _replaceable_files(out: Path, text: str, overwrite: bool) -> list[str]:
    names = sorted(os.listdir(out))
    if RUN_MARKER in names or _is_run_config(out / "config.json"):
        raise FileExistsError(
            f"export folder {text!r} is a run directory of rkd-pml: an export never replaces a run; "
            "choose another --out"
        )
    holder = lock_holder(out)
    if holder is not None:
        raise OSError(
            f"export folder {text!r} is in use by {describe_holder(holder)}; wait for it to finish "
            "or choose another --out"
        )
    if not [n for n in names if n != LOCK_NAME]:  # empty (a stale lock is bookkeeping)
        return names
    if not overwrite:
        raise FileExistsError(
            f"export folder {text!r} exists; pass --overwrite (overwrite=True) to replace it"
        )
    if EXPORT_MARKER not in names:
        raise FileExistsError(
            f"refusing to overwrite {text!r}: it is not an export folder of rkd-pml (no {EXPORT_MARKER} "
            "marker); move its contents elsewhere, or choose another --out"
        )
    for name in names:
        item = out / name
        if name not in EXPORT_FILES | {EXPORT_MARKER, LOCK_NAME} or item.is_symlink() or not item.is_file():
            kind = "folder" if item.is_dir() and not item.is_symlink() else "file"
            raise FileExistsError(
                f"refusing to overwrite {text!r}: the {kind} {item} was not written by rkd-pml export; "
                "move it elsewhere (or delete it) first, or choose another --out"
            )
    return names


def _is_run_config(file: Path) -> bool:
    """A ``config.json`` of a training job (runs written before the run marker existed)."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(data, dict) and "job" in data


def write_export_folder(
    out_dir: str | os.PathLike[str],
    inputs: Iterable[str | os.PathLike[str]],
    overwrite: bool,
    write: Callable[[Path], None],
) -> Path:
    """Check ``out_dir`` (:func:`check_out_dir`), call ``write(folder)`` to fill a fresh
    temporary folder, and put it in place of ``out_dir``; returns the export folder.

    Any OSError while writing is one :class:`~rkd_pml.files.WriteError` naming ``out_dir``;
    the temporary folder is then removed and ``out_dir`` is as it was."""
    inputs = list(inputs)
    out, _ = check_out_dir(out_dir, inputs, overwrite)
    tmp = None
    try:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = temp_name(out)
            os.mkdir(tmp)  # 0o777 less the umask, as any new folder
            atomic_write(tmp / EXPORT_MARKER, _MARKER_TEXT)
            write(tmp)
        except OSError as exc:  # a full disk, a quota, a read-only folder
            raise WriteError(os.fspath(out_dir), exc, "the export") from exc
        _, names = check_out_dir(out_dir, inputs, overwrite)  # again: nothing came in the way meanwhile
        _swap(tmp, out, names)
        tmp = None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _swap(tmp: Path, out: Path, names: list[str]) -> None:
    """Rename ``tmp`` to ``out``; a previous ``out`` holding the files ``names`` is moved aside
    and removed."""
    if not os.path.lexists(out):
        try:
            os.rename(tmp, out)
        except OSError as exc:  # another process created it meanwhile
            raise FileExistsError(exc.errno, f"export folder {out} appeared while exporting; run again") from None
        fsync_directory(out.parent)
        return
    old = out.with_name(f".{out.name[:200]}.old-{secrets.token_hex(4)}")
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except OSError:
        os.rename(old, out)  # put the previous export back
        raise
    fsync_directory(out.parent)
    for name in names:
        try:
            os.unlink(old / name)
        except FileNotFoundError:
            pass
    try:
        os.rmdir(old)
    except OSError:
        warnings.warn(
            f"the previous export was moved to {old}, which now holds files written meanwhile: "
            "they were kept there", RuntimeWarning, stacklevel=3,
        )
