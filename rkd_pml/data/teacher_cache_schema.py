"""Checks of a teacher cache's files as they are opened: every field present, of its type,
every count within bounds before anything is allocated; one line naming the file and the key.

``manifest.json`` (:func:`read_manifest`), ``samples.json`` (:func:`read_samples`) and the
header of ``cache.safetensors`` (:func:`read_params`, which checks the shapes the header
declares against the manifest before it reads the view parameters).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..files import one_line, read_json_object
from .teacher_cache_format import FORMAT, FORMAT_VERSION, MANIFEST_NAME
from .views import PARAM_NAMES

#: bounds of the counts a manifest declares (far above any real cache)
MAX_IMAGES = 2**31 - 1
MAX_VIEWS = 10_000
MAX_EMBEDDING_DIM = 1 << 16
MAX_SIDE = 1 << 14
MAX_CHANNELS = 64
MAX_MANIFEST_BYTES = 1 << 24
MAX_SAMPLE_BYTES = 1 << 16  # per image in samples.json (a key and a class name)

Check = tuple[Callable[[Any], bool], str]


def _int(low: int, high: int) -> Check:
    return (lambda v: type(v) is int and low <= v <= high, f"an integer from {low} to {high}")


def _one_of(*kinds: Check) -> Check:
    return (lambda v: any(ok(v) for ok, _ in kinds), " or ".join(what for _, what in kinds))


def _equal(value: Any) -> Check:
    return (lambda v: v == value, json.dumps(value))


_STR: Check = (lambda v: isinstance(v, str), "a string")
_NONE: Check = (lambda v: v is None, "null")
_BOOL: Check = (lambda v: isinstance(v, bool), "true or false")
_OBJECT: Check = (lambda v: isinstance(v, dict), "an object")
_NUMBERS: Check = (
    lambda v: isinstance(v, list) and all(type(x) in (int, float) and math.isfinite(x) for x in v),
    "a list of numbers",
)
_SIZE: Check = (lambda v: isinstance(v, list) and len(v) == 2 and all(_int(1, MAX_SIDE)[0](x) for x in v),
                f"a list of 2 integers from 1 to {MAX_SIDE}")  # fmt: skip
_PAIR: Check = (lambda v: _NUMBERS[0](v) and len(v) == 2, "a list of 2 numbers")
_SHA256: Check = (lambda v: isinstance(v, str) and len(v) == 64, "a SHA-256 (64 hex digits)")

TEACHER_FIELDS: dict[str, Check] = {
    "model_name": _STR,
    "embedding_dim": _one_of(_int(1, MAX_EMBEDDING_DIM), _NONE),
    "l2_normalize": _one_of(_BOOL, _NONE),
    "in_chans": _one_of(_int(1, MAX_CHANNELS), _NONE),
    "input_mean": _NUMBERS,
    "input_std": _NUMBERS,
    "weights_sha256": _SHA256,
    "source": _one_of(_STR, _NONE),
}
DATASET_FIELDS: dict[str, Check] = {
    "name": _STR,
    "root": _one_of(_STR, _NONE),
    "num_images": _int(1, MAX_IMAGES),
    "num_classes": _int(1, MAX_IMAGES),
    "samples_sha256": _SHA256,
    "labels_sha256": _SHA256,
}
VIEW_FIELDS: dict[str, Check] = {"kind": _STR, "size": _SIZE, "in_chans": _int(1, MAX_CHANNELS), "interpolation": _STR}
VIEW_OPTIONAL: dict[str, Check] = {"scale": _PAIR, "ratio": _PAIR, "resized": _SIZE, "eval": _OBJECT}
MANIFEST_FIELDS: dict[str, Check] = {
    "format": _equal(FORMAT),
    "format_version": _int(1, FORMAT_VERSION),
    "package_version": _STR,
    "torch_version": _STR,
    "timm_version": _STR,
    "teacher": _OBJECT,
    "dataset": _OBJECT,
    "image_size": _one_of(_int(1, MAX_SIDE), _SIZE),
    "in_chans": _int(1, MAX_CHANNELS),
    "train_transform": _STR,
    "view": _OBJECT,
    "views": _int(1, MAX_VIEWS),
    "seed": (lambda v: type(v) is int, "an integer"),
    "num_images": _int(1, MAX_IMAGES),
    "embedding_dim": _int(1, MAX_EMBEDDING_DIM),
    "embedding_dtype": _equal("float32"),
    "teacher_autocast": _one_of(_STR, _NONE),
    "params": _equal(list(PARAM_NAMES)),
    "files": _OBJECT,
    "created": _STR,
}


def read_manifest(file: Path) -> dict[str, Any]:
    """The manifest in ``file``, every field checked (ValueError naming the file and the key)."""
    _check_size(file, MAX_MANIFEST_BYTES)
    manifest = read_json_object(file, "teacher cache manifest")
    if manifest.get("format") != FORMAT:
        raise ValueError(f'{file}: not a teacher cache manifest (no "format": "{FORMAT}")')
    version = manifest.get("format_version")
    if type(version) is int and version > FORMAT_VERSION:
        raise ValueError(f"{file}: format version {version} is newer than this package's {FORMAT_VERSION}")
    _check_fields(manifest, MANIFEST_FIELDS, file)
    for key, fields in (("teacher", TEACHER_FIELDS), ("dataset", DATASET_FIELDS), ("view", VIEW_FIELDS)):
        _check_fields(manifest[key], fields, file, f"{key}.")
    _check_fields(manifest["view"], VIEW_OPTIONAL, file, "view.", required=False)
    _check_fields(manifest["files"], {"tensors": _STR, "samples": _STR}, file, "files.")
    if manifest["dataset"]["num_images"] != manifest["num_images"]:
        raise ValueError(f'{file}: key "dataset.num_images" differs from "num_images"')
    return manifest


def read_samples(file: Path, num_images: int) -> tuple[list[str], list[str]]:
    """(key, class) of each of the ``num_images`` images listed in ``samples.json``."""
    _check_size(file, MAX_SAMPLE_BYTES * num_images + 4096)
    samples = read_json_object(file, "teacher cache's list of images")
    for key in ("samples", "classes"):
        if key not in samples:
            raise ValueError(f'{file}: missing key "{key}"')
        value = samples[key]
        if not (isinstance(value, list) and all(isinstance(x, str) for x in value)):
            raise ValueError(f'{file}: key "{key}" must be a list of strings, got {_show(value)}')
        if len(value) != num_images:
            raise ValueError(f'{file}: key "{key}" lists {len(value)} images, {MANIFEST_NAME} says {num_images}')
    return list(samples["samples"]), list(samples["classes"])


def read_params(file: Path, manifest: Mapping[str, Any]) -> np.ndarray:
    """The view parameters (float32 ``(N, K, 5)``) in ``cache.safetensors``, after checking that
    its header declares float32 ``embeddings (N, K, Dt)`` and ``params (N, K, 5)``."""
    from safetensors import safe_open

    if not file.is_file():
        raise FileNotFoundError(f"{file}: missing (the teacher cache's tensors)")
    n, k, dt = manifest["num_images"], manifest["views"], manifest["embedding_dim"]
    expected = {"embeddings": [n, k, dt], "params": [n, k, len(PARAM_NAMES)]}
    try:
        with safe_open(str(file), framework="pt") as f:
            for name, shape in expected.items():
                if name not in f.keys():
                    raise ValueError(f"{file}: no tensor {name!r} (corrupt or not a teacher cache?)")
                found = f.get_slice(name)
                if list(found.get_shape()) != shape or found.get_dtype() != "F32":
                    raise ValueError(
                        f"{file}: tensor {name!r} is {found.get_dtype()} {list(found.get_shape())}, "
                        f"{MANIFEST_NAME} says F32 {shape}"
                    )
            return f.get_tensor("params").numpy()
    except ValueError as exc:
        if str(exc).startswith(str(file)):
            raise
        raise ValueError(f"{file}: cannot read (corrupt or truncated?): {one_line(exc)}") from None
    except Exception as exc:  # safetensors' own errors
        raise ValueError(f"{file}: cannot read (corrupt or truncated?): {one_line(exc)}") from None


def _check_fields(data: Mapping[str, Any], fields: Mapping[str, Check], file: Path, prefix: str = "",
                  required: bool = True) -> None:  # fmt: skip
    for key, (ok, wanted) in fields.items():
        if key not in data:
            if required:
                raise ValueError(f'{file}: missing key "{prefix}{key}"')
            continue
        if not ok(data[key]):
            raise ValueError(f'{file}: key "{prefix}{key}" must be {wanted}, got {_show(data[key])}')


def _check_size(file: Path, limit: int) -> None:
    try:
        size = os.stat(file).st_size
    except FileNotFoundError:
        return  # read_json_object names the missing file
    except OSError as exc:
        raise ValueError(f"cannot read {file}: {one_line(exc)}") from None
    if size > limit:
        raise ValueError(f"{file}: {size} bytes, too large for a teacher cache file of this size (at most {limit})")


def _show(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."
