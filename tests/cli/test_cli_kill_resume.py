"""A real ``python -m rkd_pml distill`` killed mid-epoch (or ``train-teacher`` stopped by SIGTERM),
then resumed with ``--resume``, ends with the same weights as an uninterrupted run with the same seed."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from rkd_pml.cli import main
from rkd_pml.training import load_checkpoint

ARGS = [
    "--student", "resnet10t", "--embedding-dim", "4", "--image-size", "16", "--epochs", "2", "--iters", "12",
    "--batch-size", "20", "--m-per-class", "5", "--lr", "1e-3", "--lr-milestones", "1", "--seed", "3",
    "--checkpoint-every", "3", "--threads", "1", "--no-progress",
]


def _env():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def test_sigkill_mid_epoch_then_resume(tmp_path, teacher_dir, capsys):
    killed = tmp_path / "killed"
    last = killed / "checkpoints" / "last.pt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "rkd_pml", "distill", "--teacher", teacher_dir, *ARGS, "--out", str(killed)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_env(),
    )
    try:
        deadline = time.monotonic() + 120
        while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        output = proc.communicate(timeout=60)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it could be killed:\n{output}"
    state = load_checkpoint(last)["loop"]
    assert state["epoch"] == 0 and state["iteration"] > 0, state  # killed in the middle of epoch 1

    # resume (in this process: one thread, like the subprocess)
    assert main(["distill", "--out", str(killed), "--resume", "--threads", "1", "--no-progress"]) == 0
    assert f"in epoch 1 of 2, after step {state['iteration']} of 12\n" in capsys.readouterr().out

    # the uninterrupted reference, in this process (one thread, as the subprocesses)
    assert main(["distill", "--teacher", teacher_dir, *ARGS, "--out", str(tmp_path / "straight")]) == 0
    a = load_checkpoint(Path(tmp_path / "straight" / "checkpoints" / "last.pt"))
    b = load_checkpoint(last)
    assert (a["loop"]["epoch"], b["loop"]["epoch"]) == (2, 2)
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key


def test_sigterm_mid_epoch_then_resume_a_teacher(tmp_path, capsys):
    """The teacher's miner draws random triplets at every step: the resumed run draws the same."""
    args = ["--model", "resnet10t", *ARGS[2:]]  # train-teacher names its architecture --model
    stopped = tmp_path / "stopped"
    last = stopped / "checkpoints" / "last.pt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "rkd_pml", "train-teacher", *args, "--out", str(stopped)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_env(),
    )
    try:
        deadline = time.monotonic() + 120
        while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=120)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, f"the run did not stop on SIGTERM:\n{output}"
    state = load_checkpoint(last)["loop"]
    assert state["epoch"] == 0 and state["iteration"] > 0, state  # stopped in the middle of epoch 1
    assert f"stopped in epoch 1 of 2, after step {state['iteration']} of 12;" in output

    assert main(["train-teacher", "--out", str(stopped), "--resume", "--threads", "1", "--no-progress"]) == 0
    assert f"in epoch 1 of 2, after step {state['iteration']} of 12\n" in capsys.readouterr().out
    assert main(["train-teacher", *args, "--out", str(tmp_path / "straight")]) == 0
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = load_checkpoint(last)
    assert (a["loop"]["epoch"], b["loop"]["epoch"]) == (2, 2)
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
