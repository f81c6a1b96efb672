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
        half_sq_dist: ``(N, N)`` half the squared distances, 0 where ``dist`` is 0. With it
            the cosine of the angle at vertex ``a`` between ``b`` and ``c`` is the law of
            cosines ``(h_ab + h_ac - h_bc) / (d_ab d_ac)``, whose rounding error stays of
            the order of the machine precision times ``d_ab / d_ac + d_ac / d_ab`` even for
            near-duplicate points.
        source_dtype: dtype of the embeddings the relations were computed from; the
            ``N^3`` angle arithmetic runs in float64 for float64 inputs, float32 otherwise.
    """

    gram: Tensor
    dist: Tensor
    inv_dist: Tensor
    half_sq_dist: Tensor
    source_dtype: torch.dtype

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
    Gradients flow to ``x`` in its own dtype (none through duplicate pairs). Autocast is
    switched off here: half-precision inputs are upcast, never the other way round.
    """
    source_dtype = x.dtype
    with torch.autocast(device_type=x.device.type, enabled=False):
        # One pass: the float64 mean, then the float64 centred batch (exact differences).
        x = torch.sub(x, x.mean(dim=0, keepdim=True, dtype=ACCUMULATE_DTYPE))
        if x.dtype != ACCUMULATE_DTYPE:  # only for dtypes that do not promote to float64
            x = x.to(ACCUMULATE_DTYPE)
        gram = x @ x.T
        if torch.is_grad_enabled() and x.requires_grad:
            dist, inv_dist, half_sq = _distances(gram)
        else:
            dist, inv_dist, half_sq = _distances_inplace(gram)
    return Relations(
        gram=gram, dist=dist, inv_dist=inv_dist, half_sq_dist=half_sq, source_dtype=source_dtype
    )


def _duplicates(sq_dist: Tensor, scale: Tensor) -> Tensor:
    duplicate = sq_dist <= (DUPLICATE_TOLERANCE**2) * scale
    duplicate.fill_diagonal_(True)
    return duplicate


def _distances(gram: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Distances, inverse distances and half squared distances (differentiable)."""
    sq_norms = gram.diagonal()
    scale = sq_norms.unsqueeze(0) + sq_norms.unsqueeze(1)
    sq_dist = scale - 2.0 * gram
    duplicate = _duplicates(sq_dist.detach(), scale.detach())
    safe_sq = torch.where(duplicate, torch.ones_like(sq_dist), sq_dist)
    zero = torch.zeros((), dtype=sq_dist.dtype, device=sq_dist.device)
    dist = torch.where(duplicate, zero, safe_sq.sqrt())
    inv_dist = torch.where(duplicate, zero, safe_sq.rsqrt())
    half_sq = torch.where(duplicate, zero, 0.5 * safe_sq)
    return dist, inv_dist, half_sq


def _distances_inplace(gram: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Same values as :func:`_distances` with fewer temporaries (no autograd)."""
    sq_norms = gram.diagonal()
    scale = sq_norms.unsqueeze(0) + sq_norms.unsqueeze(1)
    sq_dist = torch.add(scale, gram, alpha=-2.0)
    duplicate = _duplicates(sq_dist, scale)
    del scale
    sq_dist.masked_fill_(duplicate, 1.0)
    dist = sq_dist.sqrt()
    inv_dist = sq_dist.rsqrt()
    half_sq = sq_dist.mul_(0.5)
    for m in (dist, inv_dist, half_sq):
        m.masked_fill_(duplicate, 0.0)
    return dist, inv_dist, half_sq


def triplet_cosines(rel: Relations, vertex: Tensor, end1: Tensor, end2: Tensor) -> Tensor:
    """Cosine of the angle at ``vertex`` between ``end1`` and ``end2``, shape ``(T,)``.

    ``cos = (h[v, e1] + h[v, e2] - h[e1, e2]) / (d[v, e1] d[v, e2])`` with ``h`` half the
    squared distances (the law of cosines; equal to the Gram form
    ``G[e1, e2] - G[v, e1] - G[v, e2] + G[v, v]`` in the numerator). A degenerate triplet
    (an edge of length 0) has cosine 0, as in the official code, and no gradient. Index
    tensors have shape ``(T,)``; the cost is proportional to ``T``.
    """
    h = rel.half_sq_dist
    inner = h[vertex, end1] + h[vertex, end2] - h[end1, end2]
    return inner * rel.inv_dist[vertex, end1] * rel.inv_dist[vertex, end2]
