"""Training checkpoints: atomic writes, safe loads, RNG states.

A checkpoint is a ``torch.save`` file holding only tensors and plain Python containers, so it
loads with ``torch.load(weights_only=True)``: loading never runs code from the file. Files are
written to a temporary name in the same directory, flushed to disk and renamed over the
target with ``os.replace``, so a crash leaves either the old file or the new one, never a
partial one.
"""

from __future__ import annotations

import os
import pickle
import random
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

FORMAT = "rkd-pml-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: truncated, foreign or unsafe."""


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Call ``write(file_object)`` on a temporary file, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda f: f.write(text), mode="w")


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Atomically save ``state`` (tensors and plain containers only) as a checkpoint."""
    payload = {"format": FORMAT, "version": VERSION, **state}
    atomic_write(path, lambda f: torch.save(payload, f))


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
