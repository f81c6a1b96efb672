"""Image transforms built from a model's data config; outputs are unnormalised [0, 1] tensors.

Normalisation is the model's job (see ``EmbeddingModel.forward``), so every transform here
ends with ``ToTensor`` and no ``Normalize``.

Train transforms (``train_transform=``) are ``T.Compose([RandomView(view)])`` with a
:class:`~rkd_pml.data.views.View` that splits the augmentation into ``draw`` and ``apply``,
so a stored view can be replayed exactly (:mod:`rkd_pml.data.views`,
:mod:`rkd_pml.data.teacher_cache`):
- ``"random_resized_crop"``: timm's training transform (random resized crop with scale
  (0.08, 1), horizontal flip; no colour jitter);
- ``"paper"``: the RKD recipe scaled to the image size S: resize to (S*256/224, S*256/224),
  random S x S crop, horizontal flip (S = 224 gives the paper's 256 / 224);
- ``"none"``: the test transform.
The random draws come from Python's ``random`` (as timm's crop always did; the flip too);
:func:`build_view` gives the :class:`~rkd_pml.data.views.View` of a training transform.
Test transforms: timm's eval transform (resize the shorter side to S / crop_pct, centre
crop) for ``"random_resized_crop"`` and ``"none"``; for ``"paper"``, resize to
(S*256/224, S*256/224) and centre crop, as the paper.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from PIL import Image
from timm.data import create_transform
from timm.data.transforms import str_to_interp_mode
from torchvision import transforms as T

from .views import RandomView, View, view_of

TRAIN_TRANSFORMS = ("random_resized_crop", "paper", "none")

#: Used when no model data config is given: ImageNet-style eval crop of 224/256.
DEFAULT_DATA_CONFIG: dict[str, Any] = {
    "input_size": (3, 224, 224),
    "interpolation": "bilinear",
    "crop_pct": 0.875,
    "crop_mode": "center",
}

PAPER_RESIZE_RATIO = 256 / 224


class ConvertImage:
    """PIL image -> PIL image in ``mode`` ("RGB" or "L"); picklable, for DataLoader workers."""

    def __init__(self, mode: str):
        if mode not in ("RGB", "L"):
            raise ValueError(f"mode must be 'RGB' or 'L', got {mode!r}")
        self.mode = mode

    def __call__(self, image: Image.Image) -> Image.Image:
        return image if image.mode == self.mode else image.convert(self.mode)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mode={self.mode!r})"


def build_transforms(
    image_size: int | tuple[int, int] | None = None,
    *,
    data_config: Mapping[str, Any] | None = None,
    train_transform: str = "random_resized_crop",
    in_chans: int | None = None,
    scale: tuple[float, float] = (0.08, 1.0),
) -> tuple[Callable[[Image.Image], Any], Callable[[Image.Image], Any]]:
    """``(train_transform, test_transform)``: PIL image -> float tensor ``(in_chans, S, S)`` in [0, 1].

    Args:
        image_size: output size S (int or (H, W)); default: the data config's input size.
        data_config: a model's ``data_config`` (interpolation, crop_pct, input_size); the
            default is :data:`DEFAULT_DATA_CONFIG`.
        train_transform: one of :data:`TRAIN_TRANSFORMS`.
        in_chans: 3 (convert to RGB) or 1 (convert to L); default: the data config's channels.
        scale: area range of the random resized crop.
    """
    if train_transform not in TRAIN_TRANSFORMS:
        raise ValueError(f"train_transform must be one of {TRAIN_TRANSFORMS}, got {train_transform!r}")
    cfg = {**DEFAULT_DATA_CONFIG, **dict(data_config or {})}
    if in_chans is None:
        in_chans = int(cfg["input_size"][0])
    if in_chans not in (1, 3):
        raise ValueError(f"in_chans must be 1 or 3, got {in_chans}")
    if image_size is None:
        size = tuple(int(s) for s in cfg["input_size"][-2:])
    elif isinstance(image_size, int):
        size = (image_size, image_size)
    else:
        size = tuple(int(s) for s in image_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"image_size must be a positive int or (H, W), got {image_size!r}")
    convert = ConvertImage("RGB" if in_chans == 3 else "L")
    interpolation = cfg.get("interpolation") or "bilinear"

    if train_transform == "paper":
        mode = str_to_interp_mode(interpolation)
        resized = tuple(round(s * PAPER_RESIZE_RATIO) for s in size)
        view = View("paper", size, in_chans, interpolation)
        test = T.Compose([convert, T.Resize(resized, mode), T.CenterCrop(size), T.ToTensor()])
        return T.Compose([RandomView(view)]), test

    common = dict(
        input_size=(in_chans, *size),
        interpolation=interpolation,
        mean=(0.0,) * in_chans,
        std=(1.0,) * in_chans,
    )
    eval_config = {"crop_pct": cfg.get("crop_pct"), "crop_mode": cfg.get("crop_mode")}
    test = _timm(convert, is_training=False, **eval_config, **common)
    if train_transform == "none":
        view = View("none", size, in_chans, interpolation, eval_transform=test, eval_config=eval_config)
    else:
        view = View("random_resized_crop", size, in_chans, interpolation, scale=tuple(scale))
    return T.Compose([RandomView(view)]), test


def build_view(
    image_size: int | tuple[int, int] | None = None,
    *,
    data_config: Mapping[str, Any] | None = None,
    train_transform: str = "random_resized_crop",
    in_chans: int | None = None,
    scale: tuple[float, float] = (0.08, 1.0),
) -> View:
    """The :class:`~rkd_pml.data.views.View` of ``build_transforms(...)``'s training transform
    (same arguments)."""
    train, _ = build_transforms(
        image_size, data_config=data_config, train_transform=train_transform, in_chans=in_chans, scale=scale
    )
    view = view_of(train)
    assert view is not None
    return view


def _timm(convert: ConvertImage, **kwargs: Any) -> T.Compose:
    """timm's transform without its (identity) Normalize, after a mode conversion."""
    steps = [t for t in create_transform(**kwargs).transforms if not isinstance(t, T.Normalize)]
    return T.Compose([convert, *steps])
