"""Stop requests: SIGTERM (or :func:`request_stop`) makes the loop checkpoint and stop."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator, Sequence

_STOP = threading.Event()


class TrainingInterrupted(RuntimeError):
    """Raised when a stop was requested; the last checkpoint holds the position."""


def request_stop() -> None:
    """Ask the running loop to save a checkpoint after the current step and stop."""
    _STOP.set()


def stop_requested() -> bool:
    return _STOP.is_set()


def clear_stop() -> None:
    _STOP.clear()


@contextlib.contextmanager
def stop_on_signals(signals: Sequence[int] = (signal.SIGTERM,)) -> Iterator[None]:
    """Turn SIGTERM (by default) into :func:`request_stop` while the block runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, lambda *_: request_stop()) for s in signals}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _STOP.clear()
