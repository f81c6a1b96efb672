"""Render a batch of training views with tensor operations, on any device, as PIL renders them.

The PIL path (:meth:`rkd_pml.data.views.View.apply`) crops and resizes each image with
Pillow's separable resampling (:mod:`rkd_pml.data.resample`): a horizontal pass, a rounding
to uint8, a vertical pass, a rounding to uint8. Here the same filter weights, computed once per
distinct geometry of the batch (and kept for the next batches with the same set of geometries, as the
batches of a data set of one image size under the paper's view have), are applied to the whole batch ``(B, C, H, W)`` of uint8 source
regions (zero-padded to the largest of the batch; the padding has weight 0) as batched matrix
products, each pass cut into blocks of :data:`BLOCK` output pixels: a block multiplies only
the window of source pixels its outputs use in some image of the batch (the filters are a few
pixels wide), not the whole row::

    rows[..., o0:o1] = round(image[..., c0:c1] @ Wx_block^T)        # each horizontal block
    out[:, :, p0:p1] = round(Wy_block @ rows[:, :, r0:r1])           # each vertical block, / 255

A flip reverses the output columns at the end. Pillow 13 runs the vertical pass first for
images shrunk vertically and enlarged horizontally (measured; :func:`vertical_first`), and so
does this. Against PIL (tests/data/test_fast_input.py, Omniglot, 64 px, a batch of 128): the
paper's view and bilinear random resized crops are within 1/255 of PIL's everywhere (Pillow's
22-bit fixed-point coefficients against float ones); bicubic random resized crops: mean absolute
error 7e-5, at most 0.075, 0.3 % of the pixels beyond 1/255 (the pass order of some mixed
shrink/enlarge cases is not reproduced).

Per image, the geometry of one axis is ``(length, resized, offset)``: the source interval
``[0, length)`` of the region is resized to ``resized`` pixels, of which ``S`` are kept from
``offset`` on; the region handed over starts at pixel ``start`` of the interval (the pixels
before it have weight 0). A random resized crop is (box side, S, 0, start 0) on its box; the
paper's view (resize, then crop) is (image side, S * 256 / 224, crop offset) on the rows and
columns of the image that the kept pixels use (:func:`support`).
"""

from __future__ import annotations

import math
import threading

import numpy as np
import torch
from torch import Tensor

from .resample import FILTERS, INTERPOLATIONS, NEGATIVE_LOBES, host_ints, resample_taps, resample_weights, support

__all__ = ["BLOCK", "FILTERS", "GEOMETRY", "INTERPOLATIONS", "render_batch", "resample_weights", "support",
           "vertical_first"]

#: output pixels per block of a pass (each block multiplies only the source window it uses)
BLOCK = 32
#: distinct-geometry sets of recent batches kept with their weights (:class:`_Axis`)
RECENT_GEOMETRIES = 8
_RECENT: dict[tuple, tuple] = {}
#: geometry columns of one image: (h, w, resized_h, resized_w, top, left, flip, start_h, start_w)
GEOMETRY = ("length_h", "length_w", "resized_h", "resized_w", "offset_h", "offset_w", "flip", "start_h", "start_w")


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
    geometry = host_ints(geometry).reshape(batch, len(GEOMETRY))
    h, w, rh, rw, top, left, flip, start_h, start_w = geometry.T
    yaxis = _Axis(h, rh, top, start_h, size[0], interpolation)
    xaxis = _Axis(w, rw, left, start_w, size[1], interpolation)
    image = regions.permute(0, 3, 1, 2)  # uint8 (B, C, H, W), a view
    first, clip = vertical_first(geometry), interpolation in NEGATIVE_LOBES
    with _exact_matmul(device):
        if not first.any() or first.all():
            out = _two_passes(image, yaxis, xaxis, bool(first.all()), clip)
        else:
            out = torch.empty(batch, stored, *size, device=device)
            for pick in (~first, first):
                rows = np.flatnonzero(pick)
                index = torch.from_numpy(rows).to(device)
                part = yaxis.subset(rows), xaxis.subset(rows)
                out[index] = _two_passes(image[index], *part, bool(first[rows[0]]), clip)
    flipped = np.flatnonzero(flip)
    if len(flipped):  # a flip reverses the output columns
        index = torch.from_numpy(flipped).to(device)
        out[index] = out[index].flip(-1)
    channels = stored if channels is None else channels
    if channels != stored:
        if stored != 1 or channels != 3:
            raise ValueError(f"cannot render {channels} channels from images of {stored}")
        out = out.expand(batch, 3, *size)  # a view: the model's normalisation makes the new tensor
    return out


def vertical_first(geometry: np.ndarray) -> np.ndarray:
    """``(B,)`` bool: the images Pillow (13) resamples vertically first, as measured: those
    shrunk vertically and enlarged horizontally; the others horizontally first."""
    h, w, rh, rw = np.asarray(geometry)[:, :4].T
    return (rh < h) & (rw > w)


class _Axis:
    """The taps of one axis of a batch, once per distinct ``(length, resized, offset, start)``:
    ``taps``, ``weights`` ``(U, P, K)`` (taps counted from the region's ``start``) and
    ``inverse`` ``(B,)``, the distinct geometry of each image. The ``size`` outputs are cut into
    ``count`` blocks of ``block`` (``P = count * block >= size``; outputs past ``size`` are
    computed and dropped)."""

    def __init__(self, length: np.ndarray, resized: np.ndarray, offset: np.ndarray, start: np.ndarray, size: int,
                 interpolation: str):
        keys, inverse = _distinct(np.stack([length, resized, offset, start], 1))
        self.size, self.count = size, -(-size // BLOCK)
        self.block = -(-size // self.count)
        self.inverse = inverse.reshape(-1)
        self.key = (keys.tobytes(), len(keys), size, interpolation)
        recent = _RECENT.get(self.key)
        if recent is not None:  # the batches of a data set of one image size repeat their geometries
            self.taps, self.weights, self.dense = recent
            _RECENT.pop(self.key, None)
            _RECENT[self.key] = recent  # most recent last (a dict keeps insertion order)
            return
        self.taps, self.weights = resample_taps(keys[:, 0], keys[:, 1], keys[:, 2], self.count * self.block,
                                                interpolation)
        self.taps -= keys[:, 3].reshape(-1, 1, 1)
        self.dense: dict[tuple[str, bool], list[tuple[int, int, Tensor]]] = {}
        _RECENT[self.key] = self.taps, self.weights, self.dense
        for stale in list(_RECENT)[:-RECENT_GEOMETRIES]:
            _RECENT.pop(stale, None)

    def subset(self, rows: np.ndarray) -> _Axis:
        """The axis of images ``rows`` of the batch only."""
        part = object.__new__(_Axis)
        part.size, part.count, part.block = self.size, self.count, self.block
        present, part.inverse = np.unique(self.inverse[rows], return_inverse=True)
        part.taps, part.weights, part.dense = self.taps[present], self.weights[present], {}
        return part

    def blocks(self, device: torch.device, transposed: bool, channels: int, slot: str) -> list[tuple[int, int, Tensor]]:
        """The blocks of this axis's pass, in order: ``(c0, c1, W)``: the block's outputs use
        source pixels ``[c0, c1)`` only (in every image of the batch); ``W`` float32
        ``(B * channels, block, c1 - c0)`` (each image's weights repeated per channel), or
        ``(B * channels, c1 - c0, block)`` when ``transposed`` (in scratch ``slot``)."""
        inverse = torch.from_numpy(np.repeat(self.inverse, channels)).to(device)
        out = []
        for c0, c1, dense in self._distinct_blocks(device, transposed):
            expanded = _scratch(f"{slot}{len(out)}", (len(inverse), *dense.shape[1:]), device)
            out.append((c0, c1, torch.index_select(dense, 0, inverse, out=expanded)))
        return out

    def _distinct_blocks(self, device: torch.device, transposed: bool) -> list[tuple[int, int, Tensor]]:
        """:meth:`blocks` for the distinct geometries ``(U, ., .)`` (kept with them)."""
        if (str(device), transposed) in self.dense:
            return self.dense[str(device), transposed]
        used = self.weights != 0
        first = np.where(used, self.taps, np.iinfo(np.int64).max).min(axis=(0, 2))  # (P,)
        last = np.where(used, self.taps, -1).max(axis=(0, 2))
        out = []
        for o0 in range(0, self.count * self.block, self.block):
            o1 = o0 + self.block
            c0, c1 = int(first[o0:o1].min()), int(last[o0:o1].max()) + 1
            c0, c1 = (c0, c1) if c1 > c0 else (0, 1)  # no weight at all: any one pixel
            index = np.clip(self.taps[:, o0:o1] - c0, 0, c1 - c0 - 1)  # unused taps (weight 0) anywhere inside
            values, dim, shape = self.weights[:, o0:o1], 2, (len(index), self.block, c1 - c0)
            if transposed:
                index, values, dim, shape = index.transpose(0, 2, 1), values.transpose(0, 2, 1), 1, (shape[0], shape[2], shape[1])
            dense = torch.zeros(shape, device=device).scatter_add_(
                dim, torch.from_numpy(np.ascontiguousarray(index)).to(device),
                torch.from_numpy(np.ascontiguousarray(values)).to(device))
            out.append((c0, c1, dense))
        self.dense[str(device), transposed] = out
        return out


def _distinct(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(rows, axis=0, return_inverse=True)`` for ``(B, 4)`` non-negative ints, through
    one int64 key per row when the values fit 15 bits (a 1-D unique is several times faster)."""
    if rows.size and 0 <= rows.min() and rows.max() < 2**15:
        packed = ((rows[:, 0] << 45) | (rows[:, 1] << 30) | (rows[:, 2] << 15) | rows[:, 3])
        keys, first, inverse = np.unique(packed, return_index=True, return_inverse=True)
        return rows[first], inverse.reshape(-1)
    keys, inverse = np.unique(rows, axis=0, return_inverse=True)
    return keys, inverse.reshape(-1)


def _two_passes(image: Tensor, yaxis: _Axis, xaxis: _Axis, vertical_first: bool, clip: bool) -> Tensor:
    """uint8 ``(B, C, H, W)`` -> float ``(B, C, S_h, S_w)`` in [0, 1]: the two passes, block by
    block, each rounded to uint8 values (and clipped to 0..255 when the filter has negative lobes:
    ``clip``). Every product writes its own contiguous slot (``bmm(..., out=)``): the first pass
    into ``mid`` ``(blocks, B * C, ., .)``, the second into ``out`` ``(y blocks, x blocks, B * C,
    block_h, block_w)``, divided by 255 and laid out as images in one copy."""
    device, (batch, channels, height, width) = image.device, image.shape
    planes = image.reshape(batch * channels, height, width)  # a view for one channel
    ys, xs = yaxis.blocks(device, False, channels, "wy"), xaxis.blocks(device, True, channels, "wx")
    out = _scratch("out", (yaxis.count, xaxis.count, batch * channels, yaxis.block, xaxis.block), device)
    if vertical_first:
        lo, hi = min(b[0] for b in xs), max(b[1] for b in xs)  # the columns the second pass uses
        mid = _scratch("mid", (yaxis.count, batch * channels, yaxis.block, hi - lo), device)
        for j, (c0, c1, weights) in enumerate(ys):
            torch.bmm(weights, _floats(planes[:, c0:c1, lo:hi], "operand"), out=mid[j])
        _to_uint8_values(mid, clip)
        for j in range(yaxis.count):
            for k, (c0, c1, weights) in enumerate(xs):
                torch.bmm(mid[j][:, :, c0 - lo : c1 - lo], weights, out=out[j, k])
    else:
        lo, hi = min(b[0] for b in ys), max(b[1] for b in ys)  # the rows the second pass uses
        mid = _scratch("mid", (xaxis.count, batch * channels, hi - lo, xaxis.block), device)
        for k, (c0, c1, weights) in enumerate(xs):
            torch.bmm(_floats(planes[:, lo:hi, c0:c1], "operand"), weights, out=mid[k])
        _to_uint8_values(mid, clip)
        for j, (c0, c1, weights) in enumerate(ys):
            for k in range(xaxis.count):
                torch.bmm(weights, mid[k][:, c0 - lo : c1 - lo], out=out[j, k])
    shape = (batch, channels, yaxis.count, yaxis.block, xaxis.count, xaxis.block)
    images = torch.empty(batch, channels, yaxis.count * yaxis.block, xaxis.count * xaxis.block, device=device)
    blocks = _to_uint8_values(out, clip).div_(255.0)  # contiguous (a division of the permuted view is slower)
    images.view(shape).copy_(blocks.view(yaxis.count, xaxis.count, batch, channels, yaxis.block, xaxis.block)
                             .permute(2, 3, 0, 4, 1, 5))
    if images.shape[2:] != (yaxis.size, xaxis.size):
        images = images[:, :, : yaxis.size, : xaxis.size].contiguous()
    return images


def _to_uint8_values(x: Tensor, clip: bool) -> Tensor:
    """Round half up (and clip to 0..255), as Pillow stores each pass (in place)."""
    x = x.add_(0.5).floor_()
    return x.clamp_(0.0, 255.0) if clip else x


def _floats(pixels: Tensor, slot: str) -> Tensor:
    """uint8 -> contiguous float32 (the operand of a block's product), in scratch ``slot``."""
    return _scratch(slot, pixels.shape, pixels.device).copy_(pixels)


_SCRATCH = threading.local()


def _scratch(slot: str, shape: tuple[int, ...], device: torch.device) -> Tensor:
    """An uninitialised float32 tensor of ``shape`` for an intermediate result that does not
    leave the renderer. On the CPU each thread keeps one growing buffer per ``slot`` and reuses
    it: a fresh allocation of megabytes per batch costs the kernel's page zeroing, more than some
    of the products (measured). Elsewhere (CUDA's caching allocator) a plain ``torch.empty``."""
    if device.type != "cpu":
        return torch.empty(shape, device=device)
    buffers = _SCRATCH.__dict__.setdefault("buffers", {})
    numel = math.prod(shape)
    if slot not in buffers or buffers[slot].numel() < numel:
        buffers[slot] = torch.empty(numel)
    return buffers[slot][:numel].view(shape)


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
