"""Settings carry through the pipeline: a student and an evaluation take the teacher's data
settings, config.json holds every resolved value, bad splits fail before anything is written."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from rkd_pml.cli import main
from rkd_pml.training import SettingWarning, distill, evaluate_saved, train_teacher
from rkd_pml.training.config import DistillConfig

TINY = ["--epochs", "1", "--iters", "2", "--batch-size", "8", "--m-per-class", "2", "--lr", "1e-3",
        "--lr-milestones", "1", "--no-progress", "--eval-batch-size", "512"]


def image_folder(root, classes=6, per_class=5, size=20, seed=0):
    """``root/<class>/<image>.png``: coloured squares, a different colour per class."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        colour = rng.integers(0, 256, 3)
        for i in range(per_class):
            pixels = np.clip(colour + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)
            os.makedirs(root / f"class{c:02d}", exist_ok=True)
            Image.fromarray(pixels).save(root / f"class{c:02d}" / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def folder_teacher(tmp_path_factory):
    base = tmp_path_factory.mktemp("folder")
    root = image_folder(base / "imgs", classes=8)
    assert main(["train-teacher", "--model", "resnet10t", "--embedding-dim", "8", "--dataset", "folder",
                 "--root", str(root), "--image-size", "32", "--out", str(base / "t"), *TINY]) == 0
    return base


def test_teacher_config_records_every_resolved_value(folder_teacher):
    config = json.loads((folder_teacher / "t" / "config.json").read_text())
    for name in ("dataset", "root", "image_size", "in_chans", "test_transform", "m_per_class", "recall_ks", "val_fraction"):
        assert config[name] is not None, name
    assert (config["dataset"], config["image_size"], config["in_chans"]) == ("folder", 32, 3)
    assert config["root"] == str(folder_teacher / "imgs")
    saved = json.loads((folder_teacher / "t" / "model" / "config.json").read_text())["training_data"]
    assert (saved["dataset"], saved["image_size"], saved["root"]) == ("folder", 32, str(folder_teacher / "imgs"))


def test_distill_and_evaluate_take_the_teachers_data_settings(folder_teacher, capsys):
    out = folder_teacher / "s"
    assert main(["distill", "--teacher", str(folder_teacher / "t"), "--student", "resnet10t", "--embedding-dim", "4",
                 "--out", str(out), *TINY]) == 0
    config = json.loads((out / "config.json").read_text())
    assert (config["dataset"], config["image_size"], config["root"]) == ("folder", 32, str(folder_teacher / "imgs"))
    results = json.loads((out / "results.json").read_text())
    capsys.readouterr()
    assert main(["evaluate", str(out), "--no-progress", "--json", str(folder_teacher / "m.json")]) == 0
    printed = capsys.readouterr().out
    assert "folder test: 20 images of 4 classes at 32 px" in printed
    metrics = json.loads((folder_teacher / "m.json").read_text())
    assert metrics["recall@1"] == pytest.approx(results["best"]["test"]["recall@1"])


def test_a_contradicting_flag_is_honoured_with_one_warning(folder_teacher, tiny):
    with pytest.warns(SettingWarning, match="--image-size 24 differs from 32") as record:
        results = distill(teacher=str(folder_teacher / "t"), student="resnet10t", embedding_dim=4,
                          out=str(folder_teacher / "s24"),
                          **{**tiny, "dataset": None, "image_size": 24, "batch_size": 8, "m_per_class": 2})
    assert len([w for w in record if issubclass(w.category, SettingWarning)]) == 1
    assert results["config"]["image_size"] == 24


def test_evaluate_a_demo_like_folder_evaluates_each_run(folder_teacher, capsys):
    assert main(["evaluate", str(folder_teacher), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "== t" in out and "== s" in out


def test_separate_test_folder(tmp_path, tiny):
    train_root, test_root = image_folder(tmp_path / "train", 4), image_folder(tmp_path / "test", 3, seed=1)
    results = train_teacher(model="resnet10t", embedding_dim=4, root=str(train_root), test_root=str(test_root),
                            out=str(tmp_path / "t"),
                            **{**tiny, "dataset": "folder", "image_size": 16, "batch_size": 8, "m_per_class": 2})
    assert results["config"]["test_root"] == str(test_root)
    metrics = evaluate_saved(tmp_path / "t", progress=False)  # the test folder comes with the model
    assert metrics["recall@1"] == pytest.approx(results["best"]["test"]["recall@1"])


@pytest.mark.parametrize("overrides, match", [
    (dict(m_per_class=8, batch_size=8), "more than the 5 training images of the smallest class"),
    (dict(val_fraction=0.5), "both sides need at least 2 classes"),
    (dict(test_root="__one_class__"), "at least 2 class folders"),
])
def test_bad_splits_fail_before_the_run_directory_exists(tmp_path, tiny, overrides, match):
    root = image_folder(tmp_path / "imgs", classes=4)
    if overrides.get("test_root") == "__one_class__":
        overrides["test_root"] = str(image_folder(tmp_path / "one", classes=1))
    with pytest.raises(ValueError, match=match):
        train_teacher(model="resnet10t", embedding_dim=4, root=str(root), out=str(tmp_path / "t"),
                      **{**tiny, "dataset": "folder", "image_size": 16, "batch_size": 4, "m_per_class": 2, **overrides})
    assert not (tmp_path / "t").exists()


def test_model_selection_uses_a_validation_split_where_the_data_allows(tmp_path, omniglot_zip, tiny):
    results = train_teacher(model="resnet10t", embedding_dim=4, root=omniglot_zip, out=str(tmp_path / "t"),
                            **{**tiny, "dataset": "omniglot"})
    assert results["config"]["val_fraction"] == 0.2 and results["selection_split"] == "val"
    assert results["test_selected"]["test"]["recall@1"] >= results["best"]["test"]["recall@1"]
    record = json.loads((tmp_path / "t" / "metrics.jsonl").read_text().splitlines()[0])
    assert {"triplet", "loss", "lr", "step_seconds", "val", "test"} <= set(record)


def test_digits_has_too_few_classes_for_validation(tmp_path, tiny):
    results = train_teacher(model="resnet10t", embedding_dim=4, out=str(tmp_path / "t"), **tiny)
    assert results["config"]["val_fraction"] == 0.0 and results["selection_split"] == "test"


def test_a_resumed_run_config_must_hold_every_setting(teacher_dir, tmp_path):
    with open(os.path.join(teacher_dir, "config.json")) as f:
        config = json.load(f)
    del config["margin"]
    from rkd_pml.training.config import config_from_dict

    with pytest.raises(ValueError, match="lacks the setting 'margin'"):
        config_from_dict(config, "x/config.json")
    with pytest.raises(ValueError, match="l2_normalize must be true or false"):
        config_from_dict({**config, "margin": 0.2, "l2_normalize": "false"}, "x/config.json")


@pytest.mark.parametrize("changes, match", [
    (dict(lr=float("nan")), "lr must be a finite number"), (dict(lr_gamma=0.0), "lr_gamma"),
    (dict(loss_options={"angle_weight": -1.0}), "angle_weight"),
    (dict(loss_options={"distance_weight": float("inf")}), "distance_weight"),
    (dict(recall_ks=(2, 4)), "must include 1"), (dict(loss="darkrank", loss_options={"darkrank_list_length": 0}), "darkrank_list_length"),
])
def test_settings_that_would_train_wrong_are_refused(changes, match):
    with pytest.raises(ValueError, match=match):
        DistillConfig(teacher="t", **changes).validate()


def test_a_model_that_cannot_take_the_image_size_fails_before_the_run(teacher_dir, tmp_path, tiny):
    # a ViT's patch grid is fixed by its image size: 16 px images do not fit vit_tiny's 224
    with pytest.raises(ValueError, match="the student vit_tiny_patch16_224 cannot take 3x16x16 images"):
        distill(teacher=teacher_dir, student="vit_tiny_patch16_224", embedding_dim=4, out=str(tmp_path / "s"), **tiny)
    assert not (tmp_path / "s").exists()


def test_batch_of_one_and_diverged_models_are_clear_errors(tmp_path, tiny):
    import torch

    from rkd_pml.evaluation import embed

    with pytest.raises(ValueError, match="batch_size must be at least 2"):
        DistillConfig(teacher="t", batch_size=1, m_per_class=1).validate()
    model = torch.nn.Linear(4, 2)
    with torch.no_grad():
        model.weight.fill_(float("nan"))
    data = [(torch.ones(4), 0), (torch.ones(4), 1)]
    with pytest.raises(FloatingPointError, match="non-finite embeddings"):
        embed(model, data, progress=False)


def test_a_corrupt_image_is_found_before_the_run(tmp_path, tiny):
    root = image_folder(tmp_path / "imgs", classes=4)
    (root / "class03" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ValueError, match=r"class03/2\.png: not a readable image"):
        train_teacher(model="resnet10t", embedding_dim=4, root=str(root), out=str(tmp_path / "t"),
                      **{**tiny, "dataset": "folder", "batch_size": 4, "m_per_class": 2})
    assert not (tmp_path / "t").exists()


def test_tensorboard_gets_the_logged_scalars(teacher_dir, tmp_path, tiny):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    distill(teacher=teacher_dir, student="resnet10t", embedding_dim=4, tensorboard=True, out=str(tmp_path / "s"), **tiny)
    events = EventAccumulator(str(tmp_path / "s" / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss/rkd_distance", "loss/rkd_angle", "loss/loss", "lr", "step_seconds", "test/recall@1"} <= tags
    record = json.loads((tmp_path / "s" / "metrics.jsonl").read_text().splitlines()[0])
    assert events.Scalars("loss/rkd_angle")[0].value == pytest.approx(record["rkd_angle"], rel=1e-6)


def test_another_data_set_does_not_inherit_the_recorded_roots(tmp_path):
    """distill, teacher-cache and evaluate fill unset data settings from the teacher's record;
    the roots say where the teacher's own data set lives, so a --dataset naming another one
    must not pick them up (it would read the omniglot archive as a folder data set)."""
    import warnings

    from rkd_pml.data.settings import resolve_data_settings
    from rkd_pml.training.config import TrainConfig

    recorded = {"dataset": "omniglot", "root": str(tmp_path / "omniglot.zip"), "test_root": None,
                "image_size": 32, "in_chans": 1, "test_transform": "paper"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        other = resolve_data_settings(TrainConfig(dataset="folder"), recorded, "the teacher T")
        same = resolve_data_settings(TrainConfig(dataset="omniglot"), recorded, "the teacher T")
        unset = resolve_data_settings(TrainConfig(), recorded, "the teacher T")
    assert other.root is None and (other.dataset, other.image_size, other.in_chans) == ("folder", 32, 1)
    assert same.root == recorded["root"] and unset.root == recorded["root"] and unset.dataset == "omniglot"
