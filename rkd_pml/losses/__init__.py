"""PML loss functions for distillation: RKD and the baselines the RKD paper compares."""

from .base import DistillationLoss
from .darkrank import DarkRankLoss
from .fitnet import FitNetEmbeddingLoss
from .rkd import RKDAngleLoss, RKDDistanceLoss, RKDLoss, RelationalDistillationLoss

__all__ = [
    "DarkRankLoss",
    "DistillationLoss",
    "FitNetEmbeddingLoss",
    "RKDAngleLoss",
    "RKDDistanceLoss",
    "RKDLoss",
    "RelationalDistillationLoss",
]
