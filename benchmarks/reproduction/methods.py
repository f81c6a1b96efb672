"""The study's methods: the students' losses, with the labels and descriptions the report uses.

Triplet (no teacher), FitNet, DarkRank, RKD-D, RKD-A, RKD-DA, RKD-DA + triplet (the student's
triplet loss added to RKD-DA) and RKD-DA + FitNet (:class:`RKDFitNetLoss`, registered here as the
distillation loss ``rkd-fitnet``); self-distillation (student = the teacher's architecture and
width, RKD-DA, no L2). Every other distillation loss of the package's registry is a method too,
by its registry name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn


class RKDFitNetLoss(nn.Module):
    """RKD-DA plus FitNet on the final embedding: ``RKDLoss(distance, angle) + fitnet_weight x FitNet``.

    Called like every distillation loss, ``loss(student_emb, labels, None, ref_emb=teacher_emb)``.
    FitNet's linear map to the teacher's width is a sub-module, so its parameters reach the
    optimizer and the checkpoints through the training objective.
    """

    def __init__(self, student_dim: int, teacher_dim: int, distance_weight: float = 1.0, angle_weight: float = 2.0,
                 fitnet_weight: float = 1.0):
        super().__init__()
        from rkd_pml.losses import RKDLoss
        from rkd_pml.losses.fitnet import FitNetEmbeddingLoss

        self.rkd = RKDLoss(distance_weight=distance_weight, angle_weight=angle_weight)
        self.fitnet = FitNetEmbeddingLoss(student_dim, teacher_dim)
        self.fitnet_weight = float(fitnet_weight)

    def forward(self, embeddings, labels=None, indices_tuple=None, ref_emb=None, ref_labels=None):
        """RKD-DA plus the weighted FitNet loss of the student's ``embeddings`` against ``ref_emb``."""
        return (self.rkd(embeddings, labels, indices_tuple, ref_emb=ref_emb)
                + self.fitnet_weight * self.fitnet(embeddings, labels, None, ref_emb=ref_emb))


COMBINED_FITNET_LOSS = "rkd-fitnet"


def register_losses() -> None:
    """Register ``rkd-fitnet`` (idempotent; every process that builds or resumes such a run calls it)."""
    from rkd_pml.losses.registry import DISTILLATION_LOSSES, register_distillation_loss
    from rkd_pml.losses.rkd import RKDOptions

    if COMBINED_FITNET_LOSS not in DISTILLATION_LOSSES:
        register_distillation_loss(
            COMBINED_FITNET_LOSS,
            lambda cfg, s, t: RKDFitNetLoss(s, t, cfg.distance_weight, cfg.angle_weight, 1.0),
            "RKD-DA + FitNet: distance_weight x RKD-D + angle_weight x RKD-A + FitNet (map to the teacher's width, MSE)",
            RKDOptions,
        )


register_losses()


@dataclass(frozen=True)
class Method:
    """A student method: its label, its training job, its distillation loss and settings."""

    label: str
    #: "baseline" (triplet, no teacher) or "distill"
    job: str
    #: the distillation loss name (None: no teacher)
    loss: str | None
    #: extra DistillConfig settings
    extra: tuple[tuple[str, Any], ...] = ()
    #: the student L2 setting of the paper's row for this method (the reduced grid's single variant)
    paper_l2: bool = False
    #: how the report describes the objective
    describe: str = ""


METHODS: dict[str, Method] = {
    "triplet": Method("Triplet (no teacher)", "baseline", None, paper_l2=True,
                      describe="triplet loss (margin 0.2) on distance-weighted triplets, no teacher"),
    "fitnet": Method("FitNet", "distill", "fitnet", paper_l2=True,
                     describe="learned linear map to the teacher's width + MSE"),
    "darkrank": Method("DarkRank", "distill", "darkrank", paper_l2=True,
                       describe="hard DarkRank (alpha 3, beta 3, list of 4)"),
    "rkd-d": Method("RKD-D", "distill", "rkd-d", describe="RKD distance loss (weight 1) alone"),
    "rkd-a": Method("RKD-A", "distill", "rkd-a", describe="RKD angle loss (weight 2) alone"),
    "rkd-da": Method("RKD-DA", "distill", "rkd", describe="1 x distance + 2 x angle, no other loss"),
    "rkd-da-triplet": Method("RKD-DA + triplet", "distill", "rkd",
                             (("student_metric_loss", "triplet"), ("student_metric_weight", 1.0)),
                             describe="RKD-DA + 1 x the student's triplet loss (margin 0.2, distance-weighted triplets)"),
    "rkd-da-fitnet": Method("RKD-DA + FitNet", "distill", COMBINED_FITNET_LOSS,
                            describe="RKD-DA + 1 x FitNet (map to the teacher's width, MSE)"),
    "self": Method("Self-distillation (RKD-DA)", "distill", "rkd",
                   describe="student = the teacher's architecture and width, RKD-DA, no L2"),
    "self-long": Method("Self-distillation (RKD-DA) at the teacher's budget", "distill", "rkd",
                        describe="student = the teacher's architecture and width, RKD-DA, no L2, the teacher's schedule"),
}
#: the student methods, in the order of the tables
STUDENT_METHODS = ("triplet", "fitnet", "darkrank", "rkd-d", "rkd-a", "rkd-da", "rkd-da-triplet", "rkd-da-fitnet")
#: the paper's six rows (the first study's methods)
PAPER_METHODS = STUDENT_METHODS[:6]
#: student = the teacher's architecture and size, no L2; "self-long" trains on the teacher's schedule
SELF_METHODS = ("self", "self-long")
#: the default (and ``--methods all``) selection; "self-long" is asked for by name
DEFAULT_METHODS = (*STUDENT_METHODS, "self")
#: the first study's default selection (its records and commands are read with it)
LEGACY_DEFAULT_METHODS = (*PAPER_METHODS, "self")


def _registered_methods() -> dict[str, Method]:
    """Every distillation loss of the package's registry that the table above does not name."""
    from rkd_pml.losses.registry import DISTILLATION_LOSSES

    named = {m.loss for m in METHODS.values()}
    return {name: Method(entry.help or name, "distill", name, describe=entry.help or name)
            for name, entry in DISTILLATION_LOSSES.items() if name not in named and name not in METHODS}


METHODS.update(_registered_methods())
