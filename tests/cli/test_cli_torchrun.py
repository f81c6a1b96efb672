"""``torchrun --standalone --nproc_per_node=2 -m rkd_pml distill``: two CPU processes (gloo) on
digits, started for real by torchrun (``python -m torch.distributed.run``).

The run directory has the single-process layout and is written once, by rank 0; ``--resume``
continues it under torchrun; and the distilled student matches a single-process run with the
same seed and the same global batch. The student, timm's ``test_vit``, has no BatchNorm (its
output for an image does not depend on the rest of the batch) and ``--train-transform none``
draws no random numbers, so both runs do the same arithmetic up to floating-point summation
order. Adam turns that rounding noise into updates of up to ``lr`` on the few parameters whose
gradient is exactly zero in exact arithmetic (attention key biases; the final LayerNorm and head
biases, which translate every embedding and which RKD cannot see): the test compares what the
student computes (its embeddings up to a translation) tightly, and the raw parameters with a
count of such elements.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from rkd_pml.cli import main
from rkd_pml.data.batches import epoch_batches
from rkd_pml.training import load_checkpoint
from rkd_pml.distributed.session import (
    SINGLE_PROCESS,
    check_world_size,
    distributed_session,
    torchrun_environment,
)

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed with gloo is needed"
)

NPROC = 2
LAUNCH_TIMEOUT_S = 180  # one torchrun launch; each collective also gives up after 120 s
ARGS = [
    "--student", "test_vit", "--embedding-dim", "4", "--image-size", "16", "--train-transform", "none",
    "--iters", "2", "--batch-size", "20", "--m-per-class", "5", "--lr", "1e-3", "--lr-milestones", "1",
    "--seed", "3", "--checkpoint-every", "1", "--eval-batch-size", "512", "--threads", "1", "--no-progress",
]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", RKD_PML_DIST_TIMEOUT="120")
    return env


def _torchrun(*argv: str) -> tuple[str, float]:
    """Run ``torchrun ... -m rkd_pml *argv`` on ``NPROC`` CPU processes; its output and wall time."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={NPROC}",
           "-m", "rkd_pml", *argv]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_env(), text=True)
    try:
        output = proc.communicate(timeout=LAUNCH_TIMEOUT_S)[0]
    except subprocess.TimeoutExpired:
        proc.terminate()  # torchrun passes SIGTERM on to its workers, then kills them
        try:
            output = proc.communicate(timeout=60)[0]
        except subprocess.TimeoutExpired:
            proc.kill()
            output = proc.communicate()[0]
        pytest.fail(f"torchrun did not finish within {LAUNCH_TIMEOUT_S} s:\n{output[-4000:]}")
    wall = time.monotonic() - start
    assert proc.returncode == 0, f"torchrun exited with {proc.returncode}:\n{output[-4000:]}"
    return output, wall


@pytest.fixture(scope="module")
def runs(teacher_dir, tmp_path_factory) -> dict:
    """A 2-process run of 1 epoch, resumed under torchrun for a 2nd epoch, and the same 2 epochs
    in one process (in this process, one thread)."""
    base = tmp_path_factory.mktemp("torchrun")
    first, wall_first = _torchrun("distill", "--teacher", teacher_dir, *ARGS, "--epochs", "1",
                                  "--out", str(base / "ddp"))
    metrics_after_first = (base / "ddp" / "metrics.jsonl").read_text().splitlines()
    resumed, wall_resumed = _torchrun("distill", "--out", str(base / "ddp"), "--resume", "--epochs", "2",
                                      "--threads", "1", "--no-progress")
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["distill", "--teacher", teacher_dir, *ARGS, "--epochs", "2", "--out", str(base / "single")]) == 0
    finally:
        torch.set_num_threads(saved)
    return {
        "ddp": base / "ddp", "single": base / "single", "first": first, "resumed": resumed,
        "metrics_after_first": metrics_after_first, "wall": (wall_first, wall_resumed),
    }


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_run_directory_is_written_once_by_rank_zero(runs):
    run = runs["ddp"]
    for name in ("config.json", "metrics.jsonl", "results.json", "recall.png", "checkpoints/last.pt",
                 "checkpoints/best.pt", "model/config.json", "model/model.safetensors"):
        assert (run / name).is_file(), name
    from rkd_pml.files import is_temporary

    assert not [p for p in run.rglob("*") if is_temporary(p.name)]  # no write left half done
    # one record per epoch (each rank appending would give two), one log line, one summary
    assert len(runs["metrics_after_first"]) == 1
    first = runs["first"]
    assert first.count("[student] epoch 1/1 ") == 1, first
    assert first.count("best epoch 1") == 1, first
    assert "x 2 processes (gloo)" in first
    config = json.loads((run / "config.json").read_text())
    assert config["batch_size"] == 20 and config["job"] == "distill"  # the global batch
    results = json.loads((run / "results.json").read_text())
    assert results["world_size"] == NPROC and results["best"]["test"]["recall@1"] > 0
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["world_size"] == NPROC and len(ckpt["rng_ranks"]) == NPROC
    # the ranks drew from different RNG streams (rank 0 from the single-process one)
    assert not torch.equal(ckpt["rng_ranks"][0]["torch"], ckpt["rng_ranks"][1]["torch"])


def test_resume_under_torchrun(runs):
    resumed = runs["resumed"]
    assert resumed.count("resuming") == 1 and "after epoch 1 of " in resumed, resumed
    assert resumed.count("[student] epoch 2/2 ") == 1
    assert [r["epoch"] for r in _metrics(runs["ddp"])] == [1, 2]
    assert load_checkpoint(runs["ddp"] / "checkpoints" / "last.pt")["loop"]["epoch"] == 2


def test_same_student_as_one_process_on_the_global_batch(runs):
    ddp, single = _metrics(runs["ddp"]), _metrics(runs["single"])
    assert [r["epoch"] for r in single] == [1, 2]
    for a, b in zip(ddp, single):
        # the logged loss is the global-batch loss (not world_size x it)
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5), (a, b)
        assert a["lr"] == b["lr"]
        assert a["test"]["recall@1"] == pytest.approx(b["test"]["recall@1"], abs=0.01)

    # what the students compute: embeddings of digits test images, up to a translation
    from rkd_pml.data import load_dataset
    from rkd_pml.models import EmbeddingModel

    _, test_set = load_dataset("digits", image_size=16, train_transform="none", in_chans=3)
    images = torch.stack([test_set[i][0] for i in range(0, len(test_set), 7)])
    embeddings = []
    for run in (runs["ddp"], runs["single"]):
        model = EmbeddingModel.load(run / "model").eval()
        with torch.no_grad():
            e = model(images)
        embeddings.append(e - e.mean(0))
    scale = embeddings[1].abs().max().item()
    assert scale > 0.1
    assert (embeddings[0] - embeddings[1]).abs().max().item() <= 1e-3 * scale

    # the parameters after the same 4 Adam steps: all but a few elements agree to 1e-5
    a = load_checkpoint(runs["ddp"] / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(runs["single"] / "checkpoints" / "last.pt")["model"]
    assert a.keys() == b.keys()
    total = differing = 0
    for key, value in b.items():
        if value.is_floating_point():
            total += value.numel()
            differing += int(((a[key] - value).abs() > 1e-5).sum())
        else:
            assert torch.equal(a[key], value), key
    assert differing <= 0.01 * total, f"{differing} of {total} parameter elements differ by more than 1e-5"


# ---- without launching processes


def test_global_batch_is_split_across_ranks():
    labels = [i % 5 for i in range(200)]
    single = epoch_batches(labels, 20, 5, 3, seed=11, epoch=2)
    shares = [epoch_batches(labels, 20, 5, 3, seed=11, epoch=2, rank=r, world_size=4) for r in range(4)]
    assert all(len(b) == 5 for share in shares for b in share)
    assert [sum((share[i] for share in shares), []) for i in range(3)] == single


def test_batch_size_not_divisible_by_the_processes_is_refused():
    labels = [i % 5 for i in range(200)]
    with pytest.raises(ValueError, match=r"batch size 15 must be divisible by the number of processes \(2\)"):
        epoch_batches(labels, 15, 5, 1, seed=0, epoch=1, rank=0, world_size=2)
    with pytest.raises(ValueError, match="global batch"):
        check_world_size(15, 2)
    check_world_size(15, 1)


def test_outside_torchrun_nothing_is_initialised(monkeypatch):
    if dist.is_initialized():
        pytest.skip("a process group is initialised in this process")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert torchrun_environment() is None
    with distributed_session("cpu") as ctx:
        assert ctx is SINGLE_PROCESS and not ctx.enabled and not dist.is_initialized()
    # torchrun with a single process: also a plain single-process run
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert torchrun_environment() == (0, 1, 0)
    with distributed_session("cpu") as ctx:
        assert ctx is SINGLE_PROCESS and not dist.is_initialized()
