"""The images of a data set decoded once into one uint8 buffer: in memory, or memory-mapped from a cache folder.

``DecodedImages.build(dataset)`` reads every image of an :class:`~rkd_pml.data.base.ImageDataset`
once (its reader, converted to its mode) and keeps the pixels as one flat uint8 array with
the offset and ``(H, W)`` of each image; ``store[i]`` is image ``i`` as ``(H, W, C)``. In
memory, when every image of an RGB data set has three equal channels (Omniglot's black-and-white
strokes), one channel is kept (``channels == 1``, ``mode == "RGB"``): a third of the memory and
of the work, and renderers repeat it to three.

``DecodedImages.build(dataset, cache_dir=DIR)`` writes the pixels to ``DIR/pixels.u8`` and a
manifest (streamed, one image at a time, all channels of the mode), and maps the file instead of holding it (for data sets larger than memory); a later
build with the same folder reuses it when the manifest's fingerprint (the data set's sample
list, classes and mode, and the format) matches, and refuses it otherwise. A folder that holds
anything else is refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..files import atomic_write_text
from .teacher_cache_format import dataset_fingerprint

FORMAT = "rkd-pml decoded images 1"
PIXELS, MANIFEST = "pixels.u8", "decoded.json"


class DecodedImages:
    """Decoded uint8 images: ``store[i]`` -> ``(H_i, W_i, channels)`` (a view, no copy).

    Attributes:
        pixels: flat uint8 array (in memory, or a ``np.memmap``).
        offsets: ``(N,)`` int64, start of each image in ``pixels``.
        shapes: ``(N, 2)`` int64, ``(H, W)`` of each image.
        channels: channels kept per pixel (1 or 3).
        mode: the data set's PIL mode ("RGB" or "L").
    """

    def __init__(self, pixels: np.ndarray, offsets: np.ndarray, shapes: np.ndarray, channels: int, mode: str):
        self.pixels, self.offsets, self.shapes = pixels, offsets, shapes
        self.channels, self.mode = int(channels), mode

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, index: int) -> np.ndarray:
        h, w = self.shapes[index]
        start = self.offsets[index]
        return self.pixels[start : start + h * w * self.channels].reshape(h, w, self.channels)

    @property
    def nbytes(self) -> int:
        return int(self.pixels.size)

    @classmethod
    def build(cls, dataset: Any, cache_dir: str | os.PathLike[str] | None = None, progress: bool = False) -> DecodedImages:
        """Decode every image of ``dataset`` (an ``ImageDataset``): corrupt or missing images
        are the reader's one-line errors. With ``cache_dir``: see the module docstring."""
        expect = {"format": FORMAT, "mode": dataset.mode, "dataset": dataset_fingerprint(dataset)}
        if cache_dir is not None:
            folder = Path(cache_dir)
            if (folder / MANIFEST).is_file():
                return cls.open(folder, expect)
            if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
                raise ValueError(f"{folder}: not a decoded-image cache folder of this package (no {MANIFEST}); "
                                 "give an empty or new folder")
        if cache_dir is None:
            arrays = [_pixels(dataset, s) for s in _progress(dataset, progress)]
            channels = 3 if dataset.mode == "RGB" and not all(_grey(a) for a in arrays) else 1
            shapes = np.array([a.shape[:2] for a in arrays], dtype=np.int64).reshape(-1, 2)
            flat = [(a[..., :channels] if a.ndim == 3 else a).reshape(-1) for a in arrays]
            del arrays
            pixels = np.concatenate(flat) if flat else np.zeros(0, dtype=np.uint8)
            return cls(pixels, _offsets(shapes, channels), shapes, channels, dataset.mode)
        # streamed to the file, as many channels as the mode has (the images need not fit in memory)
        folder.mkdir(parents=True, exist_ok=True)
        channels = 3 if dataset.mode == "RGB" else 1
        shapes = np.zeros((len(dataset.samples), 2), dtype=np.int64)
        with open(folder / PIXELS, "wb") as f:
            for i, sample in enumerate(_progress(dataset, progress)):
                a = _pixels(dataset, sample)
                shapes[i] = a.shape[:2]
                f.write(np.ascontiguousarray(a).tobytes())
        np.save(folder / "shapes.npy", shapes)
        total = int(shapes.prod(1).sum()) * channels
        atomic_write_text(folder / MANIFEST, json.dumps({**expect, "channels": channels, "bytes": total}, indent=2))
        return cls.open(folder, expect)

    @classmethod
    def open(cls, folder: str | os.PathLike[str], expect: dict[str, Any]) -> DecodedImages:
        """Map a cache folder written by :meth:`build`; ValueError naming the folder and what
        differs when its manifest does not match ``expect``."""
        folder = Path(folder)
        try:
            manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
            shapes = np.load(folder / "shapes.npy")
        except (OSError, ValueError) as exc:
            raise ValueError(f"{folder}: unreadable decoded-image cache ({exc}); give another folder") from None
        differ = [k for k in expect if manifest.get(k) != expect[k]]
        if differ:
            raise ValueError(f"{folder}: this decoded-image cache was built from other images ({', '.join(differ)} "
                             "differ); give another folder")
        channels = int(manifest["channels"])
        sizes = shapes.prod(1) * channels
        if (folder / PIXELS).stat().st_size < int(sizes.sum()) or int(manifest.get("bytes", -1)) != int(sizes.sum()):
            raise ValueError(f"{folder}: {PIXELS} is incomplete; give another folder")
        pixels = np.memmap(folder / PIXELS, dtype=np.uint8, mode="r") if sizes.sum() else np.zeros(0, np.uint8)
        return cls(pixels, _offsets(shapes, channels), shapes, channels, manifest["mode"])

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if isinstance(self.pixels, np.memmap):  # worker processes map the file again
            state["pixels"] = ("memmap", self.pixels.filename)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if isinstance(state["pixels"], tuple):
            state["pixels"] = np.memmap(state["pixels"][1], dtype=np.uint8, mode="r")
        self.__dict__.update(state)

    def __repr__(self) -> str:
        where = f"memmap {self.pixels.filename}" if isinstance(self.pixels, np.memmap) else "in memory"
        return f"{type(self).__name__}({len(self)} images, {self.channels} channel(s), {self.nbytes / 2**20:.1f} MiB, {where})"


def _progress(dataset: Any, progress: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(dataset.samples, desc=f"decoding {dataset.name or 'images'}", disable=not progress, leave=False)


def _pixels(dataset: Any, sample: Any) -> np.ndarray:
    """One image as uint8 ``(H, W, 3)`` ("RGB") or ``(H, W)`` ("L"), read and converted as the data set reads it."""
    image = dataset.reader(sample)
    return np.asarray(image if image.mode == dataset.mode else image.convert(dataset.mode), dtype=np.uint8)


def _offsets(shapes: np.ndarray, channels: int) -> np.ndarray:
    sizes = shapes.prod(1) * channels
    return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64) if len(sizes) else np.zeros(0, np.int64)


def _grey(a: np.ndarray) -> bool:
    return a.ndim == 2 or a.shape[2] == 1 or bool((a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all())
