"""The Huber (smooth L1, delta = 1) error used by both RKD potentials."""

from torch import Tensor
from torch.nn import functional as F


def huber(student: Tensor, teacher: Tensor) -> Tensor:
    """Element-wise Huber error with delta 1 between two potentials of the same shape."""
    return F.smooth_l1_loss(student, teacher, reduction="none", beta=1.0)
