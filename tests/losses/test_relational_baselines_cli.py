"""PKT, SP, CC and relaxed contrastive through the registry: `rkd-pml distill --loss NAME` trains."""

import json
import math

import pytest

from rkd_pml.cli import main
from rkd_pml.losses import registry


@pytest.mark.parametrize("name", ["pkt", "sp", "cc", "relaxed-contrastive"])
def test_distill_trains_with_the_loss(teacher_dir, tmp_path, name):
    assert name in registry.distillation_loss_names()
    out = tmp_path / "s"
    assert main(["distill", "--teacher", teacher_dir, "--student", "resnet10t", "--embedding-dim", "4", "--loss", name,
                 "--out", str(out), "--image-size", "16", "--epochs", "1", "--iters", "2", "--batch-size", "20",
                 "--m-per-class", "5", "--no-progress"]) == 0
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert math.isfinite(record["distill"]) and record["distill"] > 0
    assert json.loads((out / "config.json").read_text())["loss"] == name
