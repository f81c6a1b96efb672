"""SIGTERM for the command line, in every phase of a command.

Inside the training loop it asks the loop to save a checkpoint and stop after the current step
(:func:`rkd_pml.training.signals.request_stop`); anywhere else (reading the settings, loading
the data, building a cache, ...) it stops the command at once, as Ctrl-C does, with
:class:`Terminated`, so ``finally`` blocks release locks and remove partial files. Worker
processes forked by a DataLoader leave the decision to the main process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from types import FrameType
from typing import Iterator


class Terminated(KeyboardInterrupt):
    """SIGTERM outside the training loop (a KeyboardInterrupt, so that code which cleans up after
    Ctrl-C, a DataLoader's workers included, cleans up after it too)."""


def _in_training_loop(frame: FrameType | None) -> bool:
    loop = sys.modules.get("rkd_pml.training.loop")
    code = getattr(getattr(loop, "_epochs", None), "__code__", None)
    while frame is not None and code is not None:
        if frame.f_code is code:
            return True
        frame = frame.f_back
    return False


@contextlib.contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    """Install the SIGTERM handler (main thread only) while the block runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pid = os.getpid()

    def handler(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != pid or _in_training_loop(frame):
            from .training.signals import request_stop

            request_stop()
        else:
            raise Terminated("stopped by SIGTERM")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        if "rkd_pml.training.signals" in sys.modules:
            from .training.signals import clear_stop

            clear_stop()
