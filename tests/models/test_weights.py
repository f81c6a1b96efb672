"""Pretrained backbones: local weights files, the hub cache, and fast failure offline."""

import socket
import time

import pytest
import timm
import torch
from huggingface_hub import constants as hf_constants
from safetensors.torch import save_file

from rkd_pml.models import EmbeddingModel, PretrainedWeightsError
from rkd_pml.models import weights as weights_module




def reference_state(name="resnet10t", **kwargs):
    """A timm model with a classifier, as weights files hold them; random but fixed."""
    torch.manual_seed(123)
    model = timm.create_model(name, pretrained=False, **kwargs)
    return {k: v.clone().contiguous() for k, v in model.state_dict().items()}


def assert_backbone_matches(model, state, skip=()):
    backbone = model.backbone.state_dict()
    for key, value in backbone.items():
        if key not in skip:
            assert torch.equal(value, state[key]), key
    assert "fc.weight" not in backbone  # the classifier was dropped


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_weights_file(tmp_path, suffix):
    state = reference_state()
    path = tmp_path / f"resnet10t{suffix}"
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    model = EmbeddingModel("resnet10t", 8, pretrained=str(path))
    assert_backbone_matches(model, state)
    fresh = EmbeddingModel("resnet10t", 8)
    assert not torch.equal(fresh.backbone.conv1[0].weight, state["conv1.0.weight"])


def test_local_weights_adapted_to_one_channel(tmp_path):
    state = reference_state()
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    model = EmbeddingModel("resnet10t", 8, pretrained=path, in_chans=1)
    first = "conv1.0.weight"
    assert torch.allclose(model.backbone.state_dict()[first], state[first].sum(dim=1, keepdim=True))
    assert_backbone_matches(model, state, skip=(first,))


def test_missing_and_foreign_local_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.safetensors"):
        EmbeddingModel("resnet10t", 8, pretrained=tmp_path / "nothing.safetensors")
    foreign = tmp_path / "foreign.safetensors"
    save_file({"encoder.weight": torch.zeros(2, 2)}, str(foreign))
    with pytest.raises(
        PretrainedWeightsError, match=r"foreign\.safetensors.*not timm weights of 'resnet10t'"
    ):
        EmbeddingModel("resnet10t", 8, pretrained=foreign)
    other = tmp_path / "resnet18.safetensors"
    save_file(reference_state("resnet18", num_classes=10), str(other))
    with pytest.raises(PretrainedWeightsError, match=r"resnet18\.safetensors.*'resnet10t'"):
        EmbeddingModel("resnet10t", 8, pretrained=other)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00not a checkpoint")
    with pytest.raises(PretrainedWeightsError, match=r"garbage\.pth"):
        EmbeddingModel("resnet10t", 8, pretrained=garbage)


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def test_hub_request_offline_fails_fast_naming_the_local_option(empty_hub_cache):
    start = time.monotonic()
    with pytest.raises(PretrainedWeightsError, match=r"HF_HUB_OFFLINE.*pretrained='path/to/resnet10t"):
        EmbeddingModel("resnet10t", 8, pretrained=True)
    assert time.monotonic() - start < 5


def test_hub_request_without_network_fails_fast(empty_hub_cache, monkeypatch):
    monkeypatch.setattr(weights_module, "_hub_offline", lambda: False)
    monkeypatch.setattr(weights_module, "_reachable", lambda host, timeout=0: False)
    with pytest.raises(PretrainedWeightsError, match=r"unreachable.*pretrained="):
        EmbeddingModel("resnet10t", 8, pretrained=True)


def test_reachability_probe_on_a_closed_port():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    assert weights_module._reachable(("127.0.0.1", port), timeout=2) is False
    assert time.monotonic() - start < 3


def test_hub_weights_found_in_the_cache_load_without_network(empty_hub_cache):
    repo = empty_hub_cache / "models--timm--resnet10t.c3_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abc")
    (repo / "snapshots" / "0123abc").mkdir(parents=True)
    state = reference_state()
    save_file(state, str(repo / "snapshots" / "0123abc" / "model.safetensors"))
    model = EmbeddingModel("resnet10t", 8, pretrained=True)
    assert_backbone_matches(model, state)


def test_pretrained_argument_type_is_checked():
    with pytest.raises(TypeError, match="pretrained"):
        EmbeddingModel("resnet10t", 8, pretrained=3)
