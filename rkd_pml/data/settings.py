"""The data settings of a run as one value: :class:`DataSettings`, resolved once by
:func:`resolve_data_settings` and passed whole (``load_dataset(settings)``, a saved model's record).

Resolution order, for each setting left unset (``None``):

1. what the caller gave (a flag, a config file, a keyword argument);
2. what a teacher (or the saved model being evaluated) recorded it was trained with
   (``training_data`` of its saved model; old records hold a subset of the keys of
   :meth:`DataSettings.record`, all read the same way);
3. the data set's defaults (:data:`DEFAULT_IMAGE_SIZES`, 3 channels, the test transform that
   goes with the training transform) and, for the interpolation and crop of the transforms,
   the data config of the model the images feed.

A given setting that differs from the recorded one is honoured with one :class:`SettingWarning`
naming both values. The recorded roots say where the recorded data set lives: they are not
inherited when another data set is given.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .transforms import DEFAULT_DATA_CONFIG, TRAIN_TRANSFORMS, build_transforms

#: data set name -> image side used when none is given or recorded
DEFAULT_IMAGE_SIZES: dict[str, int] = {
    "digits": 32, "omniglot": 32, "folder": 224, "cub200": 224, "cars196": 224, "sop": 224,
}
DEFAULT_DATASET = "digits"
TEST_TRANSFORMS = ("paper", "timm")
#: the settings a trained model passes on to a run that uses it (a student, an evaluation)
INHERITED = ("dataset", "root", "test_root", "image_size", "in_chans", "test_transform")
#: the settings a caller may give (the rest of :class:`DataSettings` follows the model)
GIVEN = (*INHERITED, "train_transform")
#: the recorded settings that belong to the recorded data set only
_OF_THE_DATA_SET = ("root", "test_root")
#: the preprocessing a model's data config sets (interpolation and crop of the transforms)
MODEL_KEYS = ("interpolation", "crop_pct", "crop_mode")


class SettingWarning(UserWarning):
    """A given setting differs from the one a teacher or saved model was trained with."""


@dataclass(frozen=True)
class DataSettings:
    """Every setting that decides which images a run sees and how they are turned into tensors.

    Args:
        dataset: a key of :data:`DEFAULT_IMAGE_SIZES` (``rkd_pml.data.DATASETS``).
        image_size: output side S (or ``(H, W)``) of both transforms.
        root: the data's folder (or Omniglot's .zip); unused by "digits".
        test_root: "folder" only: a separate folder of test classes.
        in_chans: 3 (images converted to RGB) or 1 (to L).
        train_transform: "paper", "random_resized_crop" or "none" (:mod:`.transforms`).
        test_transform: "paper" (resize to S*256/224, centre crop) or "timm" (timm's eval transform).
        interpolation, crop_pct, crop_mode: the model's preprocessing (timm data config keys).
    """

    dataset: str
    image_size: int | tuple[int, int]
    root: str | None = None
    test_root: str | None = None
    in_chans: int = 3
    train_transform: str = "paper"
    test_transform: str = "paper"
    interpolation: str = DEFAULT_DATA_CONFIG["interpolation"]
    crop_pct: float | None = DEFAULT_DATA_CONFIG["crop_pct"]
    crop_mode: str | None = DEFAULT_DATA_CONFIG["crop_mode"]

    def __post_init__(self) -> None:
        if self.dataset not in DEFAULT_IMAGE_SIZES:
            raise ValueError(f"unknown data set {self.dataset!r}; available: {', '.join(sorted(DEFAULT_IMAGE_SIZES))}")
        if self.test_root is not None and self.dataset != "folder":
            raise ValueError(f"test_root (--test-root) is for the folder data set, not {self.dataset!r}")
        size = (self.image_size,) * 2 if isinstance(self.image_size, int) else tuple(self.image_size)
        if len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in size):
            raise ValueError(f"image_size must be a positive int or (H, W), got {self.image_size!r}")
        if not isinstance(self.image_size, int):
            object.__setattr__(self, "image_size", size)
        if self.in_chans not in (1, 3):
            raise ValueError(f"in_chans must be 1 or 3, got {self.in_chans}")
        if self.train_transform not in TRAIN_TRANSFORMS:
            raise ValueError(f"train_transform must be one of {TRAIN_TRANSFORMS}, got {self.train_transform!r}")
        if self.test_transform not in TEST_TRANSFORMS:
            raise ValueError(f"test_transform must be 'paper' or 'timm', got {self.test_transform!r}")

    @property
    def mode(self) -> str:
        """PIL mode of the images ("RGB" or "L")."""
        return "RGB" if self.in_chans == 3 else "L"

    def transforms(self) -> tuple[Callable[..., Any], Callable[..., Any]]:
        """``(train, test)`` transforms: PIL image -> float tensor ``(in_chans, S, S)`` in [0, 1]."""
        preprocessing = {k: getattr(self, k) for k in MODEL_KEYS}
        train, test = build_transforms(self.image_size, data_config=preprocessing,
                                       train_transform=self.train_transform, in_chans=self.in_chans)
        if (self.test_transform == "paper") != (self.train_transform == "paper"):
            paired = "paper" if self.test_transform == "paper" else "none"
            _, test = build_transforms(self.image_size, data_config=preprocessing, train_transform=paired,
                                       in_chans=self.in_chans)
        return train, test

    def for_model(self, data_config: Mapping[str, Any] | None) -> "DataSettings":
        """These settings with the interpolation and crop of a model's ``data_config`` (the
        keys it has; its input size and mean/std are not data settings: the image size is
        this value's, and the model standardises its own input)."""
        return self.replace(**{k: data_config[k] for k in MODEL_KEYS if k in (data_config or {})})

    def replace(self, **changes: Any) -> "DataSettings":
        return dataclasses.replace(self, **changes)

    def record(self) -> dict[str, Any]:
        """JSON values of every setting (what a saved model and a run record)."""
        out = dataclasses.asdict(self)
        if isinstance(self.image_size, tuple):
            out["image_size"] = list(self.image_size)
        return out


def paired_test_transform(train_transform: str) -> str:
    """The test transform that goes with a training transform: paper with paper, else timm's."""
    return "paper" if train_transform == "paper" else "timm"


def resolve_data_settings(
    given: Mapping[str, Any] | Any,
    recorded: Mapping[str, Any] | None = None,
    source: str = "",
    model_config: Mapping[str, Any] | None = None,
) -> DataSettings:
    """The data settings: ``given`` > ``recorded`` > the data set's defaults (module docstring).

    Args:
        given: the settings of :data:`GIVEN` the caller set (a mapping, or an object such as a
            training config with those attributes; ``None`` or absent = unset).
        recorded: what a trained model recorded (``training_data``), old or new format.
        source: the trained model, as the warnings name it ("the teacher runs/t").
        model_config: the data config of the model the images feed (interpolation, crop).
    """
    if isinstance(given, Mapping):
        unknown = sorted(set(given) - set(GIVEN))
        if unknown:
            raise TypeError(f"unknown data setting {unknown[0]!r}; known: {', '.join(GIVEN)}")
        mine = {k: v for k, v in given.items() if v is not None}
    else:
        mine = {k: getattr(given, k) for k in GIVEN if getattr(given, k, None) is not None}
    theirs = {k: recorded[k] for k in INHERITED if recorded and recorded.get(k) is not None}
    if "dataset" in mine and mine["dataset"] != theirs.get("dataset"):
        theirs = {k: v for k, v in theirs.items() if k not in _OF_THE_DATA_SET}
    for name in sorted(set(mine) & set(theirs), key=INHERITED.index):
        if _normal(name, mine[name]) != _normal(name, theirs[name]):
            warnings.warn(f"--{name.replace('_', '-')} {mine[name]} differs from {theirs[name]}, the setting "
                          f"{source} was trained with; using {mine[name]}", SettingWarning, stacklevel=2)
    values = {**theirs, **mine}
    dataset = values.get("dataset", DEFAULT_DATASET)
    if dataset not in DEFAULT_IMAGE_SIZES:
        raise ValueError(f"unknown data set {dataset!r}; available: {', '.join(sorted(DEFAULT_IMAGE_SIZES))}")
    train_transform = values.get("train_transform", "paper")
    size = values.get("image_size", DEFAULT_IMAGE_SIZES[dataset])
    settings = DataSettings(
        dataset=dataset,
        image_size=size if isinstance(size, int) else tuple(size),
        root=_absolute(values.get("root")),
        test_root=_absolute(values.get("test_root")),
        in_chans=int(values.get("in_chans", 3)),
        train_transform=train_transform,
        test_transform=values.get("test_transform", paired_test_transform(train_transform)),
    )
    return settings.for_model(model_config)


def _absolute(path: str | os.PathLike[str] | None) -> str | None:
    return None if path is None else os.path.abspath(os.fspath(path))


def _normal(name: str, value: Any) -> Any:
    if name in _OF_THE_DATA_SET and isinstance(value, (str, os.PathLike)):
        return os.path.abspath(os.fspath(value))
    return list(value) if isinstance(value, tuple) else value
