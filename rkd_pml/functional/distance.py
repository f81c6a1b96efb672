"""RKD distance-wise potentials and per-pair losses (pure tensor math)."""

from __future__ import annotations

import torch
from torch import Tensor

from .huber import huber
from .relations import Relations


def distance_potentials(rel: Relations, first: Tensor, second: Tensor) -> Tensor:
    """``psi_D = d(first, second) / mu`` for index tensors of shape ``(P,)``.

    ``mu`` is the mean distance over all pairs of the batch, whatever pairs are asked for.
    """
    # A fully collapsed batch (mean distance 0) has all potentials 0, not 0 / 0.
    mu = rel.mean_distance().clamp_min(torch.finfo(rel.dist.dtype).tiny)
    return rel.dist[first, second] / mu


def rkd_distance_pair_losses(
    student: Relations, teacher: Relations, first: Tensor, second: Tensor
) -> Tensor:
    """Huber error between student and teacher distance potentials, shape ``(P,)``."""
    with torch.no_grad():
        target = distance_potentials(teacher, first, second)
    return huber(distance_potentials(student, first, second), target)


def all_distinct_pairs(n: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Every ordered pair ``(i, j)`` with ``i != j``: two index tensors of shape ``(N (N-1),)``."""
    first, second = torch.where(~torch.eye(n, dtype=torch.bool, device=device))
    return first, second
