"""Mixed precision, channels-last and compiled models in the training jobs."""

import json
import warnings

import pytest
import torch

from rkd_pml.training import distill, load_checkpoint
from rkd_pml.training import speed


def _same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_fp16_on_cpu_is_refused_before_anything_is_written(teacher_dir, tmp_path, tiny):
    with pytest.raises(ValueError, match="--precision fp16 needs a CUDA device"):
        distill(teacher=teacher_dir, student="resnet10t", embedding_dim=4, precision="fp16", out=str(tmp_path / "s"), **tiny)
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_channels_last_resume(teacher_dir, tmp_path, tiny, precision):
    # fp32: the resumed run ends with exactly the weights of the uninterrupted one. bf16 autocast
    # on this CPU build is not bitwise repeatable run to run (two identical runs can differ from
    # their second optimizer step on, and a step can be skipped for a non-finite gradient), so
    # there the bookkeeping must match and the weights must be far closer to the uninterrupted
    # run's than epoch 2 moved them.
    settings = dict(teacher=teacher_dir, student="resnet10t", embedding_dim=4, precision=precision,
                    channels_last=True, **{**tiny, "lr_milestones": (1,)})
    distill(out=str(tmp_path / "straight"), **{**settings, "epochs": 2})
    distill(out=str(tmp_path / "resumed"), **{**settings, "epochs": 1})
    after_epoch_1 = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["model"]
    distill(out=str(tmp_path / "resumed"), resume=True, **{**settings, "epochs": 2})
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    assert a["scaler"] == b["scaler"] and a["loop"]["epoch"] == b["loop"]["epoch"] == 2
    assert a["scheduler"] == b["scheduler"]
    if precision == "fp32":
        _same_weights(a["model"], b["model"])
        return
    skipped = {run: sum(r.get("skipped_steps", 0) for r in map(json.loads, (tmp_path / run / "metrics.jsonl")
                                                              .read_text().splitlines()))
               for run in ("straight", "resumed")}
    for run, c in (("straight", a), ("resumed", b)):  # 6 steps, less the ones each run logged as skipped
        taken = 6 - skipped[run]
        assert {float(s["step"]) for s in c["optimizer"]["state"].values()} == ({float(taken)} if taken else set())

    def largest(x, y):
        return max(float((x[k].float() - y[k].float()).abs().max()) for k in x if x[k].is_floating_point())

    moved = largest(a["model"], after_epoch_1)
    assert moved > 0
    if not any(skipped.values()):  # a skipped step makes the two runs different trainings
        assert largest(a["model"], b["model"]) <= 0.5 * moved


def test_bf16_changes_the_arithmetic_but_trains(teacher_dir, tmp_path, tiny):
    fp32 = distill(teacher=teacher_dir, student="resnet10t", embedding_dim=4, out=str(tmp_path / "a"), **tiny)
    bf16 = distill(teacher=teacher_dir, student="resnet10t", embedding_dim=4, precision="bf16", out=str(tmp_path / "b"), **tiny)
    a = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["model"]
    assert any(not torch.equal(a[k], b[k]) for k in a)  # autocast really ran in bf16
    assert abs(fp32["best"]["test"]["recall@1"] - bf16["best"]["test"]["recall@1"]) < 0.2


def test_a_model_that_fails_to_compile_falls_back_once(monkeypatch):
    calls = []

    def broken_compile(module):
        def run(*args):
            calls.append(1)
            raise RuntimeError("backend unavailable")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    model = torch.nn.Linear(3, 2)
    forward = speed.prepare_forward(model, channels_last=False, compile=True, name="student")
    x = torch.randn(4, 3)
    with pytest.warns(UserWarning, match="torch.compile of the student failed"):
        out = forward(x)
    assert torch.equal(out, model(x))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        forward(x)  # eager from now on, silently
    assert len(calls) == 1


def test_autocast_contexts():
    assert speed.autocast("fp32", torch.device("cpu")).__class__.__name__ == "nullcontext"
    with speed.autocast("bf16", torch.device("cpu")):
        y = torch.nn.Linear(4, 4)(torch.randn(2, 4))
    assert y.dtype == torch.bfloat16
    assert not speed.make_scaler("bf16", torch.device("cpu")).is_enabled()


def test_worker_processes_do_not_change_the_weights_and_resume_stays_exact(teacher_dir, tmp_path, tiny):
    # each image's augmentation is seeded by (seed, epoch, batch, row): the same weights with or
    # without workers (persistent across epochs), and after a resume
    settings = dict(teacher=teacher_dir, student="resnet10t", embedding_dim=4,
                    **{**tiny, "lr_milestones": (1,), "train_transform": "paper"})
    distill(out=str(tmp_path / "main"), **{**settings, "epochs": 2})
    distill(out=str(tmp_path / "workers"), num_workers=2, **{**settings, "epochs": 1})
    distill(out=str(tmp_path / "workers"), num_workers=2, resume=True, **{**settings, "epochs": 2})
    _same_weights(load_checkpoint(tmp_path / "main" / "checkpoints" / "last.pt")["model"],
                  load_checkpoint(tmp_path / "workers" / "checkpoints" / "last.pt")["model"])
