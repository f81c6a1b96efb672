"""RKD-DA plus FitNet on the final embedding: a multi-term distillation objective.

``distance_weight x RKD-D + angle_weight x RKD-A + fitnet_weight x FitNet``, the combination
the RKD paper reports beside its single losses (registered as the distillation loss
``rkd-fitnet``).
"""

from __future__ import annotations

from torch import Tensor, nn

from .fitnet import FitNetEmbeddingLoss
from .registry import register_distillation_loss
from .rkd import RKDLoss, RKDOptions


class RKDFitNetLoss(nn.Module):
    """RKD-DA plus FitNet: ``RKDLoss(distance_weight, angle_weight) + fitnet_weight x FitNetEmbeddingLoss``.

    Called like every distillation loss, ``loss(student_emb (N, Ds), labels, None,
    ref_emb=teacher_emb (N, Dt))``; returns a scalar. FitNet's linear map to the teacher's
    width (``self.fitnet.regressor``, ``(Dt, Ds)``) is a sub-module, so its parameters reach the
    optimizer and the checkpoints through the training objective.

    Args:
        student_dim: the student's embedding width ``Ds``.
        teacher_dim: the teacher's embedding width ``Dt``.
        distance_weight: weight of the RKD distance term.
        angle_weight: weight of the RKD angle term.
        fitnet_weight: weight of the FitNet term.
    """

    def __init__(self, student_dim: int, teacher_dim: int, distance_weight: float = 1.0, angle_weight: float = 2.0,
                 fitnet_weight: float = 1.0):
        super().__init__()
        self.rkd = RKDLoss(distance_weight=distance_weight, angle_weight=angle_weight)
        self.fitnet = FitNetEmbeddingLoss(student_dim, teacher_dim)
        self.fitnet_weight = float(fitnet_weight)

    def forward(self, embeddings: Tensor, labels: Tensor | None = None, indices_tuple=None,
                ref_emb: Tensor | None = None, ref_labels: Tensor | None = None) -> Tensor:
        """RKD-DA plus the weighted FitNet loss of the student's ``embeddings`` against ``ref_emb``."""
        return (self.rkd(embeddings, labels, indices_tuple, ref_emb=ref_emb)
                + self.fitnet_weight * self.fitnet(embeddings, labels, None, ref_emb=ref_emb))


register_distillation_loss(
    "rkd-fitnet",
    lambda o, s, t: RKDFitNetLoss(s, t, o.distance_weight, o.angle_weight, 1.0),
    "RKD-DA + FitNet: distance_weight x RKD-D + angle_weight x RKD-A + FitNet (map to the teacher's width, MSE)",
    RKDOptions,
)
