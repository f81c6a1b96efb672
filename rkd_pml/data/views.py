"""Replayable training views: each augmentation split into ``draw`` (random parameters) and ``apply``.

A :class:`View` is one training transform of :mod:`rkd_pml.data.transforms`, cut in two:

- ``params = view.draw(rng, source_size)`` draws the random parameters of one view of an image
  of ``source_size = (width, height)`` (PIL's ``image.size``): a float32 vector of
  :data:`NUM_PARAMS` values ``(top, left, height, width, flip)`` (whole numbers; ``flip`` is
  0 or 1);
- ``view.apply(image, params)`` renders that view: PIL image -> float tensor ``(C, S, S)`` in
  [0, 1], deterministic.

The live training transforms (``build_transforms(...)[0]``) are ``T.Compose([RandomView(view)])``:
they draw from Python's global ``random`` (which ``DataLoader`` seeds in each worker) and call
the same ``apply``, so a replayed view equals the live one with the same draw.

Kinds:
- ``"paper"``: resize to ``(round(S_h*256/224), round(S_w*256/224))``, crop ``S`` at
  ``(top, left)`` of the resized image, flip; ``height``/``width`` are ``S``.
- ``"random_resized_crop"``: timm's ``RandomResizedCropAndInterpolation`` box
  ``(top, left, height, width)`` in source pixels (drawn exactly as timm draws it: area
  ``scale``, log-uniform aspect ``ratio``, ten attempts, then a centre-crop fallback), resized
  to ``S``, then flip.
- ``"none"``: the test transform; no random parameter (``draw`` returns zeros, ``apply``
  ignores them).
"""

from __future__ import annotations

import math
import random as _random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from PIL import Image
from torch import Tensor
from torchvision.transforms import functional as F

from timm.data.transforms import str_to_interp_mode

#: Names of the entries of a parameter vector.
PARAM_NAMES = ("top", "left", "height", "width", "flip")
NUM_PARAMS = len(PARAM_NAMES)
VIEW_KINDS = ("paper", "random_resized_crop", "none")
FLIP_PROBABILITY = 0.5
DEFAULT_RATIO = (3.0 / 4.0, 4.0 / 3.0)


class RandomSource(Protocol):
    """What ``draw`` needs: ``random.Random`` or the ``random`` module itself."""

    def uniform(self, a: float, b: float) -> float: ...

    def randint(self, a: int, b: int) -> int: ...

    def random(self) -> float: ...


@dataclass(frozen=True)
class View:
    """One training augmentation as ``draw`` + ``apply`` (see the module docstring).

    Args:
        kind: one of :data:`VIEW_KINDS`.
        size: output ``(S_h, S_w)``.
        in_chans: 3 (images converted to RGB) or 1 (to L).
        interpolation: timm interpolation name ("bilinear", "bicubic", ...; not "random").
        scale: area range of the random resized crop.
        ratio: aspect-ratio range of the random resized crop.
        eval_transform: the test transform (``"none"`` only): PIL -> ``(C, S, S)``.
        eval_config: the crop_pct / crop_mode behind ``eval_transform`` (recorded only).
    """

    kind: str
    size: tuple[int, int]
    in_chans: int = 3
    interpolation: str = "bilinear"
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = DEFAULT_RATIO
    eval_transform: Callable[[Image.Image], Tensor] | None = field(default=None, compare=False)
    eval_config: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in VIEW_KINDS:
            raise ValueError(f"kind must be one of {VIEW_KINDS}, got {self.kind!r}")
        if self.in_chans not in (1, 3):
            raise ValueError(f"in_chans must be 1 or 3, got {self.in_chans}")
        if self.interpolation == "random":
            raise ValueError("interpolation 'random' cannot be replayed; choose e.g. 'bilinear' or 'bicubic'")
        try:
            str_to_interp_mode(self.interpolation)
        except KeyError:
            raise ValueError(f"unknown interpolation {self.interpolation!r} (timm names: bilinear, bicubic, ...)") from None
        if self.kind == "none" and self.eval_transform is None:
            raise ValueError("a 'none' view needs eval_transform (the test transform)")

    @property
    def mode(self) -> str:
        """PIL mode of the rendered image ("RGB" or "L")."""
        return "RGB" if self.in_chans == 3 else "L"

    @property
    def resized(self) -> tuple[int, int]:
        """``"paper"``: the (height, width) the image is resized to before the crop."""
        return round(self.size[0] * 256 / 224), round(self.size[1] * 256 / 224)

    def describe(self) -> dict[str, Any]:
        """JSON description: what must match for two views to render the same image."""
        out: dict[str, Any] = {
            "kind": self.kind,
            "size": list(self.size),
            "in_chans": self.in_chans,
            "interpolation": self.interpolation,
        }
        if self.kind == "random_resized_crop":
            out.update(scale=list(self.scale), ratio=[float(r) for r in self.ratio])
        if self.kind == "paper":
            out.update(resized=list(self.resized))
        if self.kind == "none":
            out.update(eval={k: self.eval_config.get(k) for k in sorted(self.eval_config)})
        return out

    # ------------------------------------------------------------------ draw
    def draw(self, rng: RandomSource | None = None, source_size: Sequence[int] | Image.Image = (0, 0)) -> np.ndarray:
        """Random parameters of one view: float32 ``(NUM_PARAMS,)`` = (top, left, height, width, flip).

        Args:
            rng: ``random.Random`` (or the ``random`` module, the default).
            source_size: ``(width, height)`` of the source image, or the image
                (``"random_resized_crop"`` only; the other kinds ignore it).
        """
        rng = _random if rng is None else rng
        if self.kind == "none":
            return np.zeros(NUM_PARAMS, dtype=np.float32)
        if self.kind == "paper":
            rh, rw = self.resized
            th, tw = self.size
            top = rng.randint(0, rh - th) if rh > th else 0
            left = rng.randint(0, rw - tw) if rw > tw else 0
            box = (top, left, th, tw)
        else:
            width, height = source_size.size if isinstance(source_size, Image.Image) else source_size
            if width < 1 or height < 1:
                raise ValueError(f"source_size must be the (width, height) of the image, got {(width, height)}")
            box = timm_rrc_box(rng, int(width), int(height), self.scale, self.ratio)
        flip = 1.0 if rng.random() < FLIP_PROBABILITY else 0.0
        return np.array([*box, flip], dtype=np.float32)

    # ------------------------------------------------------------------ apply
    def apply(self, image: Image.Image, params: Sequence[float] | np.ndarray | Tensor) -> Tensor:
        """Render the view ``params`` of ``image``: PIL image -> float32 ``(C, S_h, S_w)`` in [0, 1]."""
        if image.mode != self.mode:
            image = image.convert(self.mode)
        if self.kind == "none":
            return self.eval_transform(image)  # type: ignore[misc]
        top, left, height, width, flip = _as_ints(params)
        interp = str_to_interp_mode(self.interpolation)
        if self.kind == "paper":
            _check_box((top, left, height, width), self.resized[::-1], "paper: the resized image")
            if (height, width) != self.size:
                raise ValueError(f"paper view params have crop {height}x{width}, expected {self.size}")
            image = F.crop(F.resize(image, list(self.resized), interp), top, left, height, width)
        else:
            _check_box((top, left, height, width), image.size, "random_resized_crop: the source image")
            image = F.resized_crop(image, top, left, height, width, list(self.size), interp)
        if flip:
            image = F.hflip(image)
        return F.to_tensor(image)


def timm_rrc_box(
    rng: RandomSource, width: int, height: int, scale: Sequence[float], ratio: Sequence[float]
) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` as timm's ``RandomResizedCropAndInterpolation.get_params`` draws it
    (the same calls in the same order, on ``rng`` instead of the global ``random``)."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = rng.uniform(*scale) * area
        aspect_ratio = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if w <= width and h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class RandomView:
    """The live training transform of a :class:`View`: ``view.apply(image, view.draw(random, image.size))``.

    Draws from Python's global ``random`` (seeded per ``DataLoader`` worker and by
    ``seed_everything``). ``image -> (C, S, S)`` float in [0, 1].
    """

    def __init__(self, view: View):
        self.view = view

    def __call__(self, image: Image.Image) -> Tensor:
        return self.view.apply(image, self.view.draw(_random, image.size))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.view.describe()})"


def view_of(transform: Any) -> View | None:
    """The :class:`View` behind a training transform of ``build_transforms`` (or ``None``)."""
    if isinstance(transform, View):
        return transform
    if isinstance(transform, RandomView):
        return transform.view
    for step in getattr(transform, "transforms", ()) or ():
        if isinstance(step, RandomView):
            return step.view
    return None


def _as_ints(params: Sequence[float] | np.ndarray | Tensor) -> list[int]:
    values = np.asarray(params.tolist() if isinstance(params, Tensor) else params, dtype=np.float64).reshape(-1)
    if values.shape != (NUM_PARAMS,) or not np.all(np.isfinite(values)):
        raise ValueError(f"params must be {NUM_PARAMS} finite numbers {PARAM_NAMES}, got {values.tolist()}")
    ints = np.round(values).astype(np.int64)
    if np.any(np.abs(values - ints) > 1e-3) or ints[4] not in (0, 1):
        raise ValueError(f"params {PARAM_NAMES} must be whole numbers with flip 0 or 1, got {values.tolist()}")
    return [int(v) for v in ints]


def _check_box(box: tuple[int, int, int, int], wh: Sequence[int], where: str) -> None:
    top, left, height, width = box
    w, h = wh
    if height < 1 or width < 1 or top < 0 or left < 0 or top + height > h or left + width > w:
        raise ValueError(
            f"view box (top {top}, left {left}, height {height}, width {width}) does not fit {where} "
            f"of {w}x{h} (width x height): params drawn for another image?"
        )
