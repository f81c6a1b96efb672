"""Data sets by name: ``load_dataset(settings) -> (train_set, test_set)``, class-disjoint splits."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from .base import ImageDataset
from .digits import load_digits
from .folder import load_folder
from .omniglot import load_omniglot
from .settings import DataSettings, resolve_data_settings
from .standard import load_standard

Loader = Callable[[DataSettings], "tuple[ImageDataset, ImageDataset]"]

#: name -> loader(settings) -> (train, test): the images of each split, read from ``settings.root``
#: (and ``settings.test_root``) in ``settings.mode``, without transform (:func:`load_dataset` sets them);
#: the names are those of :data:`.settings.DEFAULT_IMAGE_SIZES`
DATASETS: dict[str, Loader] = {
    "digits": load_digits,
    "omniglot": load_omniglot,
    "folder": load_folder,
    "cub200": load_standard,
    "cars196": load_standard,
    "sop": load_standard,
}

#: The Recall@K values reported for each data set (the paper's); others use (1, 2, 4, 8).
RECALL_KS: dict[str, tuple[int, ...]] = {"sop": (1, 10, 100, 1000)}


def recall_ks(name: str) -> tuple[int, ...]:
    """The Ks of Recall@K usually reported on data set ``name``."""
    return RECALL_KS.get(name, (1, 2, 4, 8))


def load_dataset(
    settings: DataSettings | str,
    root: str | os.PathLike[str] | None = None,
    image_size: int | tuple[int, int] | None = None,
    train_transform: str = "paper",
    in_chans: int | None = None,
    data_config: Mapping[str, Any] | None = None,
    test_transform: str | None = None,
    test_root: str | os.PathLike[str] | None = None,
) -> tuple[ImageDataset, ImageDataset]:
    """``(train_set, test_set)`` of the data :class:`~rkd_pml.data.settings.DataSettings` describe.

    Items are ``(image, label)``: ``image`` a float tensor ``(in_chans, S, S)`` in [0, 1]
    (unnormalised), ``label`` an int in ``0..C-1`` of its split; ``.labels`` holds all labels.

    ``settings`` may also be a data set name ("digits", "omniglot", "folder", "cub200",
    "cars196" or "sop") with the settings as keywords, resolved by
    :func:`~rkd_pml.data.settings.resolve_data_settings` (unset: the data set's defaults):

    Args:
        root: the data's folder (or Omniglot's .zip); unused by "digits".
        image_size: output size S; default: ``data_config``'s input size, else the data set's
            default (32 for digits and omniglot, 224 otherwise).
        train_transform: "paper" (the RKD recipe; the default, as in the training configs),
            "random_resized_crop" or "none" (see :mod:`.transforms`).
        in_chans: 3 (RGB) or 1 (grey); default: ``data_config``'s channels, else 3.
        data_config: a model's ``data_config``: its interpolation and crop; its input size
            counts as given where ``image_size`` / ``in_chans`` are not.
        test_transform: "paper" (resize to S*256/224, centre crop) or "timm" (timm's eval
            transform); default: paper with the paper's training transform, else timm.
        test_root: "folder" only: a separate folder of test classes; then every class under
            ``root`` is a training class.
    """
    if not isinstance(settings, DataSettings):
        model_size = tuple((data_config or {}).get("input_size") or ())
        settings = resolve_data_settings({
            "dataset": settings, "root": root, "test_root": test_root, "train_transform": train_transform,
            "test_transform": test_transform,
            "image_size": image_size if image_size is not None or not model_size else tuple(int(s) for s in model_size[-2:]),
            "in_chans": in_chans if in_chans is not None or not model_size else int(model_size[0]),
        }, model_config=data_config)
    train, test = DATASETS[settings.dataset](settings)
    train.transform, test.transform = settings.transforms()
    return train, test
