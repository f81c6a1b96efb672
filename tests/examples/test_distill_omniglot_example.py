"""examples/distill_omniglot.py runs end to end on the shared Omniglot archive, also for one epoch."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "distill_omniglot.py"


@pytest.mark.timeout(600)
def test_one_epoch_run(tmp_path, omniglot_zip):
    # --epochs 1 used to derive lr_milestones (0,), refused by the settings
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), omniglot_zip, "--out", str(tmp_path), "--epochs", "1", "--iters", "1",
         "--dims", "4", "--image-size", "16", "--batch-size", "16"],
        cwd=EXAMPLE.parents[1], env=env, capture_output=True, text=True, timeout=540,
    )
    assert proc.returncode == 0, f"example failed:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    rows = dict(re.findall(r"^(teacher resnet18-64|rkd resnet10t-4|triplet resnet10t-4)\s+([0-9.]+)$", proc.stdout, re.M))
    assert set(rows) == {"teacher resnet18-64", "rkd resnet10t-4", "triplet resnet10t-4"}, proc.stdout
    for name, run in (("teacher resnet18-64", "teacher"), ("rkd resnet10t-4", "rkd-4"), ("triplet resnet10t-4", "triplet-4")):
        config = json.loads((tmp_path / run / "config.json").read_text())
        assert config["epochs"] == 1 and list(config["lr_milestones"]) == []
        assert 0.0 <= float(rows[name]) <= 100.0


def test_zero_epochs_is_refused_by_the_example(tmp_path):
    proc = subprocess.run([sys.executable, str(EXAMPLE), "x.zip", "--epochs", "0"], capture_output=True, text=True,
                          timeout=120, cwd=EXAMPLE.parents[1])
    assert proc.returncode == 2 and "--epochs" in proc.stderr and ">= 1" in proc.stderr
