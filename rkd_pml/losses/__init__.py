"""PML loss functions for distillation: RKD, the baselines the RKD paper compares, the relational
losses users compare RKD with (PKT, SP, CC, relaxed contrastive), the prototypical loss of the
few-shot setting, and the registry of distillation losses by name."""

from .base import DistillationLoss
from .compatibility import EmbeddingCompatibilityLoss
from .correlation_congruence import CorrelationCongruenceLoss
from .darkrank import DarkRankLoss
from .fitnet import FitNetEmbeddingLoss
from .pkt import PKTLoss
from .prototypical import PrototypicalLoss
from .rkd import RKDAngleLoss, RKDDistanceLoss, RKDLoss, RelationalDistillationLoss
from .rkd_fitnet import RKDFitNetLoss
from .similarity_preserving import SimilarityPreservingLoss
from .relaxed_contrastive import RelaxedContrastiveLoss
from .registry import DISTILLATION_LOSSES, distillation_loss_names, register_distillation_loss

__all__ = [
    "DISTILLATION_LOSSES",
    "CorrelationCongruenceLoss",
    "DarkRankLoss",
    "DistillationLoss",
    "EmbeddingCompatibilityLoss",
    "FitNetEmbeddingLoss",
    "PKTLoss",
    "PrototypicalLoss",
    "RKDAngleLoss",
    "RKDDistanceLoss",
    "RKDFitNetLoss",
    "RKDLoss",
    "RelationalDistillationLoss",
    "RelaxedContrastiveLoss",
    "SimilarityPreservingLoss",
    "distillation_loss_names",
    "register_distillation_loss",
]
