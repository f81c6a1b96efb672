"""Training checkpoints: atomic writes, safe loads, RNG states.

A checkpoint is a ``torch.save`` file holding only tensors and plain Python containers, so it
loads with ``torch.load(weights_only=True)``: loading never runs code from the file. Files are
written with :func:`rkd_pml.files.atomic_write` (a temporary name in the same directory,
flushed to disk and renamed over the target), so a crash leaves either the old file or the
new one, never a partial one.
"""

from __future__ import annotations

import os
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..files import WriteError, atomic_write

FORMAT = "rkd-pml-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: truncated, foreign or unsafe."""


class CheckpointWriteError(WriteError, CheckpointError):
    """A checkpoint that could not be written (a full disk...): an OSError naming the file;
    the previous checkpoint at that path is unchanged."""


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Atomically save ``state`` (tensors and plain containers only) as a checkpoint.

    Raises :class:`CheckpointWriteError` naming ``path`` when it cannot be written (a full
    disk, a quota, an I/O error); the file that was there before stays intact.
    """
    payload = {"format": FORMAT, "version": VERSION, **state}
    try:
        atomic_write(path, lambda f: torch.save(payload, f))
    except WriteError as exc:
        kept = Path(path).is_file()
        note = f"the previous {Path(path).name} is unchanged, so the run can continue with --resume" if kept else ""
        raise CheckpointWriteError(path, exc, "checkpoint", note) from exc


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Raises FileNotFoundError when the file is missing and :class:`CheckpointError` when it is
    truncated, is not a checkpoint of this package, or holds anything but tensors and plain
    containers (such a file is refused before any of its code can run).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"refusing to load {path}: it holds objects other than tensors and plain containers, "
            f"and loading it could run code ({str(exc).splitlines()[0]})"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError) as exc:
        raise CheckpointError(
            f"cannot read checkpoint {path}: the file is truncated or not a PyTorch checkpoint "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "resume from another checkpoint or start a new run"
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not an rkd-pml training checkpoint (no '{FORMAT}' marker); "
            "pass a checkpoint written by rkd-pml"
        )
    if data.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {data.get('version')!r}; this rkd-pml reads version {VERSION}"
        )
    return data


# --------------------------------------------------------------------------- RNG states


def get_rng_state() -> dict[str, Any]:
    """RNG states of torch (CPU and CUDA), NumPy's global generator and Python's ``random``."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def seed_everything(seed: int) -> None:
    """Seed torch, NumPy's global generator and Python's ``random``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
