"""Relational Knowledge Distillation for pytorch-metric-learning, with timm backbones."""

from .data import DATASETS, class_balanced_sampler, load_dataset
from .evaluation import embed, evaluate
from .losses import DarkRankLoss, FitNetEmbeddingLoss, RKDAngleLoss, RKDDistanceLoss, RKDLoss
from .models import EmbeddingModel, FrozenModel, freeze_teacher

__all__ = [
    "DATASETS",
    "DarkRankLoss",
    "EmbeddingModel",
    "FitNetEmbeddingLoss",
    "FrozenModel",
    "RKDAngleLoss",
    "RKDDistanceLoss",
    "RKDLoss",
    "class_balanced_sampler",
    "embed",
    "evaluate",
    "freeze_teacher",
    "load_dataset",
]
__version__ = "0.1.0"
