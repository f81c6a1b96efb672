"""Where a study's runs train: the ``--device`` option of the studies and its check.

The device is a runtime setting, not part of a study's recipe: a study started on the CPU may be
continued on a GPU; each run's record says where it ran. :func:`check_device` is called before
any folder is created, so a device that is not there is refused in one line. The same option is
shared by the studies: ``studies.reproduction``, ``studies.classification``, ``studies.fewshot`` and
``studies.speed_quality``.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

#: the devices a study accepts
DEVICE_CHOICES = "cpu, cuda, cuda:N or auto (CUDA when available)"


def add_device_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup, default: str = "cpu") -> None:
    """Add ``--device`` (default ``default``) to ``parser``."""
    parser.add_argument("--device", default=default, metavar="DEV",
                        help=f"{DEVICE_CHOICES}: where the runs train (not part of the recipe: a study may continue "
                             f"on another device; each record names the device it ran on)")


def check_device(name: str) -> str:
    """``name`` checked and resolved: ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (``auto``: CUDA when available).

    SystemExit with one line naming ``--device`` when it is not one of :data:`DEVICE_CHOICES` or
    is not on this machine. Does not initialise CUDA (worker processes are spawned after it)."""
    import torch

    text = str(name).strip().lower()
    if text == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda") or (device.type == "cpu" and device.index is not None):
        raise SystemExit(f"--device must be {DEVICE_CHOICES}, got {name!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit(f"--device {name}: no CUDA GPU is available here; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SystemExit(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return str(device)


def default_threads(device: str, workers: int) -> int:
    """Torch threads per worker when ``--threads`` is not given: 1 on the CPU (the runs share the
    cores, one each); on a GPU the cores divided among the workers that feed it (at most 4 each)."""
    if not device.startswith("cuda"):
        return 1
    return max(1, min(4, (os.cpu_count() or 1) // max(1, workers)))


def used_device(config: dict | None, requested: str) -> str:
    """The device a finished training job ran on: its config's ``device_used`` (``"cuda:0"``),
    else its ``device`` setting, else ``requested``."""
    config = config or {}
    return str(config.get("device_used") or config.get("device") or requested)


def device_counts(records: list[dict[str, Any]]) -> str:
    """Where the runs of ``records`` trained, in words: ``"cpu (3 runs), cuda:0 (12 runs, 2 continued
    from a checkpoint made on cpu)"``; a record without a device is from before ``--device``, when
    every run trained on the CPU. ``""`` when there is no record."""
    counts: dict[str, list[int]] = {}
    for r in records:
        entry = counts.setdefault(r.get("device") or "cpu", [0, 0])
        entry[0] += 1
        entry[1] += bool(r.get("earlier_device"))
    parts = []
    for name, (n, moved) in sorted(counts.items()):
        earlier = sorted({str(r["earlier_device"]) for r in records
                          if (r.get("device") or "cpu") == name and r.get("earlier_device")})
        extra = f", {moved} continued from a checkpoint made on {' or '.join(earlier)}" if moved else ""
        parts.append(f"{name} ({n} run{'s' if n != 1 else ''}{extra})")
    return ", ".join(parts)
