"""Arguments shared by every data set loader."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from PIL import Image

from .transforms import build_transforms

Transform = Callable[[Image.Image], Any]


def prepare(
    image_size: int | tuple[int, int] | None,
    default_size: int,
    data_config: Mapping[str, Any] | None,
    train_transform: str,
    in_chans: int | None,
    test_transform: str | None = None,
) -> tuple[Transform, Transform, str]:
    """(train transform, test transform, PIL mode) of a loader call.

    The image size is ``image_size``, else the data config's input size, else the data
    set's ``default_size``; the channels ``in_chans``, else the data config's, else 3; the test
    transform ``test_transform`` ("paper" or "timm"), else the one that goes with the training
    transform (paper with paper, timm's eval transform otherwise).
    """
    if in_chans is None:
        in_chans = int(data_config["input_size"][0]) if data_config and "input_size" in data_config else 3
    if image_size is None and not (data_config and "input_size" in data_config):
        image_size = default_size
    train, test = build_transforms(image_size, data_config=data_config, train_transform=train_transform, in_chans=in_chans)
    if test_transform not in (None, "paper", "timm"):
        raise ValueError(f"test_transform must be 'paper' or 'timm', got {test_transform!r}")
    if test_transform is not None and (test_transform == "paper") != (train_transform == "paper"):
        paired = "paper" if test_transform == "paper" else "none"
        _, test = build_transforms(image_size, data_config=data_config, train_transform=paired, in_chans=in_chans)
    return train, test, "RGB" if in_chans == 3 else "L"


@dataclass(frozen=True)
class LoadOptions:
    """How a loader builds its splits (see :func:`rkd_pml.data.load_dataset` for each field)."""

    image_size: int | tuple[int, int] | None = None
    train_transform: str = "paper"
    in_chans: int | None = None
    data_config: Mapping[str, Any] | None = None
    test_transform: str | None = None
    #: folder data only: a separate folder of test classes
    test_root: str | None = None

    def transforms(self, default_size: int) -> tuple[Transform, Transform, str]:
        """(train transform, test transform, PIL mode), the data set's default size ``default_size``."""
        return prepare(self.image_size, default_size, self.data_config, self.train_transform, self.in_chans, self.test_transform)
