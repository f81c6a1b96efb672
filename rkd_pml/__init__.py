"""Relational Knowledge Distillation for pytorch-metric-learning, with timm backbones."""

from .losses import RKDAngleLoss, RKDDistanceLoss, RKDLoss

__all__ = ["RKDAngleLoss", "RKDDistanceLoss", "RKDLoss"]
__version__ = "0.1.0"
