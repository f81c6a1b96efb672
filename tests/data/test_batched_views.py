"""The batched renderer against a plain reference, and the work its products do.

Reference (written out here): per image, the dense Pillow weight matrices of each axis
(:func:`rkd_pml.data.resample.resample_weights`, one image at a time), the two passes as plain
full-width float32 matrix products with a rounding to uint8 values after each, the flip as a
reversal of the output columns, then / 255. (In float64 the sums that land on exactly x.5, common
with random pixels and exact enlargement ratios, can round the other way.) The renderer multiplies blocks of output pixels by only the
source window they use, for the whole batch at once; it must give the same pixels.
"""

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from rkd_pml.data.batched_views import GEOMETRY, NEGATIVE_LOBES, render_batch, vertical_first
from rkd_pml.data.resample import resample_weights


def _reference(regions, geometry, size, interpolation):
    out = []
    clip = interpolation in NEGATIVE_LOBES
    rnd = (lambda x: (x + 0.5).floor().clamp(0, 255)) if clip else (lambda x: (x + 0.5).floor())
    for b in range(len(regions)):
        h, w, rh, rw, top, left, flip, sh, sw = (int(v) for v in geometry[b])
        image = regions[b].permute(2, 0, 1).float()  # (C, H, W), float32 as the renderer
        wy = resample_weights([h], [rh], [top], size[0], image.shape[1], interpolation, start=[sh])[0]
        wx = resample_weights([w], [rw], [left], size[1], image.shape[2], interpolation, start=[sw])[0]
        if rh < h and rw > w:  # Pillow's vertical-first case
            view = rnd(rnd(wy @ image) @ wx.T)
        else:
            view = rnd(wy @ rnd(image @ wx.T))
        out.append((view.flip(-1) if flip else view) / 255)
    return torch.stack(out)


def _batch(rng, n, channels, size, interpolation):
    """Random regions with random-resized-crop geometry (boxes both shrunk and enlarged)."""
    height, width = 40, 37
    regions = torch.from_numpy(rng.randint(0, 256, (n, height, width, channels), dtype=np.uint8))
    h, w = rng.randint(5, height + 1, n), rng.randint(5, width + 1, n)
    geometry = np.zeros((n, len(GEOMETRY)), dtype=np.int64)
    geometry[:, 0], geometry[:, 1], geometry[:, 2], geometry[:, 3] = h, w, size[0], size[1]
    geometry[:, 6] = rng.randint(0, 2, n)
    for b in range(n):  # zero padding outside each image's box, as the loader hands it over
        regions[b, h[b]:] = 0
        regions[b, :, w[b]:] = 0
    return regions, torch.from_numpy(geometry)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest", "lanczos"])
@pytest.mark.parametrize("channels,size", [(1, (20, 20)), (3, (12, 40)), (1, (33, 70))])
def test_blocked_products_give_the_reference_pixels(interpolation, channels, size):
    """Mixed shrink/enlarge boxes (both pass orders), flips, 1 and 3 channels, sizes below,
    at and past one block (32), and not a multiple of it."""
    regions, geometry = _batch(np.random.RandomState(sum(size) + channels), 24, channels, size, interpolation)
    assert vertical_first(geometry.numpy()).any() and not vertical_first(geometry.numpy()).all()
    got = render_batch(regions, geometry, size, interpolation)
    want = _reference(regions, geometry, size, interpolation)
    assert got.shape == want.shape == (24, channels, *size)
    assert torch.equal(got, want)


class _CountProducts(TorchDispatchMode):
    """Multiply-adds of every batched matrix product run under it."""

    def __init__(self):
        super().__init__()
        self.macs = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (torch.ops.aten.bmm.default, torch.ops.aten.bmm.out, torch.ops.aten.mm.default,
                    torch.ops.aten.baddbmm.default):
            a, b = args[0], args[1]
            self.macs += a.shape[0] * a.shape[1] * a.shape[2] * b.shape[-1] if a.dim() == 3 else a.numel() * b.shape[-1]
        return func(*args, **(kwargs or {}))


def test_products_multiply_only_the_windows_the_filters_use():
    """The paper's view of 105 px images at 64 px (resized to 73, bilinear): the dense passes
    cost ``H*W*64 + 64*H*64`` multiply-adds per image on the kept region (H = W ~ 94); the
    blocked ones under 60 % of that."""
    n, side = 16, 105
    rng = np.random.RandomState(0)
    regions = torch.from_numpy(rng.randint(0, 256, (n, side, side, 1), dtype=np.uint8))
    top, left = rng.randint(0, 10, n), rng.randint(0, 10, n)
    geometry = np.stack([np.full(n, side), np.full(n, side), np.full(n, 73), np.full(n, 73), top, left,
                         rng.randint(0, 2, n), np.zeros(n), np.zeros(n)], 1).astype(np.int64)
    with _CountProducts() as count:
        got = render_batch(regions, torch.from_numpy(geometry), (64, 64), "bilinear")
    dense = n * (side * side * 64 + 64 * side * 64)
    assert 0 < count.macs < 0.6 * dense
    assert torch.equal(got, _reference(regions, torch.from_numpy(geometry), (64, 64), "bilinear"))
