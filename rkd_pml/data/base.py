"""A lazily-read image data set with integer labels, and the readers it uses.

Every data set of :mod:`rkd_pml.data` is an :class:`ImageDataset`: ``dataset[i]`` is
``(image, label)`` with ``image`` a float tensor ``(C, H, W)`` in [0, 1] (after the
transform) and ``label`` an ``int`` in ``0..C-1``; ``dataset.labels`` is the 1-D int64 array
of all labels (no image is read) and ``dataset.classes[label]`` the original class name/id.
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ..files import one_line

if TYPE_CHECKING:
    from .decoded import DecodedImages

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class ImageDataset(Dataset):
    """Images read on demand by ``reader(sample) -> PIL.Image``, converted to ``mode``, then transformed.

    Args:
        samples: one entry per image (a path, a zip member name, an index...).
        labels: class index of each sample, ``0..len(classes)-1``.
        classes: original class name or id of each class index.
        reader: opens one sample as a PIL image; raises ``FileNotFoundError``/``ValueError``
            naming the sample when it cannot.
        transform: PIL image -> tensor ``(C, H, W)``; ``None`` returns the PIL image.
        mode: PIL mode every image is converted to ("RGB" or "L").
    """

    def __init__(
        self,
        samples: Sequence[Any],
        labels: Sequence[int] | np.ndarray,
        classes: Sequence[Hashable],
        reader: Callable[[Any], Image.Image],
        transform: Callable[[Image.Image], Any] | None = None,
        mode: str = "RGB",
        name: str = "",
    ):
        self.samples = list(samples)
        self.labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        self.classes = list(classes)
        if len(self.samples) != len(self.labels):
            raise ValueError(f"{len(self.samples)} samples but {len(self.labels)} labels")
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise ValueError("labels must lie in 0..len(classes)-1")
        self.reader = reader
        self.transform = transform
        self.mode = mode
        self.name = name

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = self.reader(self.samples[index])
        if image.mode != self.mode:
            image = image.convert(self.mode)
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])

    def check_images(self, progress: bool = False, keep: bool = False) -> None:
        """Decode every image once (no transform): a corrupt or missing file is a one-line error
        naming it now, not when training reaches it. With ``keep``, the decoded pixels are kept
        (:meth:`decoded`) instead of decoded again for the fast input pipeline."""
        if keep:
            self.decoded(progress)
            return
        from tqdm.auto import tqdm

        for sample in tqdm(self.samples, desc=f"checking {self.name or 'images'}", disable=not progress, leave=False):
            self.reader(sample)

    def decoded(self, progress: bool = False) -> "DecodedImages":
        """Every image decoded once, as uint8 arrays in memory (built on the first call, then kept):
        :class:`~rkd_pml.data.decoded.DecodedImages`."""
        from .decoded import DecodedImages

        if getattr(self, "_decoded", None) is None:
            self._decoded = DecodedImages.build(self, progress=progress)
        return self._decoded

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, class_indices: Sequence[int], transform: Callable[[Image.Image], Any] | None = None) -> "ImageDataset":
        """The images of some classes (labels remapped to ``0..C-1`` in the order given, sorted
        first), read the same way, with ``transform`` instead of this data set's when given."""
        chosen = sorted(int(c) for c in class_indices)
        remap = {c: i for i, c in enumerate(chosen)}
        keep = np.flatnonzero(np.isin(self.labels, chosen))
        return ImageDataset(
            [self.samples[i] for i in keep],
            [remap[int(self.labels[i])] for i in keep],
            [self.classes[c] for c in chosen],
            self.reader,
            self.transform if transform is None else transform,
            self.mode,
            self.name,
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, images={len(self)}, classes={self.num_classes}, "
            f"mode={self.mode!r}, transform={self.transform})"
        )


def read_image_file(path: str) -> Image.Image:
    """Open and decode an image file; clear errors naming ``path``."""
    try:
        image = Image.open(path)
        image.load()  # decodes now (errors surface here) and closes the file
        return image
    except FileNotFoundError:
        raise FileNotFoundError(f"image file not found: {path}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ValueError(
            f"{path}: not a readable image file (corrupt or truncated?): {one_line(exc)}"
        ) from exc


class ZipImageReader:
    """Reads members of a zip archive as images.

    One ``ZipFile`` per process, so it is safe with DataLoader workers.
    """

    def __init__(self, zip_path: str):
        self.zip_path = zip_path
        self._zip: zipfile.ZipFile | None = None
        self._pid: int | None = None

    def archive(self) -> zipfile.ZipFile:
        if self._zip is None or self._pid != os.getpid():
            self._zip = open_zip(self.zip_path)
            self._pid = os.getpid()
        return self._zip

    def __call__(self, member: str) -> Image.Image:
        where = f"{self.zip_path}:{member}"
        try:
            with self.archive().open(member) as f:
                image = Image.open(f)
                image.load()
            return image
        except KeyError:
            raise FileNotFoundError(f"image not found in zip archive: {where}") from None
        except (zipfile.BadZipFile, UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            raise ValueError(
                f"{where}: not a readable image (corrupt or truncated?): {one_line(exc)}"
            ) from exc

    def __getstate__(self) -> dict:
        return {"zip_path": self.zip_path, "_zip": None, "_pid": None}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.zip_path!r})"


def open_zip(path: str) -> zipfile.ZipFile:
    """``zipfile.ZipFile(path)`` with clear errors naming ``path``."""
    try:
        return zipfile.ZipFile(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"zip archive not found: {path}") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise ValueError(f"{path}: not a readable zip archive: {one_line(exc)}") from exc


def remap_labels(original: Sequence[Hashable]) -> tuple[np.ndarray, list]:
    """Original class ids/names -> (labels ``0..C-1`` in sorted order of the ids, sorted ids)."""
    classes = sorted(set(original))
    index = {c: i for i, c in enumerate(classes)}
    return np.fromiter((index[c] for c in original), dtype=np.int64, count=len(original)), classes


def split_classes(classes: Sequence[Hashable]) -> tuple[list, list]:
    """Sorted classes -> (first ceil(C/2) for training, the rest for testing); needs C >= 2."""
    ordered = sorted(classes)
    if len(ordered) < 2:
        raise ValueError(
            f"need at least 2 classes for a class-disjoint train/test split, found {len(ordered)}"
        )
    cut = math.ceil(len(ordered) / 2)
    return ordered[:cut], ordered[cut:]


def is_image_name(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and base.lower().endswith(IMAGE_EXTENSIONS)


def check_files_exist(paths: Sequence[str], listed_in: str) -> None:
    """Raise ``FileNotFoundError`` naming the first missing file and how many are missing."""
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of {len(paths)} images listed in {listed_in} are missing, e.g. {missing[0]}"
        )
