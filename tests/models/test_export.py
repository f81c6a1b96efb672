"""export_timm: a saved EmbeddingModel becomes a plain timm model loadable with ``local-dir:``.

The reference is the EmbeddingModel itself on unnormalised images; the timm model gets the
images normalised the timm way (mean/std of its ``pretrained_cfg`` as resolved by
``timm.data.resolve_model_data_config``). No network: HF_HUB_OFFLINE is set by conftest.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F

from rkd_pml import EmbeddingModel
from rkd_pml.models.export import export_timm


def _timm_embed(model, images: torch.Tensor) -> torch.Tensor:
    cfg = timm.data.resolve_model_data_config(model)
    mean = torch.tensor(cfg["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, -1, 1, 1)
    with torch.no_grad():
        return model((images - mean) / std)


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize(
    "name, in_chans, l2",
    [("test_resnet", 3, False), ("resnet10t", 1, True), ("mobilenetv3_small_100", 3, True), ("test_vit", 1, False)],
)
def test_local_dir_model_gives_the_same_embeddings(tmp_path, name, in_chans, l2):
    torch.manual_seed(0)
    model = EmbeddingModel(name, embedding_dim=24, in_chans=in_chans, l2_normalize=l2).eval()
    model.save(tmp_path / "model")
    out = export_timm(tmp_path / "model", tmp_path / "export")
    assert out == (tmp_path / "export").resolve()
    assert sorted(p.name for p in out.iterdir()) == [".rkd-pml-export", "config.json", "model.safetensors"]

    loaded = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    assert loaded.num_classes == 24 and loaded.get_classifier().out_features == 24
    size = 64 if "vit" not in name else 32
    images = torch.rand(5, in_chans, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(images)
    got = _timm_embed(loaded, images)
    if l2:
        got = F.normalize(got, dim=1)
    diff = (got - expected).abs().max().item()
    assert diff <= 1e-5, diff
    # the head really is the classifier (not dropped on load)
    torch.testing.assert_close(loaded.get_classifier().weight, model.head.weight, rtol=0, atol=0)

    config = json.loads((out / "config.json").read_text())
    cfg = config["pretrained_cfg"]
    assert config["architecture"] == name and config["num_classes"] == 24
    assert config["model_args"]["in_chans"] == in_chans
    assert config["l2_normalize"] is l2 and config["embedding_dim"] == 24
    assert tuple(cfg["mean"]) == model.data_config["mean"] and tuple(cfg["std"]) == model.data_config["std"]
    assert tuple(cfg["input_size"]) == tuple(model.data_config["input_size"])
    assert cfg["interpolation"] == model.data_config["interpolation"]
    assert cfg["classifier"] == config["embedding_head"]


def test_classifier_names_per_family(tmp_path):
    names = {"test_resnet": "fc", "mobilenetv3_small_100": "classifier", "test_vit": "head", "test_convnext": "head.fc"}
    for name, head in names.items():
        EmbeddingModel(name, embedding_dim=8).save(tmp_path / name)
        export_timm(tmp_path / name, tmp_path / f"{name}-timm")
        assert json.loads((tmp_path / f"{name}-timm" / "config.json").read_text())["embedding_head"] == head


def test_pooled_features_with_num_classes_zero(tmp_path):
    model = EmbeddingModel("test_resnet", embedding_dim=8).eval()
    model.save(tmp_path / "model")
    export_timm(tmp_path / "model", tmp_path / "export")
    backbone = timm.create_model(f"local-dir:{tmp_path / 'export'}", pretrained=True, num_classes=0).eval()
    images = torch.rand(3, 3, 48, 48)
    with torch.no_grad():
        expected = model.forward_features(images)
    assert (_timm_embed(backbone, images) - expected).abs().max().item() <= 1e-5


def test_weights_file_alone_keeps_the_head_only_with_num_classes_in_the_overlay(tmp_path):
    model = EmbeddingModel("test_resnet", embedding_dim=8).eval()
    model.save(tmp_path / "model")
    file = str(export_timm(tmp_path / "model", tmp_path / "export") / "model.safetensors")
    kept = timm.create_model("test_resnet", pretrained=True, num_classes=8,
                             pretrained_cfg_overlay=dict(file=file, num_classes=8))
    dropped = timm.create_model("test_resnet", pretrained=True, num_classes=8, pretrained_cfg_overlay=dict(file=file))
    assert torch.equal(kept.get_classifier().weight, model.head.weight)
    assert not torch.equal(dropped.get_classifier().weight, model.head.weight)  # timm's pitfall, documented


def test_run_directory_overwrite_and_source_untouched(tmp_path):
    run = tmp_path / "run"
    EmbeddingModel("test_resnet", embedding_dim=8, in_chans=1).save(run / "model")
    before = _digests(run / "model")
    out = tmp_path / "export"
    export_timm(run, out)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_timm(run, out)
    (out / "notes.txt").write_text("a user's file")
    with pytest.raises(FileExistsError, match="notes.txt"):  # a file the export did not write
        export_timm(str(run), str(out), overwrite=True)
    assert (out / "notes.txt").read_text() == "a user's file"
    (out / "notes.txt").unlink()
    export_timm(str(run), str(out), overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == [".rkd-pml-export", "config.json", "model.safetensors"]
    assert _digests(run / "model") == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_refuses_to_write_into_or_over_the_source(tmp_path):
    EmbeddingModel("test_resnet", embedding_dim=8).save(tmp_path / "run" / "model")
    for target in (tmp_path / "run" / "model", tmp_path / "run" / "model" / "timm", tmp_path / "run", tmp_path):
        with pytest.raises(ValueError, match="source"):
            export_timm(tmp_path / "run", target, overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a directory"):
        export_timm(tmp_path / "run", tmp_path / "file", overwrite=True)
    with pytest.raises(FileNotFoundError, match="run_or_model_dir"):
        export_timm(tmp_path / "nothing", tmp_path / "out")


def test_refuses_families_without_a_single_linear_classifier(tmp_path):
    name = "deit_tiny_distilled_patch16_224"  # two classifiers (head, head_dist)
    EmbeddingModel(name, embedding_dim=8, img_size=32).save(tmp_path / "model")
    with pytest.raises(ValueError, match=name):
        export_timm(tmp_path / "model", tmp_path / "export")
    assert not (tmp_path / "export").exists()
