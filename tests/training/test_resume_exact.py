"""A run stopped in the middle of an epoch and resumed ends with exactly the weights of the
uninterrupted run, for every job: the teacher and the baseline (triplet loss on
distance-weighted triplets: the miner draws random numbers at every step) and distillation."""

import pytest
import torch

from rkd_pml.training import TrainingInterrupted, distill, load_checkpoint, request_stop, train_baseline, train_teacher
from rkd_pml.training import loop

SETTINGS = dict(epochs=2, iterations_per_epoch=3, seed=5, lr=1e-2)


class _Killed(Exception):
    """The process died after a step (SIGKILL): nothing after it was written."""


def _job(name, teacher_dir):
    if name == "teacher":
        return train_teacher, dict(model="resnet10t", embedding_dim=4)
    if name == "baseline":
        return train_baseline, dict(model="resnet10t", embedding_dim=4)
    return distill, dict(teacher=teacher_dir, student="resnet10t", embedding_dim=4)


def _interrupt_after(monkeypatch, steps: int, how: str):
    """Make the loop stop (a SIGTERM: checkpoint then stop) or die (a SIGKILL) after ``steps`` steps."""
    real, calls = loop.train_step, [0]

    def step(*args, **kwargs):
        out = real(*args, **kwargs)
        calls[0] += 1
        if calls[0] == steps:
            if how == "kill":
                raise _Killed()
            request_stop()
        return out

    monkeypatch.setattr(loop, "train_step", step)


@pytest.mark.parametrize("how", ["stop", "kill"])
@pytest.mark.parametrize("job", ["teacher", "baseline", "distill"])
def test_mid_epoch_resume_ends_with_the_uninterrupted_weights(job, how, teacher_dir, tmp_path, tiny, monkeypatch):
    fn, args = _job(job, teacher_dir)
    settings = {**tiny, **SETTINGS, **args}
    fn(out=str(tmp_path / "straight"), **settings)

    stopped = tmp_path / "stopped"
    # stop: after step 2 of epoch 2 (checkpoint written then); kill: after step 2 of epoch 2, the
    # last checkpoint being the one of step 1 (--checkpoint-every 1 would be every step: use 1 here)
    with monkeypatch.context() as m:
        _interrupt_after(m, 5, how)
        with pytest.raises(TrainingInterrupted if how == "stop" else _Killed):
            fn(out=str(stopped), checkpoint_every=1 if how == "kill" else 0, **settings)
    state = load_checkpoint(stopped / "checkpoints" / "last.pt")["loop"]
    assert (state["epoch"], state["iteration"]) == ((1, 2) if how == "stop" else (1, 1)), state

    torch.rand(7)  # whatever the process drew in between must not matter
    fn(out=str(stopped), resume=True, **settings)
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = load_checkpoint(stopped / "checkpoints" / "last.pt")
    assert (a["loop"]["epoch"], b["loop"]["epoch"]) == (2, 2)
    assert a["model"].keys() == b["model"].keys()
    differences = {k: float((a["model"][k].double() - b["model"][k].double()).abs().max())
                   for k in a["model"] if a["model"][k].is_floating_point()}
    assert max(differences.values()) == 0.0, {k: d for k, d in differences.items() if d}


def test_stop_and_resume_messages_name_the_same_position(tmp_path, tiny, monkeypatch, capsys):
    settings = {**tiny, **SETTINGS, "model": "resnet10t", "embedding_dim": 4}
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        _interrupt_after(m, 5, "stop")  # 3 steps per epoch: step 2 of epoch 2 (1 epoch completed)
        with pytest.raises(TrainingInterrupted) as stopped:
            train_teacher(out=str(out), **settings)
    assert "stopped in epoch 2 of 2, after step 2 of 3;" in str(stopped.value)
    capsys.readouterr()
    train_teacher(out=str(out), resume=True, **settings)
    assert f"resuming {out} in epoch 2 of 2, after step 2 of 3\n" in capsys.readouterr().out

    # at an epoch end: the completed epoch, in both messages
    with monkeypatch.context() as m:
        _interrupt_after(m, 3, "stop")  # the last step of epoch 1: the loop stops after the epoch
        with pytest.raises(TrainingInterrupted) as stopped:
            train_teacher(out=str(out), overwrite=True, **settings)
    assert "stopped after epoch 1 of 2;" in str(stopped.value)
    capsys.readouterr()
    train_teacher(out=str(out), resume=True, **settings)
    assert f"resuming {out} after epoch 1 of 2\n" in capsys.readouterr().out
