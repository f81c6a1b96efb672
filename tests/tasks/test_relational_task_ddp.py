"""Two gloo processes: the task's RKD terms relate the global batch and one backward gives
the single-process gradient of the whole batch (``ddp_task_worker.py``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("ddp_task_worker.py")
WORLD_SIZE = 2
TIMEOUT_S = 120


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("ddp_task")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    logs = [out / f"rank{r}.log" for r in range(WORLD_SIZE)]
    procs = []
    try:
        for rank, log in enumerate(logs):
            with open(log, "w") as f:
                procs.append(subprocess.Popen(
                    [sys.executable, str(WORKER), "--out", str(out), "--rank", str(rank),
                     "--world-size", str(WORLD_SIZE), "--init-method", f"file://{out / 'store'}"],
                    stdout=f, stderr=subprocess.STDOUT, env=env))
        start = time.monotonic()
        while any(p.poll() is None for p in procs) and time.monotonic() - start < TIMEOUT_S:
            if any(p.returncode not in (None, 0) for p in procs):
                break
            time.sleep(0.1)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    if any(p.returncode != 0 for p in procs):
        text = "\n".join(f"--- rank {r} ---\n{log.read_text()[-2000:]}" for r, log in enumerate(logs))
        pytest.fail(f"a rank failed or timed out\n{text}")
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD_SIZE)]


def test_rkd_terms_are_those_of_the_global_batch(ranks):
    for r in ranks:
        assert r["distance_ref"] > 0 and r["angle_ref"] > 0
        assert r["distance"] == pytest.approx(r["distance_ref"], rel=1e-10)
        assert r["angle"] == pytest.approx(r["angle_ref"], rel=1e-10)


def test_ddp_gradient_is_the_single_process_gradient(ranks):
    for r in ranks:
        assert r["max_abs_grad"] > 0
        assert r["max_grad_diff"] <= 1e-10 * r["max_abs_grad"]


def test_prepare_distributed_wraps_the_student_only(ranks):
    for r in ranks:
        assert r["wrapped"] == "DistributedDataParallel"
        assert r["eval_model_is_student"] is True
