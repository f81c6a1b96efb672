"""Atomic writes through a temporary file, and the temporary files that killed processes leave.

:func:`atomic_write` writes a file through a temporary file in the same directory
(``.<name>.tmp-<8 hex digits>``), flushed to disk and renamed over the target, so readers and
crashes see the old file or the new one, never a partial one. New files get the permissions
``open()`` would give them (``0o666`` less the umask). Any ``OSError`` while writing (a full
disk, a quota) becomes one :class:`~.errors.WriteError` naming the file; the target is then
unchanged and the temporary file removed.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Union

from .errors import WriteError

#: What :func:`atomic_write` writes: text, bytes, or a callback given the open file object.
Content = Union[str, bytes, Callable[[IO[Any]], None]]

#: Temporary files of :func:`atomic_write`: ``.<target name>.tmp-<8 hex digits>``.
TEMP_PATTERN = re.compile(r"^\.(?P<target>.+)\.tmp-[0-9a-f]{8}$")


def temp_name(target: str | os.PathLike) -> Path:
    """A fresh temporary path next to ``target``, named ``.<name>.tmp-<8 hex digits>``."""
    target = Path(target)
    return target.with_name(f".{target.name[:200]}.tmp-{secrets.token_hex(4)}")


def _os_error_in(exc: BaseException) -> OSError | None:
    """``exc`` or the OSError it was raised from (torch.save wraps a failed write in RuntimeError)."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def _create_temp(target: Path) -> tuple[int, Path]:
    for _ in range(100):
        tmp = temp_name(target)
        try:
            # 0o666 less the umask, as open() would create it
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, f"no free temporary name next to {target}")


_fdopen = os.fdopen  # the file object of a temporary file (replaced in tests)


def atomic_write(path: str | os.PathLike, content: Content, mode: str | None = None, *, what: str = "") -> None:
    """Write ``content`` to ``path`` atomically.

    ``content`` is a ``str`` (written as UTF-8), ``bytes``, or a callback ``write(file)`` given
    the temporary file opened with ``mode`` (default ``"wb"``; ``"w"`` for text). The parent
    directory is created when missing. ``what`` names the file in errors ("checkpoint").

    Raises :class:`WriteError` (an OSError naming ``path``) for any OSError while writing,
    including one the callback raised or caused; other exceptions of the callback propagate.
    Either way ``path`` is unchanged and the temporary file is removed.
    """
    if isinstance(content, str):
        data, mode = content.encode("utf-8"), "wb"
        content = lambda f: f.write(data)  # noqa: E731
    elif isinstance(content, (bytes, bytearray, memoryview)):
        data, mode = bytes(content), "wb"
        content = lambda f: f.write(data)  # noqa: E731
    elif mode is None:
        mode = "wb"
    write = content
    _write_through(Path(path), what, lambda fd, tmp: _write_fd(fd, mode, write))


def atomic_write_path(path: str | os.PathLike, write: Callable[[str], None], *, what: str = "") -> None:
    """Like :func:`atomic_write` for a library function that writes a file by name:
    ``write(temp_path)`` fills the (already created) temporary file, then it is moved to ``path``."""

    def fill(fd: int, tmp: Path) -> None:
        mode = os.fstat(fd).st_mode & 0o7777  # what open() gave it: 0o666 less the umask
        os.close(fd)
        write(str(tmp))
        if os.stat(tmp).st_mode & 0o7777 != mode:  # the writer replaced the file (safetensors: 0o600)
            os.chmod(tmp, mode)
        fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    _write_through(Path(path), what, fill)


def atomic_write_text(path: str | os.PathLike, text: str, *, what: str = "") -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(path, text, what=what)


def _write_fd(fd: int, mode: str, write: Callable[[IO[Any]], None]) -> None:
    kwargs = {} if "b" in mode else {"encoding": "utf-8"}
    with _fdopen(fd, mode, **kwargs) as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def _write_through(path: Path, what: str, fill: Callable[[int, Path], None]) -> None:
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _create_temp(path)
        fill(fd, tmp)
        os.replace(tmp, path)
        tmp = None
    except BaseException as exc:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        cause = _os_error_in(exc)
        if cause is not None and not isinstance(exc, WriteError) and isinstance(exc, Exception):
            raise WriteError(path, cause, what) from exc
        raise
    fsync_directory(path.parent)


def fsync_directory(path: str | os.PathLike) -> None:
    """Make a rename in ``path`` durable (ignored where directories cannot be synced)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def is_temporary(name: str, legacy_targets: Iterable[str] = ()) -> bool:
    """True for the name of a temporary file of :func:`atomic_write` (``.<name>.tmp-<8 hex>``),
    or of earlier versions (``.<name>.<8 characters>.tmp``) for a name in ``legacy_targets``."""
    if TEMP_PATTERN.match(name) is not None:
        return True
    legacy = re.match(r"^\.(.+)\.[a-z0-9_]{8}\.tmp$", name)
    return legacy is not None and legacy.group(1) in set(legacy_targets)


def remove_orphaned_temporaries(folder: str | os.PathLike, legacy_targets: Iterable[str] = ()) -> list[Path]:
    """Remove the temporary files of :func:`atomic_write` that a killed process left in ``folder``.

    Only regular files named ``.<name>.tmp-<8 hex digits>`` go, plus, for each name in
    ``legacy_targets``, the ``.<name>.<8 characters>.tmp`` files of earlier versions. Call it
    only while no other process writes to ``folder`` (under the run's lock). Returns the
    removed paths.
    """
    legacy = set(legacy_targets)
    removed = []
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        if not is_temporary(entry.name, legacy):
            continue
        if entry.is_file(follow_symlinks=False):
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except FileNotFoundError:
                pass
    return removed
