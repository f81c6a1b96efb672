"""DataSettings: one value for the data settings, resolved once (given > recorded > defaults),
read from old and new records, and the transforms it builds."""

import json
import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from rkd_pml.data import DATASETS, DataSettings, SettingWarning, load_dataset, resolve_data_settings
from rkd_pml.data.settings import DEFAULT_IMAGE_SIZES

#: the training_data a saved model recorded before the data settings were one value (the keys
#: of a model config.json of that version, values of a digits teacher at 16 px)
OLD_RECORD = {"dataset": "digits", "root": None, "test_root": None, "image_size": 16, "in_chans": 1,
              "test_transform": "timm", "train_transform": "paper", "precision": "fp32", "recall_ks": [1, 2, 4, 8]}


def test_every_data_set_has_a_default_image_size():
    assert set(DEFAULT_IMAGE_SIZES) == set(DATASETS)


def test_defaults_of_each_data_set_when_nothing_is_given_or_recorded():
    assert resolve_data_settings({}) == DataSettings("digits", 32, in_chans=3, train_transform="paper", test_transform="paper")
    folder = resolve_data_settings({"dataset": "folder", "root": "imgs", "train_transform": "none"})
    assert (folder.image_size, folder.root, folder.test_transform) == (224, os.path.abspath("imgs"), "timm")


def test_given_wins_over_recorded_which_wins_over_defaults(tmp_path):
    recorded = {"dataset": "omniglot", "root": str(tmp_path / "o.zip"), "image_size": 24, "in_chans": 1,
                "test_transform": "timm"}
    with pytest.warns(SettingWarning, match="--image-size 40 differs from 24, the setting the teacher T was"):
        data = resolve_data_settings({"image_size": 40}, recorded, "the teacher T")
    assert (data.dataset, data.root, data.image_size, data.in_chans, data.test_transform) == (
        "omniglot", str(tmp_path / "o.zip"), 40, 1, "timm")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a given value equal to the recorded one is no warning
        assert resolve_data_settings({"image_size": 24}, recorded).image_size == 24


def test_an_old_record_is_read_as_before():
    data = resolve_data_settings({}, OLD_RECORD, "the teacher T")
    assert (data.dataset, data.image_size, data.in_chans, data.test_transform) == ("digits", 16, 1, "timm")
    # the train transform is the run's own (paper by default), not inherited
    assert data.train_transform == "paper"


def test_a_new_record_round_trips_through_json():
    data = DataSettings("folder", (24, 32), root="/data/imgs", test_root="/data/test", in_chans=1,
                        train_transform="random_resized_crop", test_transform="paper", interpolation="bicubic",
                        crop_pct=0.9)
    record = json.loads(json.dumps(data.record()))
    assert record["image_size"] == [24, 32] and record["interpolation"] == "bicubic"
    again = resolve_data_settings({"train_transform": record["train_transform"]}, record, model_config=record)
    assert again == data


def test_the_model_config_gives_interpolation_and_crop_not_the_size():
    """The model's input size (224 for a timm ResNet) is not a data setting: the image size stays
    the data set's default, with no input_size to strip first."""
    model_config = {"input_size": (3, 224, 224), "interpolation": "bicubic", "crop_pct": 0.95, "crop_mode": "center",
                    "mean": (0.5, 0.5, 0.5), "std": (0.2, 0.2, 0.2)}
    data = resolve_data_settings({"train_transform": "random_resized_crop"}, model_config=model_config)
    assert (data.image_size, data.interpolation, data.crop_pct) == (32, "bicubic", 0.95)
    train, _ = data.transforms()
    assert train.transforms[0].view.describe()["interpolation"] == "bicubic"


@pytest.mark.parametrize("changes, match", [
    ({"dataset": "imagenet"}, "unknown data set 'imagenet'"),
    ({"dataset": "digits", "test_root": "/t"}, "test_root .* is for the folder data set, not 'digits'"),
    ({"in_chans": 2}, "in_chans must be 1 or 3"),
    ({"test_transform": "bilinear"}, "test_transform must be 'paper' or 'timm'"),
    ({"image_size": 0}, "image_size must be a positive int"),
])
def test_bad_values_are_one_line_errors(changes, match):
    with pytest.raises(ValueError, match=match):
        DataSettings(**{"dataset": "folder", "image_size": 16, **changes})


def _image(size=(30, 20), seed=0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


@pytest.mark.parametrize("train_transform", ["paper", "none"])
def test_the_paper_test_transform_whatever_the_training_transform(train_transform):
    """Test transform "paper": resize to S*256/224 (16 -> 18), centre crop S, as the paper;
    also when the training transform alone would pair it with timm's."""
    data = DataSettings("digits", 16, train_transform=train_transform, test_transform="paper")
    reference = T.Compose([T.Resize((18, 18), T.InterpolationMode.BILINEAR), T.CenterCrop(16), T.ToTensor()])
    image = _image()
    assert torch.equal(data.transforms()[1](image), reference(image))


def test_load_dataset_takes_the_value_and_the_loaders_follow_it():
    data = DataSettings("digits", 12, in_chans=1, train_transform="none", test_transform="timm")
    train, test = load_dataset(data)
    assert train[0][0].shape == (1, 12, 12) and test.mode == "L" and len(set(test.labels.tolist())) == 5
    # the keyword form resolves the same value
    keyword = load_dataset("digits", image_size=12, in_chans=1, train_transform="none", test_transform="timm")[1]
    assert torch.equal(keyword[7][0], test[7][0])
