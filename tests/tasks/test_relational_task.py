"""RelationalDistillationTask against independent references.

References: the official RKD formulation (transcribed below, rescaled to the mean over
distinct pairs / triplets), features computed by hand with timm's
``forward_features``/``forward_head``, the KL divergence written out, and timm's own
``FeatureDistillationTask``/``LogitDistillationTask`` on the same tiny models.
"""

from __future__ import annotations

import copy

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.task import DistillationTeacher, FeatureDistillationTask, LogitDistillationTask

from rkd_pml import EmbeddingModel, RKDLoss, freeze_teacher
from rkd_pml.tasks import EmbeddingModelTeacher, RelationalDistillationTask

N, CLASSES, SIZE = 8, 5, 32


def _official_pdist(e):
    sq = e.pow(2).sum(dim=1)
    d = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * e @ e.t()).clamp(min=1e-12).sqrt().clone()
    d[range(len(e)), range(len(e))] = 0
    return d / d[d > 0].mean()


def official_distance(student, teacher):
    """The official RKD-D: smooth L1 mean over all N^2 entries of the normalised distances."""
    return F.smooth_l1_loss(_official_pdist(student), _official_pdist(teacher))


def official_angle(student, teacher):
    """The official RKD-A: smooth L1 mean over all N^3 cosines (vertex = first index)."""
    def cosines(e):
        diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)
        return torch.bmm(diff, diff.transpose(1, 2)).view(-1)

    return F.smooth_l1_loss(cosines(student), cosines(teacher))


def _models(in_chans: int = 3):
    torch.manual_seed(0)
    student = timm.create_model("test_resnet", num_classes=CLASSES, in_chans=in_chans)
    teacher = timm.create_model("resnet10t", num_classes=CLASSES, in_chans=in_chans)
    teacher.pretrained_cfg = {**teacher.pretrained_cfg, "mean": student.pretrained_cfg["mean"],
                              "std": student.pretrained_cfg["std"]}  # no re-normalisation unless a test sets it
    return student, teacher


def _batch(in_chans: int = 3):
    g = torch.Generator().manual_seed(1)
    return torch.randn(N, in_chans, SIZE, SIZE, generator=g), torch.randint(0, CLASSES, (N,), generator=g)


def _pooled(model, x):
    """Pooled pre-logit features (B, F) and logits (B, K) of a timm model, by hand."""
    feature_map = model.forward_features(x)
    return model.forward_head(feature_map, pre_logits=True), model.forward_head(feature_map)


def test_defaults_and_output_keys():
    student, teacher = _models()
    task = RelationalDistillationTask(student, teacher, verbose=False)
    assert (task.distance_weight, task.angle_weight, task.kd_loss_weight) == (25.0, 50.0, 0.0)
    out = task(*_batch())
    assert set(out) == {"loss", "output", "task_loss", "rkd_distance_loss", "rkd_angle_loss"}
    assert out["output"].shape == (N, CLASSES)
    with_kd = RelationalDistillationTask(student, teacher, kd_loss_weight=0.5, verbose=False)
    assert "kd_loss" in with_kd(*_batch())


def test_teacher_frozen_eval_and_without_gradient():
    student, teacher = _models()
    task = RelationalDistillationTask(student, teacher, kd_loss_weight=1.0, verbose=False)
    task.train()
    assert student.training and not teacher.training
    assert not any(m.training for m in teacher.modules())
    assert not any(p.requires_grad for p in teacher.parameters())
    stats = copy.deepcopy(teacher.state_dict())
    out = task(*_batch())
    out["loss"].backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    for k, v in teacher.state_dict().items():  # BatchNorm running statistics untouched
        assert torch.equal(v, stats[k]), k
    assert list(task.get_trainable_module().parameters()) == list(student.parameters())


def test_rkd_terms_are_rkd_on_the_pooled_features():
    student, teacher = _models()
    task = RelationalDistillationTask(student, teacher, kd_loss_weight=1.0, temperature=3.0, verbose=False)
    task.train()
    x, y = _batch()
    out = task(x, y)
    s_feat, s_logits = _pooled(student, x)
    with torch.no_grad():
        teacher.eval()
        t_feat, t_logits = _pooled(teacher, x)
    # the official formulation averages over all N^2 / N^3 entries, diagonal included
    d_ref = official_distance(s_feat, t_feat) * N / (N - 1)
    a_ref = official_angle(s_feat, t_feat) * N * N / ((N - 1) * (N - 2))
    assert out["rkd_distance_loss"].item() == pytest.approx(d_ref.item(), rel=1e-4)
    assert out["rkd_angle_loss"].item() == pytest.approx(a_ref.item(), rel=1e-4)
    rkd = RKDLoss(distance_weight=25, angle_weight=50)(s_feat, ref_emb=t_feat)
    weighted = 25 * out["rkd_distance_loss"] + 50 * out["rkd_angle_loss"]
    assert weighted.item() == pytest.approx(rkd.item(), rel=1e-5)
    p_t = F.softmax(t_logits / 3.0, dim=1)
    kl = (p_t * (p_t.log() - F.log_softmax(s_logits / 3.0, dim=1))).sum(1).mean() * 9.0
    assert out["kd_loss"].item() == pytest.approx(kl.item(), rel=1e-4)
    ce = F.cross_entropy(s_logits, y)
    assert out["task_loss"].item() == pytest.approx(ce.item(), rel=1e-6)
    assert out["loss"].item() == pytest.approx((ce + rkd + kl).item(), rel=1e-5)


def test_matches_timm_feature_distillation_when_rkd_and_kd_are_off():
    student, teacher = _models()
    timm_student = copy.deepcopy(student)
    ours = RelationalDistillationTask(student, teacher, distance_weight=0, angle_weight=0, verbose=False)
    theirs = FeatureDistillationTask(timm_student, copy.deepcopy(teacher), distill_loss_weight=0.0, verbose=False)
    ours.train(), theirs.train()
    x, y = _batch()
    a, b = ours(x, y), theirs(x, y)
    torch.testing.assert_close(a["output"], b["output"])
    torch.testing.assert_close(a["task_loss"], b["task_loss"])
    torch.testing.assert_close(a["loss"], b["loss"])
    a["loss"].backward(), b["loss"].backward()
    for p, q in zip(student.parameters(), timm_student.parameters()):
        torch.testing.assert_close(p.grad, q.grad)
    # same structure: the student sits where timm's tasks keep it
    assert type(ours.get_trainable_module()) is type(theirs.get_trainable_module())
    assert ours.get_eval_model() is student and theirs.get_eval_model() is timm_student


def test_kd_term_matches_timm_logit_distillation():
    student, teacher = _models()
    ours = RelationalDistillationTask(student, teacher, kd_loss_weight=1.0, temperature=4.0, verbose=False)
    theirs = LogitDistillationTask(student, teacher, distill_loss_weight=1.0, temperature=4.0, verbose=False)
    ours.train(), theirs.train()
    x, y = _batch()
    torch.testing.assert_close(ours(x, y)["kd_loss"], theirs(x, y)["kd_loss"])


def test_renormalises_teacher_input_when_mean_std_differ():
    student, teacher = _models()
    student.pretrained_cfg = {**student.pretrained_cfg, "mean": (0.5,) * 3, "std": (0.5,) * 3}
    teacher.pretrained_cfg = {**teacher.pretrained_cfg, "mean": (0.2, 0.3, 0.4), "std": (0.1, 0.2, 0.3)}
    task = RelationalDistillationTask(student, teacher, verbose=False)
    x, _ = _batch()
    raw = x * 0.5 + 0.5
    mean, std = torch.tensor([0.2, 0.3, 0.4]).view(1, 3, 1, 1), torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected, _ = _pooled(teacher.eval(), (raw - mean) / std)
        unchanged, _ = _pooled(teacher, x)
    features, _ = task.teacher_outputs(x)
    torch.testing.assert_close(features, expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(features, unchanged, atol=1e-3)
    # same statistics: the input is passed unchanged
    teacher.pretrained_cfg = dict(student.pretrained_cfg)
    same = RelationalDistillationTask(student, teacher, verbose=False)
    torch.testing.assert_close(same.teacher_outputs(x)[0], unchanged)


def test_grey_student_and_teacher_with_timm_default_stats():
    # timm keeps three mean/std values for in_chans=1 models (0.5 for test_resnet, ImageNet's
    # for resnet10t); both sides use their average, and the grey input stays one channel
    torch.manual_seed(0)
    student = timm.create_model("test_resnet", num_classes=CLASSES, in_chans=1)
    teacher = timm.create_model("resnet10t", num_classes=CLASSES, in_chans=1).eval()
    task = RelationalDistillationTask(student, teacher, verbose=False)
    assert task.student_mean.shape == (1, 1, 1, 1)
    x, y = _batch(in_chans=1)
    mean, std = sum((0.485, 0.456, 0.406)) / 3, sum((0.229, 0.224, 0.225)) / 3
    with torch.no_grad():
        expected, _ = _pooled(teacher, (x * 0.5 + 0.5 - mean) / std)
    torch.testing.assert_close(task.teacher_outputs(x)[0], expected, rtol=1e-4, atol=1e-5)
    assert torch.isfinite(task(x, y)["loss"])


def test_embedding_model_teacher_object_directory_and_run_directory(tmp_path):
    student, _ = _models(in_chans=1)
    student.pretrained_cfg = {**student.pretrained_cfg, "mean": (0.5,), "std": (0.25,)}
    emb = EmbeddingModel("resnet10t", embedding_dim=16, in_chans=3, l2_normalize=True).eval()
    x, y = _batch(in_chans=1)
    raw = x * 0.25 + 0.5  # the unnormalised images the student's input came from
    with torch.no_grad():
        expected = emb(raw)  # EmbeddingModel applies its own mean/std and grey -> RGB
    emb.save(tmp_path / "run" / "model")
    for teacher in (emb, freeze_teacher(emb), tmp_path / "run" / "model", str(tmp_path / "run")):
        task = RelationalDistillationTask(student, teacher, verbose=False)
        assert isinstance(task.teacher, EmbeddingModelTeacher)
        features, _ = task.teacher_outputs(x)
        torch.testing.assert_close(features, expected, rtol=1e-4, atol=1e-5)
        assert features.shape == (N, 16)
        out = task(x, y)
        assert torch.isfinite(out["loss"])
    with pytest.raises(ValueError, match="kd_loss_weight"):
        RelationalDistillationTask(student, emb, kd_loss_weight=1.0, verbose=False)
    with pytest.raises(ValueError, match="teacher_model"):
        RelationalDistillationTask(student, tmp_path, verbose=False)
    with pytest.raises(ValueError, match="neither a timm model name nor a directory"):
        RelationalDistillationTask(student, str(tmp_path / "missing"), verbose=False)


def test_teacher_as_a_local_dir_timm_export(tmp_path):
    """A timm name (here ``local-dir:`` of a timm hub-layout folder) goes to DistillationTeacher."""
    student, teacher = _models()
    timm.models.save_for_hf(teacher, tmp_path / "timm-teacher", safe_serialization=True)
    task = RelationalDistillationTask(student, f"local-dir:{tmp_path / 'timm-teacher'}", verbose=False)
    assert not isinstance(task.teacher, EmbeddingModelTeacher)
    x, _ = _batch()
    with torch.no_grad():
        expected, _ = _pooled(teacher.eval(), x)
    torch.testing.assert_close(task.teacher_outputs(x)[0], expected)


def test_distillation_teacher_is_reused_and_custom_criterion():
    student, teacher = _models()
    wrapped = DistillationTeacher(teacher)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=0.2)
    task = RelationalDistillationTask(student, wrapped, criterion=criterion, verbose=False)
    assert task.teacher is wrapped
    x, y = _batch()
    out = task(x, y)
    s_feat, s_logits = _pooled(student, x)
    assert out["task_loss"].item() == pytest.approx(F.cross_entropy(s_logits, y, label_smoothing=0.2).item())


def test_argument_errors_name_the_argument():
    student, teacher = _models()
    for kwargs, name in ((dict(distance_weight=-1), "distance_weight"), (dict(temperature=0), "temperature"),
                         (dict(kd_loss_weight=-0.1), "kd_loss_weight")):
        with pytest.raises(ValueError, match=name):
            RelationalDistillationTask(student, teacher, verbose=False, **kwargs)
    with pytest.raises(TypeError, match="teacher_model"):
        RelationalDistillationTask(student, 3, verbose=False)
    with pytest.raises(TypeError, match="student_model"):
        RelationalDistillationTask(torch.nn.Linear(2, 2), teacher, verbose=False)


def test_get_eval_model_returns_the_student_through_wrappers():
    student, teacher = _models()
    task = RelationalDistillationTask(student, teacher, verbose=False)
    assert task.get_eval_model() is student
    assert list(task.get_clip_parameters()) == list(student.parameters())
    wrapper = torch.nn.Module()
    wrapper.module = task.trainable_module  # how DDP holds it
    task.trainable_module = wrapper
    assert task.get_eval_model() is student


def test_compile_like_timm_feature_distillation():
    student, teacher = _models()
    task = RelationalDistillationTask(student, teacher, verbose=False)
    task.train()
    x, y = _batch()
    before = task(x, y)["loss"]
    eval_model = task.compile(backend="eager")  # dynamo tracing only: no code generation
    assert task.get_eval_model() is eval_model and eval_model._orig_mod is student
    assert task.teacher._compiled_forward_features is not None
    after = task(x, y)
    torch.testing.assert_close(after["loss"], before)
    after["loss"].backward()
    assert student.fc.weight.grad is not None and all(p.grad is None for p in teacher.parameters())


@pytest.mark.parametrize("name", ["distance_weight", "angle_weight", "task_loss_weight", "kd_loss_weight", "temperature"])
@pytest.mark.parametrize("value", [float("inf"), float("nan"), -1.0, "1"])
def test_non_finite_negative_or_string_weights_are_refused(name, value):
    student, teacher = _models()
    with pytest.raises(ValueError, match=f"^{name} must be a finite"):
        RelationalDistillationTask(student, teacher, verbose=False, **{name: value})


def test_kd_class_count_mismatch_is_refused_at_construction():
    student, _ = _models()
    teacher = timm.create_model("resnet10t", num_classes=CLASSES + 2)  # 7 logits for 5 classes
    with pytest.raises(ValueError, match="teacher_model has 7 classes and student_model 5"):
        RelationalDistillationTask(student, teacher, kd_loss_weight=1.0, verbose=False)
    headless = timm.create_model("resnet10t", num_classes=0)
    with pytest.raises(ValueError, match="teacher_model has no classes"):
        RelationalDistillationTask(student, headless, kd_loss_weight=1.0, verbose=False)
    # without KD the teacher's classes do not matter: RKD relates pooled features only
    task = RelationalDistillationTask(student, teacher, verbose=False)
    assert torch.isfinite(task(*_batch())["loss"])


def test_name_only_teacher_offline_is_one_clear_error(tmp_path, monkeypatch):
    import huggingface_hub.constants

    from rkd_pml.models import PretrainedWeightsError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # nothing cached
    student, _ = _models()
    with pytest.raises(PretrainedWeightsError, match="teacher_model 'resnet10t'.*HF_HUB_OFFLINE.*teacher_pretrained_path"):
        RelationalDistillationTask(student, "resnet10t", verbose=False)


def test_name_only_teacher_from_a_local_weights_file(tmp_path):
    from safetensors.torch import save_file

    student, _ = _models()
    source = timm.create_model("resnet10t", num_classes=CLASSES)
    save_file(source.state_dict(), str(tmp_path / "w.safetensors"))
    task = RelationalDistillationTask(student, "resnet10t", teacher_pretrained_path=str(tmp_path / "w.safetensors"),
                                      kd_loss_weight=1.0, verbose=False)
    torch.testing.assert_close(task.teacher.model.fc.weight, source.fc.weight)
    with pytest.raises(OSError, match="teacher_model 'resnet10t': cannot load its weights"):
        RelationalDistillationTask(student, "resnet10t", teacher_pretrained_path=str(tmp_path / "none.safetensors"),
                                   verbose=False)
