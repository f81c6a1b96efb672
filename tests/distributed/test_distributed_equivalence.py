"""RKD across processes: PML's distributed wrappers relate the global batch exactly.

Two gloo processes on CPU (``ddp_rkd_equivalence_worker.py``, started once for the module)
each hold half of a 16-example batch. For every loss (RKD-DA, RKD-D, RKD-A) with all tuples
and with tuples mined by a wrapped PML miner, through plain PML wrappers and through
:func:`rkd_pml.distributed.distributed_rkd`, the loss on each rank is the single-process loss
of the whole batch, and one SGD step of the DDP student gives the single-process parameters.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from pytorch_metric_learning.miners import MultiSimilarityMiner
from pytorch_metric_learning.utils.distributed import (
    DistributedLossWrapper,
    DistributedMinerWrapper,
)

from rkd_pml import RKDLoss
from rkd_pml.distributed import (
    RKDDistributedLossWrapper,
    RKDDistributedMinerWrapper,
    distributed_rkd,
)

sys.path.insert(0, str(Path(__file__).parent))
from ddp_launch import run_ranks  # noqa: E402
from ddp_rkd_equivalence_worker import case_names  # noqa: E402

WORKER_PATH = Path(__file__).with_name("ddp_rkd_equivalence_worker.py")
WORLD_SIZE = 2
RUN_TIMEOUT_S = 150  # the whole two-process run; each collective also times out after 60 s


CASES = case_names()
MINED_CASES = [c for c in CASES if not c.endswith("-all")]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    """Run the worker on ``WORLD_SIZE`` processes; one result dict per rank."""
    try:
        return run_ranks(WORKER_PATH, WORLD_SIZE, tmp_path_factory.mktemp("ddp_rkd"), RUN_TIMEOUT_S)
    except AssertionError as exc:
        pytest.fail(str(exc))


@pytest.mark.parametrize("case", CASES)
def test_loss_on_every_rank_is_the_single_process_loss(ranks, case):
    for r in ranks:
        c = r["cases"][case]
        assert c["loss_reference"] > 0
        # The wrapper returns world_size x the global loss (what makes DDP's average exact).
        assert c["loss_returned"] == pytest.approx(WORLD_SIZE * c["loss_global"], rel=1e-15)
        assert c["loss_global"] == pytest.approx(c["loss_reference"], rel=1e-12, abs=1e-14)
    first = ranks[0]["cases"][case]["loss_global"]
    assert all(r["cases"][case]["loss_global"] == pytest.approx(first, rel=1e-12) for r in ranks)


@pytest.mark.parametrize("case", CASES)
def test_one_ddp_step_equals_one_single_process_step(ranks, case):
    for r in ranks:
        c = r["cases"][case]
        assert c["max_param_step"] > 1e-3, "the step must move the parameters far beyond 1e-6"
        assert c["max_grad_diff"] <= 1e-12 * max(1.0, c["max_abs_grad"])
        assert c["max_param_diff"] <= 1e-6


@pytest.mark.parametrize("case", MINED_CASES)
def test_mined_tuples_relate_examples_of_both_ranks(ranks, case):
    for r in ranks:
        c = r["cases"][case]
        assert c["n_tuples"] == c["n_tuples_reference"] > 0
        assert c["n_cross_rank"] > 0


def test_pml_efficient_true_with_a_teacher_raises_instead_of_a_wrong_loss(ranks):
    for r in ranks:
        with_labels = r["probes"]["pml_efficient_with_labels"]
        assert with_labels["value"] is None
        assert with_labels["error_type"] == "ValueError"
        assert "one row per student embedding" in with_labels["error"]
        assert "efficient=False" in with_labels["error"]
        # Without labels PML itself fails before the loss is called.
        without_labels = r["probes"]["pml_efficient_without_labels"]
        assert without_labels["value"] is None and without_labels["error_type"] is not None


def test_miners_that_see_only_local_anchors_change_the_loss(ranks):
    """Why distributed_rkd refuses an efficient=True miner and always wraps the miner."""
    reference = ranks[0]["probes"]["mined_reference"]["value"]
    for key in ("efficient_miner", "local_miner"):
        values = [r["probes"][key]["value"] for r in ranks]
        assert all(abs(v - reference) > 1e-6 for v in values), key
        assert abs(values[0] - values[1]) > 1e-6, key


def test_helper_refuses_unequal_rank_batches_on_every_rank(ranks):
    for r in ranks:
        for key in ("helper_uneven_loss", "helper_uneven_miner"):
            probe = r["probes"][key]
            assert probe["error_type"] == "ValueError", key
            assert "same number of embeddings rows" in probe["error"]
            assert "[8, 6]" in probe["error"]
        probe = r["probes"]["helper_misaligned_teacher"]
        assert probe["error_type"] == "ValueError"
        assert "same number of ref_emb rows" in probe["error"] and "[8, 7]" in probe["error"]


# In this process, without a process group.


def test_distributed_rkd_refuses_efficient_true():
    with pytest.raises(ValueError, match="efficient=False"):
        distributed_rkd(RKDLoss(), efficient=True)
    with pytest.raises(ValueError, match="DistributedLossWrapper has efficient=True"):
        distributed_rkd(DistributedLossWrapper(RKDLoss(), efficient=True))
    with pytest.raises(ValueError, match="DistributedMinerWrapper has efficient=True"):
        distributed_rkd(RKDLoss(), DistributedMinerWrapper(MultiSimilarityMiner(), efficient=True))
    with pytest.raises(TypeError, match="PML miner"):
        distributed_rkd(RKDLoss(), miner=lambda emb, labels: None)


def test_distributed_rkd_builds_efficient_false_pml_wrappers():
    loss = RKDLoss()
    miner = MultiSimilarityMiner()
    loss_fn, miner_fn = distributed_rkd(
        DistributedLossWrapper(loss, efficient=False), DistributedMinerWrapper(miner, efficient=False)
    )
    assert isinstance(loss_fn, RKDDistributedLossWrapper)
    assert isinstance(loss_fn, DistributedLossWrapper)
    assert isinstance(miner_fn, RKDDistributedMinerWrapper)
    assert isinstance(miner_fn, DistributedMinerWrapper)
    assert loss_fn.loss is loss and miner_fn.miner is miner
    assert not loss_fn.efficient and not miner_fn.efficient
    assert distributed_rkd(loss)[1] is None


def test_distributed_rkd_without_process_group_is_the_plain_loss():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        pytest.skip("a process group is initialised in this process")
    emb = torch.randn(12, 6, dtype=torch.float64)
    teacher = torch.randn(12, 10, dtype=torch.float64)
    labels = torch.arange(12) % 3
    loss_fn, miner_fn = distributed_rkd(RKDLoss(), MultiSimilarityMiner(epsilon=0.5))
    with pytest.warns(UserWarning, match="non-distributed"):
        idx = miner_fn(emb, labels)
    with pytest.warns(UserWarning, match="non-distributed"):
        value = loss_fn(emb, labels, idx, ref_emb=teacher)
    plain_idx = MultiSimilarityMiner(epsilon=0.5)(emb, labels)
    assert all(torch.equal(a, b) for a, b in zip(idx, plain_idx))
    plain = RKDLoss()(emb, labels, plain_idx, ref_emb=teacher)
    assert value.item() == pytest.approx(plain.item(), rel=1e-15)
