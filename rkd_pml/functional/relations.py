"""Pairwise relations of one embedding batch: Gram matrix, distances and their mean.

Everything here is pure tensor math on a single ``(N, D)`` batch. The quantities are
``N x N`` (never ``N x N x D``) and are accumulated in float64 so that the small
differences RKD cares about (near-duplicate embeddings) survive the cancellation in
``|x_i|^2 + |x_j|^2 - 2 x_i.x_j``.

The centred batch is divided by a power of two that brings its largest entry into
``[0.5, 1)`` before anything is squared. Every consumer of the relations is scale
invariant (cosines, distances over their mean, rankings), and dividing by a power of two is
exact, so this changes no result; it keeps every relation of order 1, so that their
rounding to float32 for the ``N^3`` angle arithmetic neither overflows nor underflows
whatever the embeddings' norm (``1e-30`` or ``1e30`` alike).
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

    The batch is centred and divided by :attr:`scale` first: all lengths are in units of
    ``scale`` (multiply ``dist`` by it for the distances of ``x``).

    Attributes:
        gram: ``(N, N)`` inner products of the centred, rescaled batch.
        dist: ``(N, N)`` Euclidean distances, exactly 0 on the diagonal and for duplicates.
        inv_dist: ``(N, N)`` 1 / dist, and 0 where ``dist`` is 0.
        half_sq_dist: ``(N, N)`` half the squared distances, 0 where ``dist`` is 0. With it
            the cosine of the angle at vertex ``a`` between ``b`` and ``c`` is the law of
            cosines ``(h_ab + h_ac - h_bc) / (d_ab d_ac)``, whose rounding error stays of
            the order of the machine precision times ``d_ab / d_ac + d_ac / d_ab`` even for
            near-duplicate points.
        source_dtype: dtype of the embeddings the relations were computed from; the
            ``N^3`` angle arithmetic runs in float64 for float64 inputs, float32 otherwise.
        scale: 0-d float64 power of two (no gradient): the relations are those of
            ``(x - mean(x)) / scale``, whose largest absolute entry is in ``[0.5, 1)``.
    """

    gram: Tensor
    dist: Tensor
    inv_dist: Tensor
    half_sq_dist: Tensor
    source_dtype: torch.dtype
    scale: Tensor

    @property
    def size(self) -> int:
        return self.gram.shape[0]

    def mean_distance(self) -> Tensor:
        """Mean distance over the ``N (N - 1)`` ordered pairs of distinct examples (scalar)."""
        n = self.size
        return self.dist.sum() / (n * (n - 1))


def power_of_two_scale(x: Tensor, dim: int | None = None) -> Tensor:
    """``2^k`` with ``max |x| / 2^k`` in ``[0.5, 1)``, over all of ``x`` (0-d) or along ``dim``
    (kept as a size-1 dimension); 1 where ``x`` is all zeros. Detached, in ``x``'s dtype.

    Dividing by it is exact (no rounding), so a scale-invariant result is unchanged bit for bit.
    """
    top = x.detach().abs()
    top = top.amax() if dim is None else top.amax(dim=dim, keepdim=True)
    _, exponent = torch.frexp(top)
    return torch.ldexp(torch.ones_like(top), exponent)


def unit_rows(x: Tensor) -> Tensor:
    """Rows of ``x`` ``(N, D)`` L2-normalised in float64 ``(N, D)``; zero rows stay zero.

    Each row is first divided by a power of two (exact) so that its squared norm can neither
    overflow nor underflow: rows of norm ``1e30`` or ``1e-30`` become unit vectors too
    (``F.normalize`` in float32 gives zeros for the first and leaves the second unscaled).
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.to(ACCUMULATE_DTYPE)
        x = x / power_of_two_scale(x, dim=1)
        norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)
        positive = norm > 0
        return torch.where(positive, x / torch.where(positive, norm, torch.ones_like(norm)), 0.0)


def relations(x: Tensor, *, normalize: bool = False) -> Relations:
    """Gram matrix and distances of ``x`` ``(N, D)``, accumulated in float64.

    The batch is centred first (distances and angles are translation invariant, and the
    centred Gram matrix has the smallest entries, hence the smallest rounding error), then
    divided by :func:`power_of_two_scale` (exact; see the module docstring). With
    ``normalize`` the rows are L2-normalised first (:func:`unit_rows`). Gradients flow to
    ``x`` in its own dtype (none through duplicate pairs). Autocast is switched off here:
    half-precision inputs are upcast, never the other way round.
    """
    source_dtype = x.dtype
    with torch.autocast(device_type=x.device.type, enabled=False):
        y, scale = centred_batch(x, normalize=normalize)
        return relations_of_centred(y, scale, source_dtype)


def centred_batch(x: Tensor, *, normalize: bool = False) -> tuple[Tensor, Tensor]:
    """``(y, scale)``: ``y`` ``(N, D)`` float64 is ``x`` (L2-normalised rows first with
    ``normalize``) centred and divided by ``scale``, the 0-d power of two of
    :func:`power_of_two_scale` (detached). Differentiable w.r.t. ``x``."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        if normalize:
            x = unit_rows(x)
        # One pass: the float64 mean, then the float64 centred batch (exact differences).
        x = torch.sub(x, x.mean(dim=0, keepdim=True, dtype=ACCUMULATE_DTYPE))
        if x.dtype != ACCUMULATE_DTYPE:  # only for dtypes that do not promote to float64
            x = x.to(ACCUMULATE_DTYPE)
        scale = power_of_two_scale(x)
        return x / scale, scale


def relations_of_centred(y: Tensor, scale: Tensor, source_dtype: torch.dtype) -> Relations:
    """:class:`Relations` of a batch ``y`` ``(N, D)`` already formed by :func:`centred_batch`
    (the second half of :func:`relations`); differentiable w.r.t. ``y`` in grad mode."""
    gram = y @ y.T
    if torch.is_grad_enabled() and y.requires_grad:
        dist, inv_dist, half_sq = _distances(gram)
    else:
        dist, inv_dist, half_sq = _distances_inplace(gram)
    return Relations(
        gram=gram,
        dist=dist,
        inv_dist=inv_dist,
        half_sq_dist=half_sq,
        source_dtype=source_dtype,
        scale=scale,
    )


def row_relations(gram_rows: Tensor, sq_norms: Tensor, rows: slice) -> tuple[Tensor, Tensor, Tensor]:
    """Rows ``rows`` ``(R, N)`` of the half squared distances, distances and inverse distances
    of a batch ``y`` ``(N, D)`` formed by :func:`centred_batch`, from ``gram_rows = y[rows] @
    y.T`` ``(R, N)`` and the squared norms ``(N,)`` (no autograd): the rows of
    :func:`relations_of_centred`'s matrices, with the same duplicate rule, for ``R / N`` of
    the work. Take the squared norms from Gram matrix products too (the diagonal of each
    process's ``gram_rows``): their rounding then matches that of the cross products, which
    keeps near pairs as well resolved as in the whole Gram matrix."""
    scale = sq_norms[rows].unsqueeze(1) + sq_norms.unsqueeze(0)
    sq_dist = torch.add(scale, gram_rows, alpha=-2.0)
    duplicate = sq_dist <= (DUPLICATE_TOLERANCE**2) * scale
    duplicate[:, rows].fill_diagonal_(True)
    del scale
    sq_dist.masked_fill_(duplicate, 1.0)
    dist = sq_dist.sqrt().masked_fill_(duplicate, 0.0)
    inv_dist = sq_dist.rsqrt().masked_fill_(duplicate, 0.0)
    half_sq = sq_dist.mul_(0.5).masked_fill_(duplicate, 0.0)
    return half_sq, dist, inv_dist


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
