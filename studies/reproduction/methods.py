"""The study's methods: the students' losses, with the labels and descriptions the report uses.

Triplet (no teacher), FitNet, DarkRank, RKD-D, RKD-A, RKD-DA, RKD-DA + triplet (the student's
triplet loss added to RKD-DA) and RKD-DA + FitNet (the library's distillation loss ``rkd-fitnet``); RKD-DA + compat (RKD-DA plus a
coordinate term towards the teacher's embeddings); PKT, SP, CC and relaxed contrastive;
self-distillation (student = the teacher's architecture and width, RKD-DA, no L2). Every other
distillation loss of the package's registry is a method too, by its registry name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: the weight W of the coordinate term W x mean ||s_i - t_i||^2 of "rkd-da-compat"
#: (``DistillConfig.compat_weight``): the teacher's embeddings are unit vectors, so the term is of
#: order 1 (2 for a unit vector orthogonal to the teacher's), the order of RKD-DA's own loss;
#: W = 1 lets neither term dominate (not tuned)
COMPAT_WEIGHT = 1.0
#: the library's RKD-DA + FitNet objective (:class:`rkd_pml.losses.rkd_fitnet.RKDFitNetLoss`)
COMBINED_FITNET_LOSS = "rkd-fitnet"


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
    "rkd-da-compat": Method("RKD-DA + compat", "distill", "rkd", (("compat_weight", COMPAT_WEIGHT),),
                            describe=f"RKD-DA + {COMPAT_WEIGHT:g} x mean ||s_i - t_i||^2 (the student's embedding "
                                     "pulled onto the teacher's, no map: needs the teacher's width)"),
    "pkt": Method("PKT", "distill", "pkt",
                  describe="PKT (Passalis and Tefas 2018): KL between cosine-similarity distributions"),
    "sp": Method("SP", "distill", "sp", describe="SP (Tung and Mori 2019): row-normalised batch Gram matrices"),
    "cc": Method("CC", "distill", "cc", describe="CC (Peng et al. 2019): Taylor-RBF batch correlation matrices"),
    "relaxed-contrastive": Method("Relaxed contrastive", "distill", "relaxed-contrastive",
                                  describe="relaxed contrastive (Kim et al. 2021): the teacher's distances as soft "
                                           "labels"),
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
