"""load_dataset / DATASETS: names, defaults and the model-driven image size."""

import pytest

from rkd_pml.data import DATASETS, DataSettings, load_dataset, recall_ks
from rkd_pml.models import EmbeddingModel


def test_registered_names():
    assert set(DATASETS) == {"digits", "omniglot", "folder", "cub200", "cars196", "sop"}
    assert recall_ks("sop") == (1, 10, 100, 1000) and recall_ks("cub200") == (1, 2, 4, 8)


def test_unknown_name_lists_the_choices():
    with pytest.raises(ValueError, match="unknown data set 'imagenet'.*cub200"):
        load_dataset("imagenet")


def test_image_size_and_channels_follow_the_model_unless_given():
    model = EmbeddingModel("resnet10t", 8, in_chans=1, data_config={"input_size": (1, 40, 40)})
    train, test = load_dataset("digits", data_config=model.data_config)
    assert train[0][0].shape == (1, 40, 40) and test[0][0].shape == (1, 40, 40)
    train, _ = load_dataset("digits", data_config=model.data_config, image_size=24, in_chans=3)
    assert train[0][0].shape == (3, 24, 24)
    assert load_dataset(DataSettings("digits", 16))[1][0][0].shape == (3, 16, 16)
    untransformed = DATASETS["digits"](DataSettings("digits", 16, in_chans=1))[1]
    assert untransformed.transform is None and untransformed[0][0].mode == "L" and untransformed[0][0].size == (8, 8)
