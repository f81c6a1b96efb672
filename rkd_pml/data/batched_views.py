"""Render a batch of training views with tensor operations, on any device, as PIL renders them.

The PIL path (:meth:`rkd_pml.data.views.View.apply`) crops and resizes each image with
Pillow's separable resampling: per output pixel, a normalised filter (triangle for
"bilinear", Keys a = -0.5 for "bicubic", ...) widened by the downscale factor (antialiasing)
and clipped to the crop; a horizontal pass, a rounding to uint8, a vertical pass, a rounding to
uint8. Here the same filter weights are built for the whole batch as matrices ``Wx (B, S_w, W)``
and ``Wy (B, S_h, H)`` and applied as two batched matrix products::

    out = round(Wy @ round(image @ Wx^T))        # (B, C, S_h, S_w), then / 255

with ``image`` the uint8 batch ``(B, C, H, W)`` of source regions (zero-padded to the largest
of the batch; the padding has weight 0). A flip reverses the output pixels of ``Wx``. Pillow 13
runs the vertical pass first for images shrunk vertically and enlarged horizontally (measured;
:func:`vertical_first`), and so does this. Against PIL (tests/data/test_fast_input.py, Omniglot,
64 px, a batch of 128): the paper's view and bilinear random resized crops are within 1/255 of
PIL's everywhere (Pillow's 22-bit fixed-point coefficients against float ones); bicubic random
resized crops: mean absolute error 7e-5, at most 0.075, 0.3 % of the pixels beyond 1/255 (the
pass order of some mixed shrink/enlarge cases is not reproduced).

Per image, the geometry of one axis is ``(length, resized, offset)``: the source interval
``[0, length)`` of the region is resized to ``resized`` pixels, of which ``S`` are kept from
``offset`` on; the region handed over starts at pixel ``start`` of the interval (the pixels
before it have weight 0). A random resized crop is (box side, S, 0, start 0) on its box; the
paper's view (resize, then crop) is (image side, S * 256 / 224, crop offset) on the rows and
columns of the image that the kept pixels use (:func:`support`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

#: geometry columns of one image: (h, w, resized_h, resized_w, top, left, flip, start_h, start_w)
GEOMETRY = ("length_h", "length_w", "resized_h", "resized_w", "offset_h", "offset_w", "flip", "start_h", "start_w")


def _bilinear(x: Tensor) -> Tensor:
    return (1.0 - x.abs()).clamp_min(0.0)


def _bicubic(x: Tensor, a: float = -0.5) -> Tensor:
    x = x.abs()
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return torch.where(x < 1.0, near, torch.where(x < 2.0, far, torch.zeros_like(x)))


def _box(x: Tensor) -> Tensor:
    return ((x > -0.5) & (x <= 0.5)).to(x.dtype)


def _sinc(x: Tensor) -> Tensor:
    px = math.pi * x
    return torch.where(x == 0, torch.ones_like(x), torch.sin(px) / torch.where(x == 0, torch.ones_like(px), px))


def _hamming(x: Tensor) -> Tensor:
    x = x.abs()
    w = _sinc(x) * (0.54 + 0.46 * torch.cos(math.pi * x))
    return torch.where(x < 1.0, w, torch.zeros_like(x))


def _lanczos(x: Tensor) -> Tensor:
    return torch.where(x.abs() < 3.0, _sinc(x) * _sinc(x / 3.0), torch.zeros_like(x))


#: Pillow's filters: name -> (support, filter)
FILTERS: dict[str, tuple[float, Callable[[Tensor], Tensor]]] = {
    "box": (0.5, _box),
    "bilinear": (1.0, _bilinear),
    "hamming": (1.0, _hamming),
    "bicubic": (2.0, _bicubic),
    "lanczos": (3.0, _lanczos),
}
INTERPOLATIONS = (*FILTERS, "nearest")
#: filters whose weights can be negative (their sums can leave 0..255)
NEGATIVE_LOBES = ("bicubic", "lanczos")


def support(length: int, resized: int, offset: int, size: int, interpolation: str) -> tuple[int, int]:
    """``[first, last)`` source pixels that output pixels ``offset .. offset + size - 1`` of
    ``[0, length)`` resized to ``resized`` use (Pillow's filter bounds; one pixel more for nearest)."""
    scale = length / resized
    reach = (FILTERS[interpolation][0] if interpolation in FILTERS else 1.0) * max(scale, 1.0)
    first = max(0, int(math.trunc((offset + 0.5) * scale - reach + 0.5)))
    last = min(length, int(math.floor((offset + size - 0.5) * scale + reach + 0.5)))
    return first, last


def resample_weights(length: Tensor, resized: Tensor, offset: Tensor, size: int, width: int, interpolation: str,
                     flip: Tensor | None = None, device: torch.device | str | None = None,
                     start: Tensor | None = None) -> Tensor:
    """Pillow's resampling weights of one axis for a batch: ``(B, size, width)``.

    Row ``i`` of image ``b`` holds the weights of output pixel ``offset[b] + i`` of the source
    interval ``[0, length[b])`` resized to ``resized[b]`` pixels (columns ``>= length[b]`` get 0);
    with ``flip[b]`` the rows are in reverse order; column ``j`` is source pixel ``start[b] + j``
    (``start`` default 0). ``length``, ``resized``, ``offset``, ``start``: ``(B,)``
    integers, best on the host (the result is built on ``device``, default theirs, without waiting for it).
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    device = torch.device(device) if device is not None else length.device
    dtype = torch.float64 if device.type in ("cpu", "cuda") else torch.float32
    largest = max(float((length.cpu().double() / resized.cpu().double()).max()), 1.0)
    if interpolation == "nearest":
        sources = _nearest_sources(length, resized, offset, size).to(device)
    length, resized, offset = (t.to(device, dtype).view(-1, 1, 1) for t in (length, resized, offset))
    scale = length / resized
    center = (torch.arange(size, device=device, dtype=dtype).view(1, -1, 1) + offset + 0.5) * scale  # (B, size, 1)
    if interpolation == "nearest":
        taps = sources
        weights = torch.ones(taps.shape, device=device, dtype=torch.float32)
    else:
        support, filter_ = FILTERS[interpolation]
        filterscale = scale.clamp_min(1.0)
        reach = support * filterscale
        low = (center - reach + 0.5).trunc().clamp_min(0.0)
        high = torch.minimum((center + reach + 0.5).floor(), length)
        count = int(math.ceil(support * largest)) * 2 + 1  # Pillow's kernel size
        taps = low + torch.arange(count, device=device, dtype=dtype)  # (B, size, count)
        weights = filter_((taps - center + 0.5) / filterscale) * (taps < high)
        total = weights.sum(-1, keepdim=True)
        weights = (weights / torch.where(total == 0, torch.ones_like(total), total)).to(torch.float32)
        taps = taps.long()
    if start is not None:
        taps = taps - start.to(device).view(-1, 1, 1)
    taps = taps.clamp(0, width - 1)  # taps outside the region have weight 0
    if flip is not None:  # reverse the output pixels of the flipped images
        flipped = flip.to(device).view(-1, 1, 1).bool()
        taps, weights = torch.where(flipped, taps.flip(1), taps), torch.where(flipped, weights.flip(1), weights)
    dense = torch.zeros(len(length), size, width, device=device, dtype=torch.float32)
    return dense.scatter_add_(2, taps, weights)


def _nearest_sources(length: Tensor, resized: Tensor, offset: Tensor, size: int) -> Tensor:
    """Pillow's nearest-neighbour source pixels ``(B, size, 1)``: position ``scale / 2``, then
    ``+= scale`` per output pixel in float64, truncated (accumulated as Pillow does, so the
    positions that land on whole numbers round the same way)."""
    length, resized, offset = (t.reshape(-1).cpu().double().numpy() for t in (length, resized, offset))
    out = np.empty((len(length), size), dtype=np.int64)
    for b, (n, r, o) in enumerate(zip(length, resized, offset)):
        scale = n / r
        steps = np.full(int(o) + size, scale)
        steps[0] = scale * 0.5
        out[b] = np.minimum(np.cumsum(steps)[int(o):].astype(np.int64), int(n) - 1)
    return torch.from_numpy(out).unsqueeze(-1)  # (B, size, 1)


def render_batch(regions: Tensor, geometry: Tensor, size: tuple[int, int], interpolation: str,
                 channels: int | None = None) -> Tensor:
    """The views of a batch as float32 ``(B, channels, S_h, S_w)`` in [0, 1] on ``regions``' device.

    Args:
        regions: uint8 ``(B, H, W, C)``: the source region of each image at its top left,
            zero-padded to the largest ``H``, ``W`` of the batch.
        geometry: int ``(B, 9)``, the columns :data:`GEOMETRY` (see the module docstring).
        size: output ``(S_h, S_w)``.
        interpolation: a Pillow filter name of :data:`INTERPOLATIONS`.
        channels: output channels; a one-channel batch is repeated to 3 when 3 are asked (as an
            expanded view, not copied).
    """
    if regions.dim() != 4 or regions.dtype != torch.uint8:
        raise ValueError(f"regions must be uint8 (B, H, W, C), got {tuple(regions.shape)} {regions.dtype}")
    batch, height, width, stored = regions.shape
    device = regions.device
    geometry = geometry.cpu()
    h, w, rh, rw, top, left, flip, start_h, start_w = geometry.unbind(1)
    wy = resample_weights(h, rh, top, size[0], height, interpolation, device=device, start=start_h)
    wx = resample_weights(w, rw, left, size[1], width, interpolation, flip, device=device, start=start_w)
    image = regions.permute(0, 3, 1, 2).float()  # (B, C, H, W)
    first = vertical_first(geometry)
    clip = interpolation in NEGATIVE_LOBES
    with _exact_matmul(device):
        if not first.any():
            out = _two_passes(image, wy, wx, False, clip)
        else:
            out = torch.empty(batch, stored, *size, device=device)
            for pick, vertical in ((~first, False), (first, True)):
                index = torch.nonzero(pick).flatten().to(device)
                if len(index):
                    out[index] = _two_passes(image[index], wy[index], wx[index], vertical, clip)
    channels = stored if channels is None else channels
    if channels != stored:
        if stored != 1 or channels != 3:
            raise ValueError(f"cannot render {channels} channels from images of {stored}")
        out = out.expand(batch, 3, *size)  # a view: the model's normalisation makes the new tensor
    return out


def vertical_first(geometry: Tensor) -> Tensor:
    """``(B,)`` bool: the images Pillow (13) resamples vertically first, as measured: those
    shrunk vertically and enlarged horizontally; the others horizontally first."""
    h, w, rh, rw = geometry[:, :4].unbind(1)
    return (rh < h) & (rw > w)


def _two_passes(image: Tensor, wy: Tensor, wx: Tensor, vertical_first: bool, clip: bool) -> Tensor:
    """``(B, C, H, W)`` float -> ``(B, C, S_h, S_w)`` in [0, 1]: the two passes, each rounded to uint8
    values (and clipped to 0..255 when the filter has negative lobes: ``clip``)."""
    if vertical_first:
        columns = _to_uint8_values(wy.unsqueeze(1) @ image, clip)  # (B, C, S_h, W)
        out = columns @ wx.transpose(1, 2).unsqueeze(1)
    else:
        rows = _to_uint8_values(image @ wx.transpose(1, 2).unsqueeze(1), clip)  # (B, C, H, S_w)
        out = wy.unsqueeze(1) @ rows
    return _to_uint8_values(out, clip).div_(255.0)


def _to_uint8_values(x: Tensor, clip: bool) -> Tensor:
    """Round half up (and clip to 0..255), as Pillow stores each pass (in place)."""
    x = x.add_(0.5).floor_()
    return x.clamp_(0.0, 255.0) if clip else x


class _exact_matmul:
    """Full float32 matrix products on CUDA (no TF32) while rendering; restored after."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __enter__(self) -> None:
        if self.cuda:
            self.saved = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = False

    def __exit__(self, *exc: object) -> None:
        if self.cuda:
            torch.backends.cuda.matmul.allow_tf32 = self.saved
