"""Errors of the file helpers, and exceptions as one line for messages."""

from __future__ import annotations

import errno
import os

_HINTS = {
    errno.ENOSPC: "free some space and try again",
    getattr(errno, "EDQUOT", -1): "free some space or raise the quota and try again",
    errno.EACCES: "check the permissions of the directory",
    errno.EROFS: "choose a writable location",
}


class WriteError(OSError):
    """A file that could not be written; ``errno`` and ``filename`` are those of the cause."""

    def __init__(self, path: str | os.PathLike, cause: OSError | None = None, what: str = "", note: str = ""):
        code = cause.errno if cause is not None else None
        if isinstance(cause, WriteError):
            reason = cause.reason
        else:
            reason = os.strerror(code) if code else (one_line(cause) if cause is not None else "unknown error")
            reason = reason[:1].lower() + reason[1:]
        self.reason = reason
        message = f"cannot write {what + ' ' if what else ''}{path}: {reason}"
        if code in _HINTS:
            message += f"; {_HINTS[code]}"
        if note:
            message += f"; {note}"
        super().__init__(code, message)
        self.filename = str(path)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):  # picklable (sent between processes)
        return (_rebuild_write_error, (type(self), self.errno, self.filename, self.message, self.reason))


def _rebuild_write_error(cls, code, filename, message, reason):
    exc = cls.__new__(cls)
    OSError.__init__(exc, code, message)
    exc.filename, exc.message, exc.reason = filename, message, reason
    return exc


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``str(exc)`` on one line (whitespace collapsed, at most ``limit`` characters), or the
    exception's class name when it has no message."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
