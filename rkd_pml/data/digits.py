"""scikit-learn's bundled digits (1,797 8x8 grey images, always available): 0-4 train, 5-9 test."""

from __future__ import annotations


import numpy as np
from PIL import Image

from .settings import DataSettings, resolve_data_settings
from .base import ImageDataset



class ArrayImageReader:
    """Index -> PIL "L" image of ``images[index]`` (uint8 array ``(N, H, W)``)."""

    def __init__(self, images: np.ndarray):
        self.images = images

    def __call__(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[index])


def load_digits(settings: DataSettings | None = None) -> tuple[ImageDataset, ImageDataset]:
    """``(train, test)``: digits 0-4 (labels 0-4) and 5-9 (labels 0-4, ``classes`` [5..9]).

    The 8x8 images (ink values 0-16 scaled to 0-255) are upsampled to ``settings.image_size``
    (default: the data set's defaults). The root is ignored: the data ships with scikit-learn.
    """
    settings = settings or resolve_data_settings({"dataset": "digits"})
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    targets = bunch.target.astype(np.int64)
    (train_tf, test_tf), mode = settings.transforms(), settings.mode
    reader = ArrayImageReader(images)
    splits = []
    for classes, transform, split in (
        ((0, 1, 2, 3, 4), train_tf, "train"),
        ((5, 6, 7, 8, 9), test_tf, "test"),
    ):
        index = np.flatnonzero(np.isin(targets, classes))
        labels = targets[index] - classes[0]
        splits.append(
            ImageDataset(index.tolist(), labels, list(classes), reader, transform, mode, f"digits-{split}")
        )
    return splits[0], splits[1]
