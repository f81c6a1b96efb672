"""Replayable views: draws as timm / torchvision draw them, renders as their ops render them."""

import math
import random

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data.transforms import RandomResizedCropAndInterpolation
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from rkd_pml.data.transforms import build_transforms
from rkd_pml.data.transforms import build_view
from rkd_pml.data.views import NUM_PARAMS, RandomView, View, view_of


def _image(width=50, height=40, seed=0, mode="RGB"):
    pixels = np.random.RandomState(seed).randint(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels).convert(mode)


@pytest.mark.parametrize("wh", [(50, 40), (40, 50), (33, 33), (200, 12), (9, 120)])
def test_rrc_draw_is_timms_draw(wh):
    """Same seed, same box: timm's get_params on the global random vs draw on a Random."""
    view = build_view(24, train_transform="random_resized_crop")
    image = _image(*wh)
    for seed in range(40):
        random.seed(seed)
        expected = RandomResizedCropAndInterpolation.get_params(image, view.scale, view.ratio)
        params = view.draw(random.Random(seed), image.size)
        assert tuple(int(v) for v in params[:4]) == tuple(expected)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_rrc_apply_is_timms_crop(interpolation):
    view = build_view(24, train_transform="random_resized_crop", data_config={"interpolation": interpolation})
    crop = RandomResizedCropAndInterpolation(24, interpolation=interpolation)
    image = _image()
    for seed in range(10):
        random.seed(seed)
        expected = crop(image)
        params = view.draw(random.Random(seed), image.size)
        params[4] = 0.0
        assert torch.equal(view.apply(image, params), TF.to_tensor(expected))
        params[4] = 1.0
        assert torch.equal(view.apply(image, params), TF.to_tensor(TF.hflip(expected)))


def test_paper_apply_is_torchvisions_resize_crop_flip():
    view = build_view(32, train_transform="paper")
    image = _image(60, 45)
    resized = T.Resize((37, 37))(image)
    for seed in range(10):
        torch.manual_seed(seed)
        top, left, h, w = T.RandomCrop.get_params(resized, (32, 32))
        torch.manual_seed(seed)
        cropped = T.RandomCrop(32)(resized)
        assert torch.equal(view.apply(image, [top, left, h, w, 0]), TF.to_tensor(cropped))
        flipped = T.RandomHorizontalFlip(p=1.0)(cropped)
        assert torch.equal(view.apply(image, [top, left, h, w, 1]), TF.to_tensor(flipped))


@pytest.mark.parametrize("kind", ["paper", "random_resized_crop"])
def test_flip_really_flips(kind):
    view = build_view(24, train_transform=kind)
    image = _image()
    params = view.draw(random.Random(3), image.size)
    params[4] = 0.0
    plain = view.apply(image, params)
    params[4] = 1.0
    flipped = view.apply(image, params)
    assert torch.equal(flipped, plain.flip(-1)) and not torch.equal(flipped, plain)


def test_params_within_bounds():
    image = _image(70, 30)
    rng = random.Random(0)
    rrc = build_view(24, train_transform="random_resized_crop")
    paper = build_view(24, train_transform="paper")
    flips = []
    for _ in range(500):
        top, left, h, w, flip = rrc.draw(rng, image.size)
        assert 0 <= top <= 30 - h and 0 <= left <= 70 - w and h >= 1 and w >= 1
        if (top, left, h, w) != (0, 15, 30, 40):  # timm's fallback: centre crop of ratio 4/3
            # the drawn area and aspect ratio, up to the rounding of each side
            assert (h + 0.5) * (w + 0.5) >= 0.08 * 70 * 30 and (h - 0.5) * (w - 0.5) <= 70 * 30
            assert (w + 0.5) / (h - 0.5) >= 3 / 4 and (w - 0.5) / (h + 0.5) <= 4 / 3
        top, left, h, w, pflip = paper.draw(rng)
        assert 0 <= top <= 27 - 24 and 0 <= left <= 27 - 24 and (h, w) == (24, 24)
        assert flip in (0.0, 1.0) and pflip in (0.0, 1.0)
        flips += [flip, pflip]
    assert 0.4 < np.mean(flips) < 0.6
    assert rrc.draw(rng, image.size).shape == (NUM_PARAMS,) and rrc.draw(rng, image).dtype == np.float32


@pytest.mark.parametrize("kind", ["paper", "random_resized_crop", "none"])
@pytest.mark.parametrize("in_chans", [3, 1])
def test_live_transform_is_apply_of_draw(kind, in_chans):
    """The training transform drawn from the global random = apply(draw) with that seed."""
    train, test = build_transforms(24, train_transform=kind, in_chans=in_chans)
    view = view_of(train)
    assert isinstance(train.transforms[0], RandomView) and view.kind == kind
    image = _image(mode="RGB" if in_chans == 3 else "L")
    for seed in range(5):
        random.seed(seed)
        live = train(image)
        replayed = view.apply(image, view.draw(random.Random(seed), image.size))
        assert live.shape == (in_chans, 24, 24) and torch.equal(live, replayed)
    if kind == "none":
        assert torch.equal(view.apply(image, view.draw()), test(image))


def test_none_view_draws_nothing():
    view = build_view(24, train_transform="none")
    rng = random.Random(5)
    state = rng.getstate()
    assert not view.draw(rng).any() and rng.getstate() == state


def test_apply_refuses_params_of_another_image():
    view = build_view(24, train_transform="random_resized_crop")
    with pytest.raises(ValueError, match="does not fit"):
        view.apply(_image(30, 30), [10, 10, 25, 25, 0])
    with pytest.raises(ValueError, match="flip"):
        view.apply(_image(30, 30), [0, 0, 10, 10, 0.5])
    with pytest.raises(ValueError, match="params"):
        view.apply(_image(30, 30), [0, 0, 10])
    with pytest.raises(ValueError, match="random"):
        View("random_resized_crop", (24, 24), interpolation="random")
    with pytest.raises(ValueError, match="unknown interpolation"):
        View("paper", (24, 24), interpolation="sideways")


def test_draws_are_spread_over_the_image():
    """Every crop offset of the paper view is drawn (uniform over 0..3)."""
    view = build_view(24, train_transform="paper")
    rng = random.Random(1)
    tops = {int(view.draw(rng)[0]) for _ in range(200)}
    assert tops == {0, 1, 2, 3}
    assert math.isclose(view.resized[0], round(24 * 256 / 224))
