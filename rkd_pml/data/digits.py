"""scikit-learn's bundled digits (1,797 8x8 grey images, always available): 0-4 train, 5-9 test."""

from __future__ import annotations

import numpy as np
from PIL import Image

from .base import ImageDataset
from .settings import DataSettings



class ArrayImageReader:
    """Index -> PIL "L" image of ``images[index]`` (uint8 array ``(N, H, W)``)."""

    def __init__(self, images: np.ndarray):
        self.images = images

    def __call__(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[index])


def load_digits(settings: DataSettings) -> tuple[ImageDataset, ImageDataset]:
    """``(train, test)``: digits 0-4 (labels 0-4) and 5-9 (labels 0-4, ``classes`` [5..9]).

    The 8x8 images (ink values 0-16 scaled to 0-255) in ``settings.mode``, resized by the
    transforms :func:`~rkd_pml.data.load_dataset` sets. The root is ignored: the data ships with
    scikit-learn.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    targets = bunch.target.astype(np.int64)
    reader = ArrayImageReader(images)
    splits = []
    for classes, split in (((0, 1, 2, 3, 4), "train"), ((5, 6, 7, 8, 9), "test")):
        index = np.flatnonzero(np.isin(targets, classes))
        labels = targets[index] - classes[0]
        splits.append(
            ImageDataset(index.tolist(), labels, list(classes), reader, None, settings.mode, f"digits-{split}")
        )
    return splits[0], splits[1]
