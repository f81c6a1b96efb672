"""Checkpoints: atomic writes, refusal of unsafe or broken files, RNG round trips."""

import os
import pickle
import random

import numpy as np
import pytest
import torch

from rkd_pml.training.checkpoint import (
    CheckpointError,
    atomic_write,
    get_rng_state,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)


def test_round_trip_with_optimizer_and_scheduler(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [1, 2], 0.5)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    sched.step()
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                           "scheduler": sched.state_dict(), "rng": get_rng_state()})
    data = load_checkpoint(path)
    assert torch.equal(data["model"]["weight"], model.weight)
    sched2 = torch.optim.lr_scheduler.MultiStepLR(torch.optim.Adam(model.parameters()), [5], 0.1)
    sched2.load_state_dict(data["scheduler"])
    assert sched2.last_epoch == 1
    assert [p for p in os.listdir(tmp_path)] == ["c.pt"]  # no temporary file left


def test_rng_state_round_trip():
    state = get_rng_state()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(state)
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0])
    assert np.array_equal(expected[1], again[1])
    assert expected[2] == again[2]


def test_crash_during_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1})

    def crash(f):
        f.write(b"partial")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(path, crash)
    assert load_checkpoint(path)["step"] == 1
    assert os.listdir(tmp_path) == ["last.pt"]


def test_truncated_checkpoint_gives_a_clear_error(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.randn(100, 100)}})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or not a PyTorch checkpoint"):
        load_checkpoint(path)


def test_foreign_checkpoint_is_rejected(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    with pytest.raises(CheckpointError, match="not an rkd-pml training checkpoint"):
        load_checkpoint(path)
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "text.pt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


class _Payload:
    """Unpickling this object would create ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_malicious_pickle_is_refused_without_running_code(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"format": "rkd-pml-checkpoint", "version": 1, "model": _Payload(marker)}
    if writer == "torch":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refusing to load|truncated or not"):
        load_checkpoint(path)
    assert not marker.exists()
