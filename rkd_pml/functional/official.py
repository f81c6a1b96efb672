"""The official RKD formulation, written out: the reference for tests and benchmarks.

Not used by the losses. A plain transcription of the published description (Park et al.,
CVPR 2019) and of the code every public implementation copies, kept deliberately naive:
``N x N x D`` difference tensors, all ``N^3`` cosines, means over every index tuple. The
tests compare the package's losses with it (exact factors in float64) and the benchmarks
time it; the package's own semantics and where they differ (degenerate entries, duplicates,
precision) are documented in :mod:`rkd_pml.losses.rkd`.

* distances from the Gram matrix, ``|x_i|^2 + |x_j|^2 - 2 x_i.x_j`` clamped at ``1e-12``
  before the square root, diagonal set to 0, divided by the mean of the positive entries;
  Huber (smooth L1, beta 1) mean over all ``N^2`` entries;
* angles from the ``N x N x D`` tensor of difference vectors, each L2-normalised
  (``F.normalize``, eps ``1e-12``: a zero difference gives a zero vector), all ``N^3``
  cosines by a batched matmul (vertex = first index); Huber mean over all ``N^3`` entries;
* the teacher side runs without gradient; RKD-DA = ``1 * RKD-D + 2 * RKD-A``;
* the hard DarkRank baseline of the same code: scores ``-alpha * d ** beta`` from these
  distances, the teacher's order by sorting its scores (the first entry, the anchor
  itself, skipped), the mean negative Plackett-Luce log-likelihood of that order.

All functions take student ``(N, Ds)`` and teacher ``(N, Dt)`` embeddings and return a
scalar.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F


def pairwise_distances(e: Tensor, eps: float = 1e-12) -> Tensor:
    """``(N, N)`` Euclidean distances from the Gram matrix, clamped at ``eps`` before the
    square root, diagonal exactly 0."""
    sq = e.pow(2).sum(dim=1)
    d = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * e @ e.t()).clamp(min=eps).sqrt().clone()
    d[range(len(e)), range(len(e))] = 0
    return d


def rkd_distance(student: Tensor, teacher: Tensor) -> Tensor:
    """RKD-D: Huber mean over all ``N^2`` entries of the mean-normalised distances."""
    with torch.no_grad():
        t_d = pairwise_distances(teacher)
        t_d = t_d / t_d[t_d > 0].mean()
    d = pairwise_distances(student)
    d = d / d[d > 0].mean()
    return F.smooth_l1_loss(d, t_d, reduction="mean")


def angle_cosines(x: Tensor) -> Tensor:
    """``(N^3,)`` cosines, entry ``(a, b, c)`` the angle at vertex ``a`` between ``b`` and ``c``."""
    unit = F.normalize(x.unsqueeze(0) - x.unsqueeze(1), p=2, dim=2)
    return torch.bmm(unit, unit.transpose(1, 2)).view(-1)


def rkd_angle(student: Tensor, teacher: Tensor) -> Tensor:
    """RKD-A: Huber mean over all ``N^3`` entries of the cosines."""
    with torch.no_grad():
        t_angle = angle_cosines(teacher)
    return F.smooth_l1_loss(angle_cosines(student), t_angle, reduction="mean")


def rkd_da(student: Tensor, teacher: Tensor, w_dist: float = 1.0, w_angle: float = 2.0) -> Tensor:
    """``w_dist * RKD-D + w_angle * RKD-A`` (the paper's metric-learning weights by default)."""
    return w_dist * rkd_distance(student, teacher) + w_angle * rkd_angle(student, teacher)


def hard_darkrank(
    student: Tensor, teacher: Tensor, alpha: float = 3.0, beta: float = 3.0, list_length: int = 4
) -> Tensor:
    """Hard DarkRank: the teacher's ``list_length`` best-scored others per anchor, in order,
    and the mean over anchors of ``-sum_k [s_k - logsumexp_{m >= k} s_m]`` under the
    student's scores."""
    t_score = -alpha * pairwise_distances(teacher).pow(beta)
    s_score = -alpha * pairwise_distances(student).pow(beta)
    idx = t_score.sort(dim=1, descending=True)[1][:, 1 : list_length + 1]
    ordered = torch.gather(s_score, 1, idx)
    tails = torch.stack([torch.logsumexp(ordered[:, k:], dim=1) for k in range(idx.size(1))], dim=1)
    return (-(ordered - tails).sum(dim=1)).mean()


__all__ = ["angle_cosines", "hard_darkrank", "pairwise_distances", "rkd_angle", "rkd_da", "rkd_distance"]
