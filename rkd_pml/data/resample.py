"""Pillow's resampling filters as arrays: the taps and weights of one axis for a batch of images.

Pillow resamples each axis separately: output pixel ``i`` of an interval ``[0, length)`` resized
to ``resized`` pixels is a normalised sum of the source pixels around its centre
``(i + 0.5) * length / resized``, weighted by a filter (triangle for "bilinear", Keys a = -0.5 for
"bicubic", ...) widened by the downscale factor (antialiasing). :func:`resample_taps` computes
these taps and weights in float64 as Pillow does (for a batch, in NumPy);
:func:`resample_weights` lays them out as dense matrices.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

ArrayLike = Tensor | np.ndarray | Sequence[int] | int


def _bilinear(x: np.ndarray) -> np.ndarray:
    return np.maximum(1.0 - np.abs(x), 0.0)


def _bicubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


def _box(x: np.ndarray) -> np.ndarray:
    return ((x > -0.5) & (x <= 0.5)).astype(x.dtype)


def _sinc(x: np.ndarray) -> np.ndarray:
    px = math.pi * x
    return np.where(x == 0, 1.0, np.sin(px) / np.where(x == 0, 1.0, px))


def _hamming(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    return np.where(x < 1.0, _sinc(x) * (0.54 + 0.46 * np.cos(math.pi * x)), 0.0)


def _lanczos(x: np.ndarray) -> np.ndarray:
    return np.where(np.abs(x) < 3.0, _sinc(x) * _sinc(x / 3.0), 0.0)


#: Pillow's filters: name -> (support, filter on float64 arrays)
FILTERS: dict[str, tuple[float, Callable[[np.ndarray], np.ndarray]]] = {
    "box": (0.5, _box),
    "bilinear": (1.0, _bilinear),
    "hamming": (1.0, _hamming),
    "bicubic": (2.0, _bicubic),
    "lanczos": (3.0, _lanczos),
}
INTERPOLATIONS = (*FILTERS, "nearest")
#: filters whose weights can be negative (their sums can leave 0..255)
NEGATIVE_LOBES = ("bicubic", "lanczos")


def support(length: ArrayLike, resized: ArrayLike, offset: ArrayLike, size: int, interpolation: str) -> tuple[np.ndarray, np.ndarray]:
    """``[first, last)`` source pixels that output pixels ``offset .. offset + size - 1`` of
    ``[0, length)`` resized to ``resized`` use (Pillow's filter bounds; one pixel more for nearest),
    for one image or a batch (int64 arrays of the arguments' shape)."""
    length, resized, offset = (np.asarray(a, dtype=np.float64) for a in (length, resized, offset))
    scale = length / resized
    reach = (FILTERS[interpolation][0] if interpolation in FILTERS else 1.0) * np.maximum(scale, 1.0)
    first = np.maximum(0.0, np.trunc((offset + 0.5) * scale - reach + 0.5))
    last = np.minimum(length, np.floor((offset + size - 0.5) * scale + reach + 0.5))
    return first.astype(np.int64), last.astype(np.int64)


def resample_taps(length: np.ndarray, resized: np.ndarray, offset: np.ndarray, size: int,
                  interpolation: str) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's taps of one axis, compact: ``(taps, weights)``, int64 and float32 ``(U, size, K)``.

    Output pixel ``offset[u] + i`` of ``[0, length[u])`` resized to ``resized[u]`` is
    ``sum_k weights[u, i, k] * source[taps[u, i, k]]``; ``K`` is Pillow's kernel size for the
    largest downscale of the rows (taps past a row's own kernel have weight 0). Computed in
    float64 as Pillow does, normalised per output pixel, stored as float32.
    """
    length, resized, offset = (np.asarray(a, dtype=np.float64).reshape(-1, 1, 1) for a in (length, resized, offset))
    if interpolation == "nearest":
        taps = _nearest_sources(length, resized, offset, size)
        return taps, np.ones(taps.shape, dtype=np.float32)
    support_, filter_ = FILTERS[interpolation]
    scale = length / resized
    center = (np.arange(size, dtype=np.float64).reshape(1, -1, 1) + offset + 0.5) * scale  # (U, size, 1)
    filterscale = np.maximum(scale, 1.0)
    reach = support_ * filterscale
    low = np.maximum(np.trunc(center - reach + 0.5), 0.0)
    high = np.minimum(np.floor(center + reach + 0.5), length)
    count = int(math.ceil(support_ * max(float(scale.max(initial=1.0)), 1.0))) * 2 + 1  # Pillow's kernel size
    taps = low + np.arange(count, dtype=np.float64)  # (U, size, count)
    weights = filter_((taps - center + 0.5) / filterscale) * (taps < high)
    total = weights.sum(-1, keepdims=True)
    weights = (weights / np.where(total == 0, 1.0, total)).astype(np.float32)
    return taps.astype(np.int64), weights


def resample_weights(length: ArrayLike, resized: ArrayLike, offset: ArrayLike, size: int, width: int,
                     interpolation: str, flip: ArrayLike | None = None, device: torch.device | str | None = None,
                     start: ArrayLike | None = None) -> Tensor:
    """Pillow's resampling weights of one axis for a batch: float32 ``(B, size, width)`` on ``device``.

    Row ``i`` of image ``b`` holds the weights of output pixel ``offset[b] + i`` of the source
    interval ``[0, length[b])`` resized to ``resized[b]`` pixels (columns ``>= length[b]`` get 0);
    with ``flip[b]`` the rows are in reverse order; column ``j`` is source pixel ``start[b] + j``
    (``start`` default 0). ``length``, ``resized``, ``offset``, ``flip``, ``start``: ``(B,)``
    integers (arrays or tensors; read on the host). The taps are computed once per distinct
    ``(length, resized, offset, flip)`` of the batch (:func:`resample_taps`; a batch of images of one
    size repeats them), then laid out densely with one scatter on ``device`` (default: that of
    ``length`` when it is a tensor, else the CPU).
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    if device is None:
        device = length.device if isinstance(length, Tensor) else "cpu"
    length, resized, offset = (host_ints(a) for a in (length, resized, offset))
    flips = np.zeros_like(length) if flip is None else host_ints(flip)
    keys, inverse = np.unique(np.stack([length, resized, offset, flips], 1), axis=0, return_inverse=True)
    taps, weights = resample_taps(keys[:, 0], keys[:, 1], keys[:, 2], size, interpolation)
    flipped = keys[:, 3].astype(bool)
    taps[flipped], weights[flipped] = taps[flipped, ::-1], weights[flipped, ::-1]  # reversed output pixels
    inverse = inverse.reshape(-1)
    taps, weights = taps[inverse], weights[inverse]
    if start is not None:
        taps -= host_ints(start).reshape(-1, 1, 1)
    np.clip(taps, 0, width - 1, out=taps)  # taps outside the region have weight 0
    dense = torch.zeros(len(length), size, width, device=device, dtype=torch.float32)
    return dense.scatter_add_(2, torch.from_numpy(taps).to(device), torch.from_numpy(weights).to(device))


def host_ints(values: ArrayLike) -> np.ndarray:
    """``(B,)`` int64 on the host from a tensor, array or sequence."""
    if isinstance(values, Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.int64).reshape(-1)


def _nearest_sources(length: np.ndarray, resized: np.ndarray, offset: np.ndarray, size: int) -> np.ndarray:
    """Pillow's nearest-neighbour source pixels ``(U, size, 1)``: position ``scale / 2``, then
    ``+= scale`` per output pixel in float64, truncated (accumulated as Pillow does, so the
    positions that land on whole numbers round the same way)."""
    length, resized, offset = (a.reshape(-1) for a in (length, resized, offset))
    out = np.empty((len(length), size), dtype=np.int64)
    for b, (n, r, o) in enumerate(zip(length, resized, offset)):
        scale = n / r
        steps = np.full(int(o) + size, scale)
        steps[0] = scale * 0.5
        out[b] = np.minimum(np.cumsum(steps)[int(o):].astype(np.int64), int(n) - 1)
    return out[..., None]
