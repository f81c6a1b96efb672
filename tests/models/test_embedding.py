"""EmbeddingModel: shapes, in-model normalisation, channels, save/load and its failure modes."""

import json
import os
import pickle

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from rkd_pml.models import EmbeddingModel




@pytest.fixture(scope="module")
def small():
    return EmbeddingModel("resnet10t", embedding_dim=16, data_config={"input_size": (3, 32, 32)}).eval()


def images(n=4, c=3, size=32):
    return torch.rand(n, c, size, size)


def test_forward_shapes_and_l2_flag():
    x = images()
    plain = EmbeddingModel("resnet10t", embedding_dim=8).eval()
    unit = EmbeddingModel("resnet10t", embedding_dim=8, l2_normalize=True).eval()
    assert plain(x).shape == unit(x).shape == (4, 8)
    assert torch.allclose(unit(x).norm(dim=1), torch.ones(4), atol=1e-5)
    assert not torch.allclose(plain(x).norm(dim=1), torch.ones(4), atol=1e-2)


def test_forward_normalises_with_imagenet_statistics(small):
    x = images()
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1)
    expected = small.head(small.backbone((x - mean) / std))
    assert torch.allclose(small(x), expected, atol=1e-5)


def test_each_model_applies_its_own_statistics_to_one_batch():
    x = images()
    vit_like = EmbeddingModel(
        "resnet10t", 8, data_config={"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    ).eval()
    assert vit_like.data_config["mean"] == (0.5, 0.5, 0.5)
    assert torch.allclose(vit_like(x), vit_like.head(vit_like.backbone(x * 2 - 1)), atol=1e-5)


def test_feature_width_uses_head_hidden_size():
    model = EmbeddingModel("mobilenetv3_small_100", embedding_dim=8).eval()
    assert model.backbone.num_features == 576 and model.feature_dim == 1024
    assert model.head.in_features == 1024
    assert model(images(2)).shape == (2, 8)


def test_unknown_model_name_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match="no_such_net_42"):
        EmbeddingModel("no_such_net_42", 8)


def test_grey_model_takes_grey_and_rgb_input():
    model = EmbeddingModel("resnet10t", 8, in_chans=1).eval()
    cfg = model.data_config
    assert cfg["input_size"][0] == 1 and len(cfg["mean"]) == 1 and len(cfg["std"]) == 1
    assert cfg["mean"][0] == pytest.approx(sum(IMAGENET_DEFAULT_MEAN) / 3)
    rgb = images()
    luma = (rgb * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    assert torch.allclose(model(rgb), model(luma), atol=1e-5)


def test_rgb_model_repeats_a_grey_channel(small):
    grey = images(c=1)
    assert torch.allclose(small(grey), small(grey.repeat(1, 3, 1, 1)), atol=1e-6)


def test_bad_inputs_are_refused(small):
    with pytest.raises(TypeError, match="float"):
        small((images() * 255).to(torch.uint8))
    with pytest.raises(ValueError, match="channels"):
        small(images(c=2))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        small(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="in_chans"):
        EmbeddingModel("resnet10t", 8, in_chans=4)


def test_save_load_round_trip(tmp_path):
    model = EmbeddingModel(
        "resnet10t", 12, l2_normalize=True, in_chans=1, data_config={"input_size": (1, 40, 40)}, drop_rate=0.1
    )
    with torch.no_grad():  # BN statistics must travel too
        model.train()(images(8, c=1))
    model.eval()
    out = model.save(tmp_path / "m")
    assert sorted(os.listdir(out)) == ["config.json", "model.safetensors"]
    same = EmbeddingModel.load(tmp_path / "m").eval()
    assert same.config == model.config and same.data_config == model.data_config
    assert same.data_config["input_size"] == (1, 40, 40)
    assert same.l2_normalize and same.in_chans == 1 and same.timm_kwargs == {"drop_rate": 0.1}
    x = images(c=1)
    assert torch.equal(model(x), same(x))


def test_save_refuses_a_non_empty_directory_unless_overwrite(tmp_path, small):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        small.save(tmp_path)
    small.save(tmp_path, overwrite=True)
    other = EmbeddingModel("resnet10t", 16, data_config={"input_size": (3, 32, 32)}).eval()
    other.save(tmp_path, overwrite=True)
    assert sorted(os.listdir(tmp_path)) == [
        "config.json",
        "model.safetensors",
        "notes.txt",
    ]  # no temp files left
    x = images()
    assert torch.equal(EmbeddingModel.load(tmp_path).eval()(x), other(x))
    with pytest.raises(FileExistsError, match="not a directory"):
        small.save(tmp_path / "notes.txt", overwrite=True)


@pytest.fixture
def saved(tmp_path, small):
    return small.save(tmp_path / "saved")


def test_missing_files_are_named(tmp_path, saved):
    with pytest.raises(FileNotFoundError, match="EmbeddingModel.save"):
        EmbeddingModel.load(tmp_path / "nowhere")
    (saved / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        EmbeddingModel.load(saved)
    (saved / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        EmbeddingModel.load(saved)


def test_truncated_weights_are_named(saved):
    weights = saved / "model.safetensors"
    data = weights.read_bytes()
    for cut in (len(data) - 7, len(data) // 2, 5):
        weights.write_bytes(data[:cut])
        with pytest.raises(ValueError, match=r"model\.safetensors.*corrupt or truncated"):
            EmbeddingModel.load(saved)


def test_foreign_or_broken_config_is_named(saved):
    config = saved / "config.json"
    config.write_text("{not json")
    with pytest.raises(ValueError, match=r"config\.json.*JSON"):
        EmbeddingModel.load(saved)
    config.write_text(json.dumps({"architecture": "resnet18"}))
    with pytest.raises(ValueError, match=r"config\.json.*not an EmbeddingModel config"):
        EmbeddingModel.load(saved)


def test_foreign_weights_are_named(saved):
    save_file({"fc.weight": torch.zeros(3, 3)}, str(saved / "model.safetensors"))
    with pytest.raises(ValueError, match=r"model\.safetensors.*head\.weight"):
        EmbeddingModel.load(saved)
    # Same head shape, other architecture: resnet18 features are 512 wide as resnet10t's.
    EmbeddingModel("resnet18", 16).save(saved, overwrite=True)
    config = json.loads((saved / "config.json").read_text())
    config["model_name"] = "resnet10t"
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"model\.safetensors.*does not fit 'resnet10t'"):
        EmbeddingModel.load(saved)


def test_embedding_size_mismatch_is_named(saved):
    config = json.loads((saved / "config.json").read_text())
    config["embedding_dim"] = 32
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"model\.safetensors.*\[16, 512\].*embedding_dim=32"):
        EmbeddingModel.load(saved)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_loading_never_unpickles(tmp_path, saved):
    marker = tmp_path / "executed"
    (saved / "model.safetensors").write_bytes(pickle.dumps(_Payload(str(marker))))
    with pytest.raises(ValueError, match="model.safetensors"):
        EmbeddingModel.load(saved)
    assert not marker.exists()


def test_loaded_model_is_independent_and_trainable(small, tmp_path):
    # A reloaded model is a fresh module: training it does not touch the original.
    same = EmbeddingModel.load(small.save(tmp_path / "x")).train()
    loss = F.mse_loss(same(images()), torch.zeros(4, 16))
    loss.backward()
    assert same.head.weight.grad is not None and small.head.weight.grad is None
