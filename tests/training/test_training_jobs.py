"""The Python workflow end to end at tiny size: teacher, baseline, distillation, resume."""

import json
from pathlib import Path

import pytest
import torch

from rkd_pml.training import (
    DistillConfig,
    TrainingInterrupted,
    distill,
    evaluate_saved,
    load_checkpoint,
    request_stop,
    train_baseline,
    train_teacher,
)
from rkd_pml.training.objective import build_objective


def _assert_run_dir(out: Path, epochs: int):
    for name in ("config.json", "metrics.jsonl", "results.json", "recall.png",
                 "checkpoints/last.pt", "checkpoints/best.pt", "model/model.safetensors"):
        assert (out / name).is_file(), name
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, epochs + 1))
    assert all("recall@1" in r["test"] and r["loss"] >= 0 for r in records)
    from rkd_pml.files import is_temporary

    assert not [p for p in out.rglob("*") if is_temporary(p.name)]


def test_teacher_run_directory_and_results(teacher_dir):
    out = Path(teacher_dir)
    _assert_run_dir(out, 1)
    results = json.loads((out / "results.json").read_text())
    assert results["job"] == "train-teacher" and results["best_epoch"] == 1
    assert set(results["best"]["test"]) >= {"recall@1", "recall@2", "recall@4", "recall@8"}
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "resnet10t" and config["l2_normalize"] is True and config["margin"] == 0.2


def test_distill_returns_results_and_evaluates(teacher_dir, tmp_path, tiny):
    results = distill(teacher=teacher_dir, student="resnet10t", embedding_dim=4, out=str(tmp_path / "s"), **tiny)
    _assert_run_dir(tmp_path / "s", 1)
    assert 0.0 <= results["best"]["test"]["recall@1"] <= 1.0
    assert results["teacher_dir"] == teacher_dir
    metrics = evaluate_saved(tmp_path / "s", dataset="digits", image_size=16, progress=False)
    # the saved model is the best epoch's: evaluating it again gives the same Recall@K
    assert metrics["recall@1"] == pytest.approx(results["best"]["test"]["recall@1"])
    on_train = evaluate_saved(tmp_path / "s" / "model", dataset="digits", image_size=16, split="train",
                              ks=(1,), progress=False)
    assert set(on_train) >= {"recall@1"} and "recall@2" not in on_train


def test_no_overwrite_unless_asked(teacher_dir, tmp_path, tiny):
    out = tmp_path / "s"
    distill(teacher=teacher_dir, student="resnet10t", embedding_dim=4, out=str(out), **tiny)
    before = (out / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(FileExistsError, match="--overwrite"):
        distill(teacher=teacher_dir, student="resnet10t", embedding_dim=4, out=str(out), **tiny)
    assert (out / "checkpoints" / "last.pt").read_bytes() == before
    distill(teacher=teacher_dir, student="resnet10t", embedding_dim=4, out=str(out), overwrite=True,
            **{**tiny, "seed": 1})
    assert (out / "checkpoints" / "last.pt").read_bytes() != before


def _same_state(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(teacher_dir, tmp_path, tiny):
    settings = dict(teacher=teacher_dir, student="resnet10t", embedding_dim=4, **{**tiny, "lr_milestones": (1,)})
    distill(out=str(tmp_path / "straight"), **{**settings, "epochs": 2})
    distill(out=str(tmp_path / "resumed"), **{**settings, "epochs": 1})
    distill(out=str(tmp_path / "resumed"), resume=True, **{**settings, "epochs": 2})
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    _same_state(a["model"], b["model"])
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    for k in a["optimizer"]["state"]:
        _same_state(a["optimizer"]["state"][k], b["optimizer"]["state"][k])
    assert a["scheduler"] == b["scheduler"]
    lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]


class _StopAfter(torch.nn.Module):
    """RKD that asks the loop to stop after ``n`` calls (a SIGTERM in the middle of an epoch)."""

    def __init__(self, n=None):
        super().__init__()
        from rkd_pml import RKDLoss

        self.loss, self.n, self.calls = RKDLoss(), n, 0

    def forward(self, emb, labels=None, indices_tuple=None, ref_emb=None):
        self.calls += 1
        if self.n is not None and self.calls == self.n:
            request_stop()
        return self.loss(emb, labels, indices_tuple, ref_emb=ref_emb)


def test_stop_mid_epoch_then_resume_matches(teacher_dir, tmp_path, tiny):
    settings = dict(teacher=teacher_dir, student="resnet10t", embedding_dim=4, **{**tiny, "iterations_per_epoch": 4})
    distill(out=str(tmp_path / "straight"), loss=_StopAfter(), **settings)
    with pytest.raises(TrainingInterrupted, match="--resume"):
        distill(out=str(tmp_path / "stopped"), loss=_StopAfter(2), **settings)
    ckpt = load_checkpoint(tmp_path / "stopped" / "checkpoints" / "last.pt")
    assert (ckpt["loop"]["epoch"], ckpt["loop"]["iteration"]) == (0, 2)
    distill(out=str(tmp_path / "stopped"), loss=_StopAfter(), resume=True, **settings)
    _same_state(
        load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")["model"],
        load_checkpoint(tmp_path / "stopped" / "checkpoints" / "last.pt")["model"],
    )


def test_resume_refuses_changed_settings(teacher_dir, tmp_path, tiny):
    settings = dict(teacher=teacher_dir, student="resnet10t", embedding_dim=4, **tiny)
    distill(out=str(tmp_path / "s"), **settings)
    with pytest.raises(ValueError, match="lr: 0.001 -> 0.01"):
        distill(out=str(tmp_path / "s"), resume=True, **{**settings, "lr": 1e-2})


def test_baseline_and_validation_split(tmp_path, tiny):
    # digits: 5 training classes, 2 of them held out (a validation split needs 2 or more)
    results = train_baseline(model="resnet10t", embedding_dim=4, out=str(tmp_path / "b"), val_fraction=0.4,
                             **{**tiny, "batch_size": 12, "m_per_class": 4})
    assert results["selection_split"] == "val"
    assert set(results["best"]) == {"val", "test"}
    record = json.loads((tmp_path / "b" / "metrics.jsonl").read_text().splitlines()[0])
    assert "recall@1" in record["val"]


@pytest.mark.parametrize(
    "loss, expected",
    [("rkd-a", {"rkd_angle": (0.0, 2.0)}), ("rkd-d", {"rkd_distance": (1.0, 0.0)}),
     ("rkd", {"rkd_distance": (1.0, 0.0), "rkd_angle": (0.0, 2.0)})],
)
def test_loss_names(loss, expected):
    # RKD-DA is logged as its two terms: each term carries its own weight, their sum is RKD-DA
    objective = build_objective(DistillConfig(teacher="t", loss=loss), student_dim=4, teacher_dim=8)
    got = {name: (t.distance_weight, t.angle_weight) for name, t in objective.distill_terms.items()}
    assert got == expected
    assert objective.metric_loss is None


def test_triplet_name_and_extra_student_triplet():
    objective = build_objective(DistillConfig(loss="triplet"), student_dim=4)
    assert not objective.distill_terms and objective.metric_loss is not None
    objective = build_objective(DistillConfig(teacher="t", student_metric_loss="triplet", student_metric_weight=0.5),
                                student_dim=4, teacher_dim=8)
    assert objective.distill_terms and objective.metric_weight == 0.5
    with pytest.raises(ValueError, match="unknown distillation loss"):
        build_objective(DistillConfig(teacher="t", loss="nope"), student_dim=4, teacher_dim=8)
    with pytest.raises(ValueError, match="unknown distillation loss"):
        DistillConfig(teacher="t", loss="nope").validate()


def test_loss_parameters_are_trained_and_checkpointed(teacher_dir, tmp_path, tiny):
    fitnet = pytest.importorskip("rkd_pml.losses.fitnet")
    loss = fitnet.FitNetEmbeddingLoss(student_dim=4, teacher_dim=8)
    before = loss.regressor.weight.detach().clone()
    distill(teacher=teacher_dir, student="resnet10t", embedding_dim=4, loss=loss, out=str(tmp_path / "f"), **tiny)
    assert not torch.equal(before, loss.regressor.weight.detach())
    ckpt = load_checkpoint(tmp_path / "f" / "checkpoints" / "last.pt")
    assert torch.equal(ckpt["objective"]["distill_terms.distill.regressor.weight"], loss.regressor.weight.detach())
    # by name, the widths are filled in from the models
    objective = build_objective(DistillConfig(teacher="t", loss="fitnet"), student_dim=4, teacher_dim=8)
    assert tuple(objective.distill_terms["distill"].regressor.weight.shape) == (8, 4)


def test_distill_on_omniglot(teacher_dir, tmp_path, omniglot_zip, tiny):
    results = distill(
        teacher=teacher_dir, student="resnet10t", embedding_dim=4, out=str(tmp_path / "o"),
        **{**tiny, "dataset": "omniglot", "root": omniglot_zip},
    )
    assert results["best"]["test"]["recall@1"] > 0
    assert json.loads((tmp_path / "o" / "config.json").read_text())["root"] == omniglot_zip


def test_teacher_is_not_changed_by_distillation(teacher_dir, tmp_path, tiny):
    from rkd_pml.models import EmbeddingModel

    before = EmbeddingModel.load(Path(teacher_dir) / "model").state_dict()
    distill(teacher=teacher_dir, student="resnet10t", embedding_dim=4, out=str(tmp_path / "s"), **tiny)
    _same_state(before, EmbeddingModel.load(Path(teacher_dir) / "model").state_dict())


def test_teacher_must_be_a_saved_model(tmp_path, tiny):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        distill(teacher=str(tmp_path / "none"), out=str(tmp_path / "s"), **tiny)
    with pytest.raises(ValueError, match="needs a trained teacher"):
        distill(out=str(tmp_path / "s"), **tiny)
    assert not (tmp_path / "s").exists()  # nothing is created when the inputs are wrong
    with pytest.raises(ValueError, match="unknown timm model"):
        train_teacher(model="resnet999", out=str(tmp_path / "t"), **tiny)
    assert not (tmp_path / "t").exists()
