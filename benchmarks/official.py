"""The official RKD formulation, written out for the benchmarks (not used by the package).

Transcribed from its description (Park et al., CVPR 2019, and the code every public
implementation copies):

* distances from the Gram matrix, ``|x_i|^2 + |x_j|^2 - 2 x_i.x_j`` clamped at 1e-12
  before the square root, diagonal set to 0, divided by the mean of the positive entries;
  Huber (smooth L1, beta 1) mean over all ``N^2`` entries;
* angles from the ``N x N x D`` tensor of difference vectors, each L2-normalised
  (``F.normalize``, eps 1e-12), all ``N^3`` cosines by a batched matmul (vertex = first
  index); Huber mean over all ``N^3`` entries;
* the teacher side runs without gradient; RKD-DA = 1 * RKD-D + 2 * RKD-A.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def pairwise_distances(e: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    sq = e.pow(2).sum(dim=1)
    d = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * e @ e.t()).clamp(min=eps).sqrt().clone()
    d[range(len(e)), range(len(e))] = 0
    return d


def rkd_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        t_d = pairwise_distances(teacher)
        t_d = t_d / t_d[t_d > 0].mean()
    d = pairwise_distances(student)
    d = d / d[d > 0].mean()
    return F.smooth_l1_loss(d, t_d, reduction="mean")


def _cosines(x: torch.Tensor) -> torch.Tensor:
    unit = F.normalize(x.unsqueeze(0) - x.unsqueeze(1), p=2, dim=2)
    return torch.bmm(unit, unit.transpose(1, 2)).view(-1)


def rkd_angle(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        t_angle = _cosines(teacher)
    return F.smooth_l1_loss(_cosines(student), t_angle, reduction="mean")


def rkd_da(student: torch.Tensor, teacher: torch.Tensor, w_dist: float = 1.0, w_angle: float = 2.0):
    """``w_dist * RKD-D + w_angle * RKD-A`` (the paper's metric-learning weights by default)."""
    return w_dist * rkd_distance(student, teacher) + w_angle * rkd_angle(student, teacher)
