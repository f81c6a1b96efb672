"""Pairwise relations of one embedding batch: Gram matrix, distances and their mean.

Everything here is pure tensor math on a single ``(N, D)`` batch. The quantities are
``N x N`` (never ``N x N x D``) and are accumulated in float64 so that the small
differences RKD cares about (near-duplicate embeddings) survive the cancellation in
``|x_i|^2 + |x_j|^2 - 2 x_i.x_j``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

#: Pairs closer than this fraction of their norms (after centring) count as duplicates:
#: their distance is exactly 0 and they carry no gradient (a direction between two equal
#: points does not exist). Float32 inputs resolve differences of about 6e-8 per component,
#: so nothing a float32 model can express is lost.
DUPLICATE_TOLERANCE = 1e-6

#: The dtype in which relations are accumulated.
ACCUMULATE_DTYPE = torch.float64


@dataclass(frozen=True)
class Relations:
    """Pairwise structure of a batch ``x`` of shape ``(N, D)``.

    Attributes:
        gram: ``(N, N)`` inner products of the centred batch.
        dist: ``(N, N)`` Euclidean distances, exactly 0 on the diagonal and for duplicates.
        inv_dist: ``(N, N)`` 1 / dist, and 0 where ``dist`` is 0.
    """

    gram: Tensor
    dist: Tensor
    inv_dist: Tensor

    @property
    def size(self) -> int:
        return self.gram.shape[0]

    def mean_distance(self) -> Tensor:
        """Mean distance over the ``N (N - 1)`` ordered pairs of distinct examples (scalar)."""
        n = self.size
        return self.dist.sum() / (n * (n - 1))


def relations(x: Tensor) -> Relations:
    """Gram matrix and distances of ``x`` ``(N, D)``, accumulated in float64.

    The batch is centred first: distances and angles are translation invariant, and the
    centred Gram matrix has the smallest entries, hence the smallest rounding error.
    Gradients flow to ``x`` (none through duplicate pairs).
    """
    x = x.to(ACCUMULATE_DTYPE)
    x = x - x.mean(dim=0, keepdim=True)
    gram = x @ x.T
    sq_norms = gram.diagonal()
    scale = sq_norms.unsqueeze(0) + sq_norms.unsqueeze(1)
    sq_dist = scale - 2.0 * gram
    duplicate = sq_dist <= (DUPLICATE_TOLERANCE**2) * scale
    duplicate.fill_diagonal_(True)
    safe_sq = torch.where(duplicate, torch.ones_like(sq_dist), sq_dist)
    dist = torch.where(duplicate, torch.zeros_like(sq_dist), safe_sq.sqrt())
    inv_dist = torch.where(duplicate, torch.zeros_like(sq_dist), safe_sq.rsqrt())
    return Relations(gram=gram, dist=dist, inv_dist=inv_dist)


def triplet_cosines(rel: Relations, vertex: Tensor, end1: Tensor, end2: Tensor) -> Tensor:
    """Cosine of the angle at ``vertex`` between ``end1`` and ``end2``, shape ``(T,)``.

    ``cos = (G[e1, e2] - G[v, e1] - G[v, e2] + G[v, v]) / (d[v, e1] * d[v, e2])``; a
    degenerate triplet (an edge of length 0) has cosine 0, as in the official code, and no
    gradient. Index tensors have shape ``(T,)``.
    """
    g = rel.gram
    inner = g[end1, end2] - g[vertex, end1] - g[vertex, end2] + g[vertex, vertex]
    return inner * rel.inv_dist[vertex, end1] * rel.inv_dist[vertex, end2]
