"""``rkd-pml evaluate RUN --gallery-model RUN2``: asymmetric Recall@K beside the symmetric one.

References: the query model's symmetric figures are what its run recorded when it was trained
(``results.json``); the asymmetric ones a brute-force search written here over embeddings made
here, each model on the digits test images with the preprocessing it records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rkd_pml.cli import main
from rkd_pml.data import load_dataset
from rkd_pml.models import EmbeddingModel

KS = (1, 2, 4, 8)


def _saved_gallery(folder: Path, embedding_dim: int = 8) -> Path:
    """An untrained grey-input model recorded as trained on digits at 24 px, timm transform."""
    torch.manual_seed(1)
    model = EmbeddingModel("resnet10t", embedding_dim=embedding_dim, in_chans=1, l2_normalize=False)
    model.training_data = {"dataset": "digits", "image_size": 24, "in_chans": 1, "precision": "fp32",
                           "recall_ks": [1, 2, 4, 8], "root": None, "test_root": None,
                           "test_transform": "timm", "train_transform": "paper"}
    return model.save(folder)


def _test_embeddings(folder: Path, image_size: int, in_chans: int, test_transform: str) -> tuple[torch.Tensor, torch.Tensor]:
    model = EmbeddingModel.load(folder).eval()
    config = {k: v for k, v in model.data_config.items() if k != "input_size"}
    _, test = load_dataset("digits", image_size=image_size, in_chans=in_chans, data_config=config,
                           test_transform=test_transform, train_transform="none")
    images = torch.stack([test[i][0] for i in range(len(test))])
    assert images.shape[1:] == (in_chans, image_size, image_size)
    with torch.no_grad():
        return model(images), torch.as_tensor(test.labels)


def _brute_asymmetric_recall(queries, gallery, labels, k):
    d = torch.cdist(queries.double(), gallery.double())
    d.fill_diagonal_(float("inf"))
    nearest = d.topk(k, dim=1, largest=False).indices
    return (labels[nearest] == labels[:, None]).any(dim=1).double().mean().item()


def test_json_holds_both_and_each_model_has_its_own_preprocessing(teacher_dir, tmp_path, capsys):
    gallery_dir = _saved_gallery(tmp_path / "gallery")
    assert main(["evaluate", teacher_dir, "--gallery-model", str(gallery_dir), "--no-progress", "--json", "-"]) == 0
    out, err = capsys.readouterr()
    metrics = json.loads(out)  # stdout: the JSON and nothing else
    recorded = json.loads((Path(teacher_dir) / "results.json").read_text())["best"]["test"]
    for k in KS:
        assert metrics[f"recall@{k}"] == pytest.approx(recorded[f"recall@{k}"])
    queries, labels = _test_embeddings(Path(teacher_dir) / "model", 16, 3, "paper")
    gallery, gallery_labels = _test_embeddings(gallery_dir, 24, 1, "timm")
    assert torch.equal(labels, gallery_labels)
    for k in KS:
        assert metrics[f"asymmetric_recall@{k}"] == pytest.approx(
            _brute_asymmetric_recall(queries, gallery, labels, k), abs=1e-6)
    assert "at 24 px, 1 channels, timm test transform" in err and "as the gallery" in err


def test_table_prints_both_and_self_gallery_equals_symmetric(teacher_dir, capsys):
    assert main(["evaluate", teacher_dir, "--gallery-model", teacher_dir, "--no-progress"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    rows = {row[0]: float(row[1]) for row in rows if len(row) == 2}  # the table, not the log lines
    for name in ("recall@1", "recall@8", "precision_at_1", "r_precision", "mean_average_precision_at_r"):
        assert rows[f"asymmetric_{name}"] == rows[name]


def test_width_mismatch_is_one_line_naming_both_widths(teacher_dir, tmp_path, capsys):
    gallery_dir = _saved_gallery(tmp_path / "wide", embedding_dim=16)
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", teacher_dir, "--gallery-model", str(gallery_dir), "--no-progress"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if line.startswith("rkd-pml: error:"))
    assert "--gallery-model" in line and "16-d" in line and "8-d" in line
    assert "evaluating" not in err  # refused before any data was read


def test_gallery_that_is_not_a_model_is_named(teacher_dir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", teacher_dir, "--gallery-model", str(tmp_path / "empty"), "--no-progress"])
    assert exc.value.code == 2
    assert "--gallery-model" in capsys.readouterr().err


def test_folder_of_runs_each_against_the_gallery(teacher_dir, tmp_path, capsys):
    import shutil

    for name in ("a", "b"):
        shutil.copytree(teacher_dir, tmp_path / "runs" / name)
    assert main(["evaluate", str(tmp_path / "runs"), "--gallery-model", teacher_dir, "--no-progress", "--json", "-"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert sorted(results) == ["a", "b"]
    for metrics in results.values():  # copies of the gallery model: asymmetric = symmetric
        assert metrics["asymmetric_recall@1"] == metrics["recall@1"]
    # a gallery that is not a model is the command's error, not one per run
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", str(tmp_path / "runs"), "--gallery-model", str(tmp_path / "nowhere"), "--no-progress"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--gallery-model" in err and "could not be evaluated" not in err
