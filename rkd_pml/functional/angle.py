"""RKD angle-wise potentials and losses (pure tensor math).

The angle potential of a triplet is the cosine of the angle at its vertex. It is computed
from the Gram matrix (see :mod:`rkd_pml.functional.relations`), never from an
``N x N x D`` tensor of difference vectors.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from .huber import huber
from .relations import Relations, triplet_cosines

#: Number of ``N x N`` vertex slices processed at once by the all-triplets loss.
DEFAULT_BLOCK_ELEMENTS = 2**22


def rkd_angle_triplet_losses(
    student: Relations, teacher: Relations, vertex: Tensor, end1: Tensor, end2: Tensor
) -> Tensor:
    """Huber error between student and teacher cosines at ``vertex``, shape ``(T,)``."""
    with torch.no_grad():
        target = triplet_cosines(teacher, vertex, end1, end2)
    return huber(triplet_cosines(student, vertex, end1, end2), target)


def all_distinct_triplets(n: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Every ordered triplet of distinct indices: three tensors of shape ``(N (N-1) (N-2),)``."""
    idx = torch.arange(n, device=device)
    v, e1, e2 = torch.meshgrid(idx, idx, idx, indexing="ij")
    keep = (v != e1) & (v != e2) & (e1 != e2)
    return v[keep], e1[keep], e2[keep]


def _block_cosines(gram: Tensor, inv_dist: Tensor, rows: Tensor) -> Tensor:
    """Cosines at the vertices ``rows`` ``(B,)`` for all end pairs: ``(B, N, N)``."""
    g_vb = gram[rows]  # (B, N)
    g_vv = gram[rows, rows]  # (B,)
    inner = gram.unsqueeze(0) - g_vb.unsqueeze(2) - g_vb.unsqueeze(1) + g_vv[:, None, None]
    r = inv_dist[rows]
    return inner * r.unsqueeze(2) * r.unsqueeze(1)


def _block_loss_sum(
    s_gram: Tensor, s_inv: Tensor, t_gram: Tensor, t_inv: Tensor, rows: Tensor
) -> Tensor:
    n = s_gram.shape[0]
    err = huber(_block_cosines(s_gram, s_inv, rows), _block_cosines(t_gram, t_inv, rows))
    off_diag = ~torch.eye(n, dtype=torch.bool, device=err.device)
    return (err * off_diag).sum()


def rkd_angle_all_triplets_mean(
    student: Relations, teacher: Relations, block_elements: int = DEFAULT_BLOCK_ELEMENTS
) -> Tensor:
    """Mean Huber error over all ``N (N-1) (N-2)`` ordered triplets of distinct examples.

    Works through the vertices in blocks of ``(B, N, N)`` cosines; each block is
    recomputed during backward instead of being stored, so memory is ``O(N^2)`` plus one
    block. Returns a scalar (0 when ``N < 3``).
    """
    n = student.size
    if n < 3:
        return student.gram.sum() * 0.0
    t_gram, t_inv = teacher.gram.detach(), teacher.inv_dist.detach()
    block = max(1, block_elements // (n * n))
    total = student.gram.new_zeros(())
    for start in range(0, n, block):
        rows = torch.arange(start, min(start + block, n), device=student.gram.device)
        if torch.is_grad_enabled() and student.gram.requires_grad:
            part = checkpoint(
                _block_loss_sum, student.gram, student.inv_dist, t_gram, t_inv, rows,
                use_reentrant=False,
            )
        else:
            part = _block_loss_sum(student.gram, student.inv_dist, t_gram, t_inv, rows)
        total = total + part
    return total / (n * (n - 1) * (n - 2))
