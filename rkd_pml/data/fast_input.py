"""The training input pipeline: decoded uint8 images, each batch cropped, flipped and resized on the training device.

Two pipelines feed the training loop the same ``(images, labels)`` batches of
``(index, item seed)`` pairs (:func:`rkd_pml.data.batches.epoch_batches`):

- ``"fast"`` (the default): the training images are decoded once
  (:class:`~rkd_pml.data.decoded.DecodedImages`); for each batch the host draws every
  image's view from its item seed (``view.draw(random.Random(seed), size)``: the draws the
  PIL path makes after seeding Python's ``random`` with the same seed, without touching any
  global random state) and gathers the uint8 source regions into one zero-padded batch; the
  training device then resizes, crops and flips the whole batch with two batched matrix
  products (:func:`~rkd_pml.data.batched_views.render_batch`). Images are float32 in [0, 1]
  on the device (the model normalises them, as on the PIL path).
- ``"pil"``: each image read, decoded and transformed with PIL in the loader
  (:class:`~rkd_pml.data.batches.SeededItems`), as before; for data sets whose transforms
  need it.

Defaults of the fast pipeline (``num_workers=0``, the training default): the host work per
batch is small (a draw and a slice copy per image, the rest for the whole batch in NumPy: about
1.5 ms for 128 images on this project's 2-core CPU, against about 3.5 ms for one core to render
them at 64 px, the paper's view of Omniglot), so no worker process is started and the
decoded images are not copied into any. On CUDA one background thread gathers and pins the next
batches (2 ahead) while the device renders and trains, and the copy to the device does not
block; on the CPU the batches are gathered in the training process itself (a thread there only
competes with the rendering for the cores). ``num_workers=N > 0``: N persistent worker
processes gather instead (2 batches ahead each, pinned by the loader on CUDA). The batches and
their views are the same in every case.
"""

from __future__ import annotations

import queue
import random
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .batched_views import render_batch, support
from .batches import SeededItems, make_loader
from .decoded import DecodedImages
from .views import View, view_of

INPUT_PIPELINES = ("fast", "pil")
PREFETCH_BATCHES = 2


class FastItems(Dataset):
    """Decoded images indexed by ``(index, item seed)``, fetched a batch at a time.

    ``items.__getitems__(keys)`` -> ``(regions, geometry, labels)``: uint8 ``(B, H, W, C)``
    source regions (zero-padded to the largest), int64 ``(B, 9)`` geometry
    (:data:`~rkd_pml.data.batched_views.GEOMETRY`) and int64 ``(B,)`` labels, for
    :func:`~rkd_pml.data.batched_views.render_batch`.
    """

    def __init__(self, store: DecodedImages, labels: Any, view: View):
        if view.kind == "none" and any(tuple(s) != tuple(view.size) for s in store.shapes):
            raise ValueError("a 'none' view renders a store of images already at its size")
        self.store, self.labels, self.view = store, np.asarray(labels, dtype=np.int64), view
        self.images = _indexable(store)

    def __getstate__(self) -> dict[str, Any]:  # worker processes: the store, not a second copy of its pixels
        return {k: v for k, v in self.__dict__.items() if k != "images"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, images=_indexable(state["store"]))

    def __len__(self) -> int:
        return len(self.store)

    def layout(self, index: np.ndarray, seeds: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """The views of items ``(index[b], seeds[b])``: ``(boxes, geometry)``, int64 ``(B, 4)``
        ``(top, left, height, width)`` source regions and ``(B, 9)`` geometry rows.

        Per item only the draw itself runs in Python (``view.draw(random.Random(seed), (W, H))``,
        the PIL path's draw); the rest is computed for the whole batch at once.
        """
        view, shapes = self.view, self.store.shapes[index]  # (B, 2) (H, W)
        height, width = shapes[:, 0], shapes[:, 1]
        zeros = np.zeros(len(index), dtype=np.int64)
        if view.kind == "none":
            return (np.stack([zeros, zeros, height, width], 1),
                    np.stack([height, width, height, width, zeros, zeros, zeros, zeros, zeros], 1))
        sizes = shapes[:, ::-1].tolist()
        params = np.array([view.draw(random.Random(s), wh) for s, wh in zip(seeds, sizes)]).astype(np.int64)
        top, left, h, w, flip = params.T
        (sh, sw) = view.size
        if view.kind == "paper":  # only the rows and columns the crop of the resized image uses
            rh, rw = view.resized
            y0, y1 = support(height, rh, top, sh, view.interpolation)
            x0, x1 = support(width, rw, left, sw, view.interpolation)
            return (np.stack([y0, x0, y1 - y0, x1 - x0], 1),
                    np.stack([height, width, rh + zeros, rw + zeros, top, left, flip, y0, x0], 1))
        return params[:, :4].copy(), np.stack([h, w, sh + zeros, sw + zeros, zeros, zeros, flip, zeros, zeros], 1)

    def geometry(self, index: int, seed: int) -> tuple[tuple[int, int, int, int], list[int]]:
        """``((top, left, height, width) of the source region, geometry row)`` of item ``(index, seed)``."""
        boxes, rows = self.layout(np.array([int(index)]), [int(seed)])
        return tuple(boxes[0].tolist()), rows[0].tolist()

    def __getitems__(self, keys: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        index = np.array([int(i) for i, _ in keys], dtype=np.int64).reshape(-1)
        boxes, rows = self.layout(index, [int(s) for _, s in keys])
        height, width = int(boxes[:, 2].max()), int(boxes[:, 3].max())
        regions = np.zeros((len(keys), height, width, self.store.channels), dtype=np.uint8)
        images = self.images
        for r, (i, top, left, h, w) in enumerate(zip(index.tolist(), *boxes.T.tolist())):
            regions[r, :h, :w] = images[i][top : top + h, left : left + w]
        return torch.from_numpy(regions), torch.from_numpy(rows), torch.from_numpy(self.labels[index])

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.__getitems__([key])


def _indexable(store: DecodedImages) -> Any:
    """``images[i]`` -> image ``i`` ``(H, W, C)``: for images of one size one ``(N, H, W, C)``
    view of the pixels (no per-image lookup), else the store itself."""
    shapes = np.unique(store.shapes, axis=0)
    if len(shapes) != 1:
        return store
    return store.pixels[: len(store) * int(np.prod(shapes[0])) * store.channels].reshape(
        len(store), *shapes[0].tolist(), store.channels)


def _as_is(batch: Any) -> Any:
    return batch


class DeviceBatches:
    """Iterable of ``(images, labels)``: images float32 ``(B, C, S_h, S_w)`` in [0, 1] on
    ``device``, labels int64 ``(B,)`` on the host (pinned on CUDA). See the module docstring."""

    def __init__(self, loader: DataLoader, view: View, device: torch.device | str, prefetch: int = PREFETCH_BATCHES):
        self.loader, self.view, self.device, self.prefetch = loader, view, torch.device(device), prefetch

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        pin = self.device.type == "cuda"
        if self.loader.num_workers > 0 or not pin:
            source = iter(self.loader)
        else:  # CUDA: the host gathers the next batches while the device works
            source = _background(self.loader, self.prefetch, pin)
        for regions, geometry, labels in source:
            regions = regions.to(self.device, non_blocking=True)
            yield render_batch(regions, geometry, self.view.size, self.view.interpolation, self.view.in_chans), labels


def _background(loader: DataLoader, depth: int, pin: bool) -> Iterator[Any]:
    """``loader``'s batches, fetched (and pinned) by a daemon thread up to ``depth`` ahead."""
    slots: queue.Queue = queue.Queue(maxsize=max(depth, 1))
    stop, done = threading.Event(), object()

    def produce() -> None:
        try:
            for batch in loader:
                if pin:
                    batch = tuple(t.pin_memory() for t in batch)
                while not stop.is_set():
                    try:
                        slots.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put(done)
        except BaseException as exc:  # handed to the consumer, raised there
            slots.put(exc)

    thread = threading.Thread(target=produce, name="rkd-pml-input", daemon=True)
    thread.start()
    try:
        while True:
            item = slots.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def training_loader(train_set: Any, batches: Any, device: torch.device | str, pipeline: str = "fast",
                    num_workers: int = 0, progress: bool = False, seed: int = 0) -> Any:
    """The iterable of training batches over ``batches`` (an ``EpochBatches`` of ``(index, item
    seed)`` lists) for ``pipeline`` in :data:`INPUT_PIPELINES`: ``(images, labels)``, images
    float ``(B, C, S, S)`` in [0, 1] (on ``device`` for "fast", on the host for "pil").
    The loader's own generator (seeded ``seed``) draws its workers' base seed, as in
    :func:`.batches.make_loader`: starting an epoch leaves the process's random stream untouched."""
    device = torch.device(device)
    if pipeline not in INPUT_PIPELINES:
        raise ValueError(f"input_pipeline must be one of {', '.join(INPUT_PIPELINES)}, got {pipeline!r}")
    if pipeline == "pil":
        return make_loader(SeededItems(train_set), batches, num_workers, pin_memory=device.type == "cuda", seed=seed)
    view = view_of(getattr(train_set, "transform", None))
    if view is None or not hasattr(train_set, "decoded"):
        raise ValueError("input_pipeline 'fast' needs an image data set with a training transform of "
                         "rkd_pml.data.transforms; use input_pipeline 'pil' (--input-pipeline pil)")
    store = train_set.decoded(progress) if view.kind != "none" else _rendered(train_set, view, progress)
    loader = DataLoader(FastItems(store, train_set.labels, view), batch_sampler=batches, num_workers=num_workers,
                        pin_memory=device.type == "cuda" and num_workers > 0, collate_fn=_as_is,
                        persistent_workers=num_workers > 0, prefetch_factor=PREFETCH_BATCHES if num_workers else None,
                        generator=torch.Generator().manual_seed(int(seed)))
    return DeviceBatches(loader, view, device)


def _rendered(train_set: Any, view: View, progress: bool) -> DecodedImages:
    """For the "none" view (no random parameter): each image rendered once by the test transform,
    stored as uint8 (``ToTensor`` divided uint8 values by 255, so nothing is lost)."""
    from .base import ImageDataset

    class _Render:
        def __call__(self, sample: Any) -> Any:
            from PIL import Image

            image = train_set.reader(sample)
            tensor = view.apply(image, np.zeros(5, dtype=np.float32))
            pixels = (tensor * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
            return Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)

    rendered = ImageDataset(train_set.samples, train_set.labels, train_set.classes, _Render(), None, view.mode, train_set.name)
    return DecodedImages.build(rendered, progress=progress)
