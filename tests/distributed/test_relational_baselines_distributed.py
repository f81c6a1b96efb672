"""PKT, SP, CC and relaxed contrastive across processes: through distributed_rkd, two gloo
processes holding half of a 16-example batch each get the single-process loss of the whole
batch, and one DDP step gives the single-process parameters."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from ddp_launch import run_ranks  # noqa: E402

WORKER_PATH = Path(__file__).with_name("relational_baselines_worker.py")
WORLD_SIZE = 2
CASES = ["pkt", "sp", "cc", "relaxed-contrastive"]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    try:
        return run_ranks(WORKER_PATH, WORLD_SIZE, tmp_path_factory.mktemp("ddp_baselines"), 120)
    except AssertionError as exc:
        pytest.fail(str(exc))


@pytest.mark.parametrize("case", CASES)
def test_global_loss_and_step_equal_the_single_process_ones(ranks, case):
    for r in ranks:
        c = r["cases"][case]
        assert c["loss_reference"] > 0
        assert c["loss_global"] == pytest.approx(c["loss_reference"], rel=1e-12, abs=1e-14)
        assert c["max_param_step"] > 1e-3, "the step must move the parameters far beyond the tolerance"
        assert c["max_grad_diff"] <= 1e-12 * max(1.0, c["max_abs_grad"])
        assert c["max_param_diff"] <= 1e-10
