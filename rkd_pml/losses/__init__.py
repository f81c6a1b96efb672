"""PML loss functions for distillation: RKD and the baselines the RKD paper compares, the
prototypical loss of the few-shot setting, and the registry of distillation losses by name."""

from .base import DistillationLoss
from .darkrank import DarkRankLoss
from .fitnet import FitNetEmbeddingLoss
from .prototypical import PrototypicalLoss
from .rkd import RKDAngleLoss, RKDDistanceLoss, RKDLoss, RelationalDistillationLoss
from .registry import DISTILLATION_LOSSES, distillation_loss_names, register_distillation_loss

__all__ = [
    "DISTILLATION_LOSSES",
    "DarkRankLoss",
    "DistillationLoss",
    "FitNetEmbeddingLoss",
    "PrototypicalLoss",
    "RKDAngleLoss",
    "RKDDistanceLoss",
    "RKDLoss",
    "RelationalDistillationLoss",
    "distillation_loss_names",
    "register_distillation_loss",
]
