"""Data sets by name: ``load_dataset(name, ...) -> (train_set, test_set)``, class-disjoint splits."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from ._common import LoadOptions
from .base import ImageDataset
from . import digits, folder, omniglot, standard
from .digits import load_digits
from .folder import load_folder
from .omniglot import load_omniglot
from .standard import load_standard

Loader = Callable[..., "tuple[ImageDataset, ImageDataset]"]

#: name -> loader(root, options: LoadOptions) -> (train, test)
DATASETS: dict[str, Loader] = {
    "digits": load_digits,
    "omniglot": load_omniglot,
    "folder": load_folder,
    "cub200": partial(load_standard, "cub200"),
    "cars196": partial(load_standard, "cars196"),
    "sop": partial(load_standard, "sop"),
}

#: name -> image side used when none is given
DEFAULT_IMAGE_SIZES: dict[str, int] = {
    "digits": digits.DEFAULT_IMAGE_SIZE,
    "omniglot": omniglot.DEFAULT_IMAGE_SIZE,
    "folder": folder.DEFAULT_IMAGE_SIZE,
    **{name: standard.DEFAULT_IMAGE_SIZE for name in standard.LAYOUTS},
}

#: The Recall@K values reported for each data set (the paper's); others use (1, 2, 4, 8).
RECALL_KS: dict[str, tuple[int, ...]] = {"sop": (1, 10, 100, 1000)}


def recall_ks(name: str) -> tuple[int, ...]:
    """The Ks of Recall@K usually reported on data set ``name``."""
    return RECALL_KS.get(name, (1, 2, 4, 8))


def load_dataset(
    name: str,
    root: str | os.PathLike[str] | None = None,
    image_size: int | None = None,
    train_transform: str = "paper",
    in_chans: int | None = None,
    data_config: Mapping[str, Any] | None = None,
    test_transform: str | None = None,
    test_root: str | os.PathLike[str] | None = None,
) -> tuple[ImageDataset, ImageDataset]:
    """``(train_set, test_set)`` of data set ``name`` (a key of :data:`DATASETS`).

    Items are ``(image, label)``: ``image`` a float tensor ``(in_chans, S, S)`` in [0, 1]
    (unnormalised), ``label`` an int in ``0..C-1`` of its split; ``.labels`` holds all labels.

    Args:
        name: "digits", "omniglot", "folder", "cub200", "cars196" or "sop".
        root: the data's folder (or Omniglot's .zip); unused by "digits".
        image_size: output size S; default: ``data_config``'s input size, else the data set's
            default (32 for digits and omniglot, 224 otherwise).
        train_transform: "paper" (the RKD recipe; the default, as in the training configs), "random_resized_crop" or "none" (see :mod:`.transforms`).
        in_chans: 3 (RGB) or 1 (grey); default: ``data_config``'s channels, else 3.
        data_config: a model's ``data_config`` (interpolation, crop_pct, input size).
        test_transform: "paper" (resize to S*256/224, centre crop) or "timm" (timm's eval
            transform); default: paper with the paper's training transform, else timm.
        test_root: "folder" only: a separate folder of test classes; then every class under
            ``root`` is a training class.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; available: {', '.join(sorted(DATASETS))}")
    if test_root is not None and name != "folder":
        raise ValueError(f"test_root (--test-root) is for the folder data set, not {name!r}")
    options = LoadOptions(image_size, train_transform, in_chans, data_config, test_transform,
                          None if test_root is None else os.fspath(test_root))
    return DATASETS[name](root, options)
