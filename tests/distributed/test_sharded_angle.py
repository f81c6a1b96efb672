"""RKD of the global batch under ``distributed_rkd`` is shared out, not repeated.

Two and four gloo processes on CPU (``sharded_angle_worker.py``) hold equal shares of a
72-example float64 batch with exact and near duplicates. On every rank the loss, its gradient
(plain and with ``create_graph=True``) and its second derivative are those of the whole batch
in one process (to 1e-10) for RKD-DA, RKD-A, RKD-D (alone and as RKD-DA with angle weight 0)
and RKD-DA on L2-normalised embeddings, all computed on the shared path, where the angle
kernel visits 1/W of the entries one process visits alone (forward and plain backward). Mined
triplets are computed whole, with the same values.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from ddp_launch import run_ranks  # noqa: E402

WORKER_PATH = Path(__file__).with_name("sharded_angle_worker.py")
RUN_TIMEOUT_S = 240
SHARED = ["rkd", "angle", "distance", "rkd_distance_only", "rkd_normalized"]
WITH_ANGLE = ["rkd", "angle", "rkd_normalized"]


@pytest.fixture(scope="module", params=[2, 4], ids=lambda w: f"W{w}")
def ranks(request, tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp(f"sharded_angle_{request.param}")
    try:
        return run_ranks(WORKER_PATH, request.param, out, RUN_TIMEOUT_S)
    except AssertionError as exc:
        pytest.fail(str(exc))


@pytest.mark.parametrize("case", SHARED + ["rkd_mined"])
def test_loss_and_derivatives_equal_the_single_process_ones(ranks, case):
    for r in ranks:
        c = r["cases"][case]
        assert c["loss_reference"] > 0
        assert c["loss"] == pytest.approx(c["loss_reference"], rel=1e-10, abs=0)
        assert c["loss_no_grad"] == pytest.approx(c["loss_reference"], rel=1e-10, abs=0)
        assert c["grad_max_abs"] > 0 and c["hvp_max_abs"] > 0
        assert c["grad_max_diff"] <= 1e-10 * c["grad_max_abs"]
        assert c["grad2_max_diff"] <= 1e-10 * c["grad_max_abs"]
        assert c["hvp_max_diff"] <= 1e-10 * c["hvp_max_abs"]


@pytest.mark.parametrize("case", SHARED)
def test_the_global_batch_terms_take_the_shared_path(ranks, case):
    for r in ranks:
        assert r["cases"][case]["shared"] and not r["cases"][case]["shared_reference"]


def test_mined_tuples_are_computed_whole(ranks):
    for r in ranks:
        assert not r["cases"]["rkd_mined"]["shared"]


@pytest.mark.parametrize("case", WITH_ANGLE)
def test_each_process_does_its_share_of_the_angle_work(ranks, case):
    world_size = len(ranks)
    for r in ranks:
        c = r["cases"][case]
        for key in ("visited", "visited_no_grad"):
            assert c[key + "_reference"] > 0
            assert c[key] * world_size == c[key + "_reference"], key
