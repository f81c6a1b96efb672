"""PML loss functions for distillation."""

from .rkd import RKDAngleLoss, RKDDistanceLoss, RKDLoss, RelationalDistillationLoss

__all__ = ["RKDAngleLoss", "RKDDistanceLoss", "RKDLoss", "RelationalDistillationLoss"]
