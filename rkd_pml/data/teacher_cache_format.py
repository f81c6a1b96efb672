"""On-disk format of a teacher cache: files, a streamed safetensors writer, identities, checks.

A cache directory holds::

    cache.safetensors   "embeddings" float32 (N, K, Dt), "params" float32 (N, K, 5)
    samples.json        {"samples": [key of each image], "classes": [class of each image]}
    manifest.json       what the cache was built from (written last: no manifest, no cache)
    .rkd-pml-cache      the marker: a cache of this package (see teacher_cache_folder)

``cache.safetensors`` is written in place through a NumPy memory map (the header first, the
file's disk space reserved, then row blocks), so ``N x K x Dt`` never has to fit in memory; it
is a plain safetensors file (``safetensors.safe_open(path, framework="pt")`` reads slices of it
lazily).
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import struct
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

FORMAT = "rkd_pml.TeacherCache"
FORMAT_VERSION = 1
TENSORS_NAME = "cache.safetensors"
SAMPLES_NAME = "samples.json"
MANIFEST_NAME = "manifest.json"
CACHE_FILES = (TENSORS_NAME, SAMPLES_NAME, MANIFEST_NAME)

#: manifest fields compared with a run's expectation, in the order differences are reported
CHECKED_FIELDS = ("teacher", "dataset", "image_size", "in_chans", "train_transform", "view")
#: sub-fields recorded for information only (a moved data set or teacher is still the same)
UNCHECKED = {"teacher": ("source",), "dataset": ("root",), "view": ("kind", "size", "in_chans")}


# --------------------------------------------------------------------------- writing


class StreamedSafetensors:
    """A safetensors file of float32 tensors written row by row through NumPy memory maps.

    ``writer.arrays[name]`` is a writable ``np.memmap`` of ``shapes[name]``; call
    :meth:`close` when done. The header (and so every shape) is fixed at creation.
    """

    def __init__(self, path: str | os.PathLike[str], shapes: Mapping[str, Sequence[int]], metadata: Mapping[str, str]):
        header: dict[str, Any] = {"__metadata__": {str(k): str(v) for k, v in metadata.items()}}
        offset, spans = 0, {}
        for name, shape in shapes.items():
            nbytes = 4 * math.prod(int(s) for s in shape)
            if nbytes == 0:
                raise ValueError(f"tensor {name!r} of shape {tuple(shape)} is empty")
            header[name] = {"dtype": "F32", "shape": [int(s) for s in shape], "data_offsets": [offset, offset + nbytes]}
            spans[name] = offset
            offset += nbytes
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)  # safetensors aligns the data to 8 bytes
        self.path = Path(path)
        self.nbytes = 8 + len(text) + offset
        with open(self.path, "wb") as f:
            f.write(struct.pack("<Q", len(text)))
            f.write(text)
            f.flush()
            allocate(f.fileno(), self.nbytes)
        base = 8 + len(text)
        self.arrays = {
            name: np.memmap(self.path, dtype="<f4", mode="r+", offset=base + spans[name], shape=tuple(shapes[name]))
            for name in shapes
        }

    def close(self) -> None:
        for array in self.arrays.values():
            array.flush()
        self.arrays = {}


def allocate(fd: int, size: int) -> None:
    """Reserve the disk space of the first ``size`` bytes of the file ``fd`` (after what is
    written). A write through a memory map to a disk that is full kills the process (SIGBUS);
    with the space reserved first, a full disk is an ``OSError`` (ENOSPC) here instead."""
    start = os.fstat(fd).st_size
    fallocate = getattr(os, "posix_fallocate", None)
    if fallocate is not None:
        try:
            fallocate(fd, 0, size)
            return
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, getattr(errno, "ENOTSUP", -1)):
                raise
    zeros = memoryview(bytes(1 << 20))  # no preallocation on this file system: write the zeros
    offset = start
    while offset < size:
        written = os.pwrite(fd, zeros[: min(len(zeros), size - offset)], offset)
        if written <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        offset += written


# --------------------------------------------------------------------------- identities


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a ``FrozenModel`` (or the model itself)."""
    from ..models import FrozenModel

    return model.model if isinstance(model, FrozenModel) else model


def weights_sha256(model: nn.Module) -> str:
    """SHA-256 of a model's state dict (names, dtypes, shapes and bytes, in name order)."""
    digest = hashlib.sha256()
    state = unwrap(model).state_dict()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(dtype=torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def teacher_identity(teacher: nn.Module, source: str | None = None) -> dict[str, Any]:
    """What makes two teachers give the same embeddings: architecture, head, input
    statistics and a hash of the weights (``source``, e.g. its directory, is informative)."""
    model = unwrap(teacher)
    data_config = getattr(model, "data_config", {}) or {}
    return {
        "model_name": getattr(model, "model_name", type(model).__name__),
        "embedding_dim": getattr(model, "embedding_dim", None),
        "l2_normalize": getattr(model, "l2_normalize", None),
        "in_chans": getattr(model, "in_chans", None),
        "input_mean": [float(v) for v in data_config.get("mean", ())],
        "input_std": [float(v) for v in data_config.get("std", ())],
        "weights_sha256": weights_sha256(model),
        "source": source,
    }


def sample_key(sample: Any) -> str:
    """The string a sample (a path, a zip member, an index) is recorded as."""
    return os.fspath(sample) if isinstance(sample, (str, os.PathLike)) else repr(sample)


def dataset_records(dataset: Any) -> tuple[list[str], list[str]]:
    """(key of each sample, class of each sample as a string) of an ``ImageDataset``."""
    _require_image_dataset(dataset)
    keys = [sample_key(s) for s in dataset.samples]
    classes = [str(dataset.classes[int(label)]) for label in dataset.labels]
    return keys, classes


def dataset_fingerprint(dataset: Any, root: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Name, root (informative), number of images and classes, SHA-256 of the sample list and
    of the class of each sample."""
    keys, classes = dataset_records(dataset)
    return {
        "name": getattr(dataset, "name", ""),
        "root": None if root is None else os.fspath(root),
        "num_images": len(keys),
        "num_classes": len(set(classes)),
        "samples_sha256": _sha256_lines(keys),
        "labels_sha256": _sha256_lines(classes),
    }


def read_image(dataset: Any, index: int) -> Image.Image:
    """Image ``index`` of an ``ImageDataset`` as a PIL image in its mode, without its transform."""
    _require_image_dataset(dataset)
    image = dataset.reader(dataset.samples[index])
    return image if image.mode == dataset.mode else image.convert(dataset.mode)


def package_version() -> str:
    package = sys.modules.get("rkd_pml")
    version = getattr(package, "__version__", None)
    if version:
        return str(version)
    try:
        from importlib.metadata import version as _version

        return _version("rkd-pml")
    except Exception:
        return "unknown"


# --------------------------------------------------------------------------- checks


def mismatches(manifest: Mapping[str, Any], expect: Mapping[str, Any]) -> list[str]:
    """Differences between what a cache was built with and what a run expects, e.g.
    ``"cache was built with image_size 32, this run uses 64"`` (fields of :data:`CHECKED_FIELDS`)."""
    out = []
    for key in CHECKED_FIELDS:
        if key not in expect or expect[key] is None:
            continue
        built, wanted = manifest.get(key), expect[key]
        if isinstance(wanted, Mapping):
            built = built if isinstance(built, Mapping) else {}
            for sub in wanted:
                if sub in UNCHECKED.get(key, ()) or _same(built.get(sub), wanted[sub]):
                    continue
                old, new = _fmt(built.get(sub)), _fmt(wanted[sub])
                out.append(f"cache was built with {key} {sub} {old}, this run uses {new}")
        elif not _same(built, wanted):
            out.append(f"cache was built with {key} {_fmt(built)}, this run uses {_fmt(wanted)}")
    return out


def image_size_value(size: Sequence[int]) -> int | list[int]:
    """``S`` for a square ``(S, S)``, else ``[H, W]`` (as manifests record it)."""
    h, w = (int(s) for s in size)
    return h if h == w else [h, w]


def _same(a: Any, b: Any) -> bool:
    return json.loads(json.dumps(a)) == json.loads(json.dumps(b))


def _fmt(value: Any) -> str:
    if isinstance(value, str) and len(value) == 64:
        return value[:12] + "..."  # a hash
    return json.dumps(value) if not isinstance(value, str) else value


def _sha256_lines(lines: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line.encode("utf-8", "surrogateescape") + b"\n")
    return digest.hexdigest()


def _require_image_dataset(dataset: Any) -> None:
    needed = ("samples", "labels", "classes", "reader", "mode")
    if not all(hasattr(dataset, k) for k in needed):
        raise TypeError(
            f"dataset must be an rkd_pml.data.ImageDataset (with {', '.join(needed)}), got {type(dataset).__name__}"
        )
