"""Checkpoints: atomic writes, refusal of unsafe or broken files, RNG round trips."""

import errno
import os
import pickle
import random
import stat

import numpy as np
import pytest
import torch

from rkd_pml.training.checkpoint import (
    CheckpointError,
    CheckpointWriteError,
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


# --------------------------------------------------------------------------- write errors


def _fail_writes(monkeypatch, code):
    """Make every write to a temporary file fail with ``code`` after a few bytes."""
    from rkd_pml import files

    class Full:
        def __init__(self, f):
            self.f, self.room = f, 64

        def write(self, data):
            if len(data) > self.room:
                raise OSError(code, os.strerror(code))
            self.room -= len(data)
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(files.atomic, "_fdopen", lambda fd, mode, **kw: Full(os.fdopen(fd, mode, **kw)))


@pytest.mark.parametrize("code, reason", [(errno.ENOSPC, "no space left on device"),
                                          (errno.EDQUOT, "disk quota exceeded")])
def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch, code, reason):
    path = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint(path, {"step": 1})
    before = path.read_bytes()
    _fail_writes(monkeypatch, code)
    with pytest.raises(CheckpointWriteError) as info:
        save_checkpoint(path, {"step": 2, "model": {"w": torch.randn(64, 64)}})
    message = str(info.value)
    assert message.startswith(f"cannot write checkpoint {path}: {reason}")
    assert "previous last.pt is unchanged" in message and "--resume" in message and "\n" not in message
    assert isinstance(info.value, OSError) and isinstance(info.value, CheckpointError)
    assert info.value.errno == code
    monkeypatch.undo()
    assert path.read_bytes() == before and load_checkpoint(path)["step"] == 1
    assert os.listdir(path.parent) == ["last.pt"]  # no temporary file left


def test_a_failed_first_checkpoint_leaves_nothing(tmp_path, monkeypatch):
    _fail_writes(monkeypatch, errno.ENOSPC)
    with pytest.raises(CheckpointWriteError, match="no space left on device") as info:
        save_checkpoint(tmp_path / "best.pt", {"model": {"w": torch.randn(64, 64)}})
    assert "previous" not in str(info.value)
    assert os.listdir(tmp_path) == []


def test_checkpoints_respect_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        save_checkpoint(tmp_path / "last.pt", {"step": 1})
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(tmp_path / "last.pt").st_mode) == 0o640
