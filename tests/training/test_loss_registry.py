"""A new distillation loss through the registry alone: one registration, then the config, the
CLI and the objective use it."""

import json

import pytest
import torch

from rkd_pml._pml import BaseMetricLossFunction
from rkd_pml.cli import main
from rkd_pml.losses import registry


class MeanGapLoss(BaseMetricLossFunction):
    """A toy distillation loss: squared gap between the mean embedding norms."""

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        gap = embeddings.norm(dim=1).mean() - ref_emb.detach().norm(dim=1).mean()
        return {"loss": {"losses": gap**2, "indices": None, "reduction_type": "already_reduced"}}


@pytest.fixture
def toy_loss():
    registry.register_distillation_loss("mean-gap", lambda cfg, s, t: MeanGapLoss(), "toy")
    yield "mean-gap"
    del registry.DISTILLATION_LOSSES["mean-gap"]


def test_a_registered_loss_is_a_cli_choice_and_trains(teacher_dir, tmp_path, toy_loss):
    assert toy_loss in registry.distillation_loss_names()
    out = tmp_path / "s"
    assert main(["distill", "--teacher", teacher_dir, "--student", "resnet10t", "--embedding-dim", "4", "--loss", toy_loss,
                 "--out", str(out), "--image-size", "16", "--epochs", "1", "--iters", "2", "--batch-size", "20",
                 "--m-per-class", "5", "--no-progress"]) == 0
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert record["distill"] > 0 and json.loads((out / "config.json").read_text())["loss"] == toy_loss


def test_triplet_is_reserved():
    with pytest.raises(ValueError, match="reserved"):
        registry.register_distillation_loss("triplet", lambda cfg, s, t: MeanGapLoss())


def test_loss_options_reach_the_losses():
    from rkd_pml.training.config import DistillConfig
    from rkd_pml.training.objective import build_objective

    cfg = DistillConfig(teacher="t", loss="darkrank",
                        loss_options=dict(darkrank_alpha=2.0, darkrank_beta=1.5, darkrank_list_length=3))
    term = build_objective(cfg, 4, 8).distill_terms["distill"]
    assert (term.alpha, term.beta, term.list_length) == (2.0, 1.5, 3)
    cfg = DistillConfig(teacher="t", loss_options=dict(distance_weight=0.5, angle_weight=3.0))
    terms = build_objective(cfg, 4, 8).distill_terms
    assert terms["rkd_distance"].distance_weight == 0.5 and terms["rkd_angle"].angle_weight == 3.0
    s, t = torch.randn(10, 4), torch.randn(10, 8)
    from rkd_pml import RKDLoss

    split = sum(term(s, ref_emb=t) for term in terms.values())
    assert torch.allclose(split, RKDLoss(0.5, 3.0)(s, ref_emb=t), rtol=1e-6)
