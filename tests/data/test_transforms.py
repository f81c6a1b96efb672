"""Transforms from a data config: [0, 1] tensors, RGB/L conversion, no normalisation."""

import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from rkd_pml.data import build_transforms
from rkd_pml.data.views import view_of


@pytest.mark.parametrize("kind", ["random_resized_crop", "paper", "none"])
@pytest.mark.parametrize("mode", ["1", "L", "P", "RGBA", "CMYK", "RGB"])
def test_any_mode_gives_unnormalised_rgb_or_grey(kind, mode):
    image = Image.new("RGB", (50, 40), (128, 128, 128)).convert(mode)
    for in_chans in (3, 1):
        for tf in build_transforms(24, train_transform=kind, in_chans=in_chans):
            out = tf(image)
            assert out.shape == (in_chans, 24, 24) and out.dtype == torch.float32
            assert 0.0 <= out.min() <= out.max() <= 1.0
            assert not any(isinstance(t, T.Normalize) for t in tf.transforms)


def test_constant_grey_stays_at_its_value():
    image = Image.new("RGB", (64, 64), (51, 51, 51))  # 0.2: would not survive a mean/std normalisation
    for tf in build_transforms(32):
        assert torch.allclose(tf(image), torch.full((3, 32, 32), 0.2), atol=1e-6)


def test_paper_recipe_scaled_to_the_size():
    train, test = build_transforms(224, train_transform="paper")
    steps = {type(t).__name__: t for t in test.transforms}
    assert steps["Resize"].size == (256, 256) and steps["CenterCrop"].size == (224, 224)
    train32, _ = build_transforms(32, train_transform="paper")
    view = view_of(train32)  # resize, random crop and flip, replayable (tests/data/test_views.py)
    assert view.kind == "paper" and view.resized == (37, 37) and view.size == (32, 32)


def test_model_data_config_drives_size_crop_and_interpolation():
    cfg = {"input_size": (1, 40, 40), "interpolation": "bicubic", "crop_pct": 0.8, "crop_mode": "center"}
    train, test = build_transforms(data_config=cfg)
    resize = next(t for t in test.transforms if isinstance(t, T.Resize))
    assert resize.size == 50 and resize.interpolation == T.InterpolationMode.BICUBIC
    assert test(Image.new("RGB", (60, 80))).shape == (1, 40, 40)
    assert train(Image.new("RGB", (60, 80))).shape == (1, 40, 40)


def test_bad_arguments():
    with pytest.raises(ValueError, match="train_transform"):
        build_transforms(32, train_transform="autoaugment")
    with pytest.raises(ValueError, match="in_chans"):
        build_transforms(32, in_chans=2)
