"""The training loop's step: a finite loss whose gradients are not finite skips the optimizer step."""

import json
import math

import pytest
import torch
from torch import nn

from rkd_pml.training import distill, load_checkpoint, train_teacher
from rkd_pml.training import jobs
from rkd_pml.training.speed import gradients_are_finite


def _optimizer(*grads):
    params = [nn.Parameter(torch.zeros(3, dtype=g.dtype if g is not None else torch.float32)) for g in grads]
    for p, g in zip(params, grads):
        p.grad = g
    return torch.optim.SGD(params, lr=0.1)


def test_gradients_are_finite_looks_at_every_gradient():
    assert gradients_are_finite(_optimizer(torch.ones(3), None))
    assert gradients_are_finite(_optimizer(None))
    assert gradients_are_finite(_optimizer(torch.full((3,), 3e38)))  # large but finite
    assert not gradients_are_finite(_optimizer(torch.ones(3), torch.tensor([0.0, math.inf, 0.0])))
    assert not gradients_are_finite(_optimizer(torch.tensor([-math.inf, 0.0, 0.0])))
    assert not gradients_are_finite(_optimizer(torch.tensor([0.0, 0.0, math.nan]), torch.ones(3)))
    assert not gradients_are_finite(_optimizer(torch.ones(3, dtype=torch.bfloat16) * math.nan))


def _poison_gradients(monkeypatch, steps):
    """The student's first parameter gets a NaN gradient in the backward passes numbered ``steps``
    (1-based), as a faulty kernel would give it; the loss itself stays finite."""
    built = jobs.build_model
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        model = built(*args, **kwargs)
        first = next(p for p in model.parameters() if p.requires_grad)

        def hook(grad):
            calls["n"] += 1
            return grad * math.nan if calls["n"] in steps else grad

        first.register_hook(hook)
        return model

    monkeypatch.setattr(jobs, "build_model", poisoned)
    return calls


def test_a_step_with_a_nan_gradient_is_skipped_and_recorded(monkeypatch, teacher_dir, tmp_path, tiny):
    calls = _poison_gradients(monkeypatch, steps={2})
    out = tmp_path / "s"
    distill(teacher=teacher_dir, student="resnet10t", embedding_dim=4, out=str(out), **{**tiny, "iterations_per_epoch": 4})
    assert calls["n"] == 4
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    assert all(bool(torch.isfinite(v).all()) for v in ckpt["model"].values() if v.is_floating_point())
    # Adam counts the steps it took: 3 of the 4 batches
    steps = {float(s["step"]) for s in ckpt["optimizer"]["state"].values()}
    assert steps == {3.0}
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["skipped_steps"] == 1 and math.isfinite(record["loss"])


def test_a_run_without_nan_gradients_records_no_skipped_step(teacher_dir, tmp_path, tiny):
    out = tmp_path / "s"
    distill(teacher=teacher_dir, student="resnet10t", embedding_dim=4, out=str(out), **tiny)
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert "skipped_steps" not in record
    steps = {float(s["step"]) for s in load_checkpoint(out / "checkpoints" / "last.pt")["optimizer"]["state"].values()}
    assert steps == {float(tiny["iterations_per_epoch"])}


def test_nan_gradients_step_after_step_stop_the_run_as_diverged(monkeypatch, tmp_path, tiny):
    _poison_gradients(monkeypatch, steps=set(range(1, 100)))
    with pytest.raises(FloatingPointError, match="non-finite gradients in 5 steps in a row"):
        train_teacher(model="resnet10t", embedding_dim=4, out=str(tmp_path / "t"), **{**tiny, "iterations_per_epoch": 8})
