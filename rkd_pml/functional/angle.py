"""RKD angle-wise potentials and losses (pure tensor math).

The angle potential of a triplet is the cosine of the angle at its vertex. It is computed
from the pairwise relations (see :mod:`rkd_pml.functional.relations`), never from an
``N x N x D`` tensor of difference vectors.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .fused import all_triplets_angle_mean
from .huber import huber
from .relations import Relations, triplet_cosines

#: Kept for backward compatibility; the all-triplets loss now works in fixed-size tiles
#: (see :mod:`rkd_pml.functional.fused`) and ignores it.
DEFAULT_BLOCK_ELEMENTS = 2**22


def rkd_angle_triplet_losses(
    student: Relations, teacher: Relations, vertex: Tensor, end1: Tensor, end2: Tensor
) -> Tensor:
    """Huber error between student and teacher cosines at ``vertex``, shape ``(T,)``.

    Cost proportional to the number of triplets ``T`` (the relations are given).
    """
    with torch.no_grad():
        target = triplet_cosines(teacher, vertex, end1, end2)
    return huber(triplet_cosines(student, vertex, end1, end2), target)


def all_distinct_triplets(n: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Every ordered triplet of distinct indices: three tensors of shape ``(N (N-1) (N-2),)``."""
    idx = torch.arange(n, device=device)
    v, e1, e2 = torch.meshgrid(idx, idx, idx, indexing="ij")
    keep = (v != e1) & (v != e2) & (e1 != e2)
    return v[keep], e1[keep], e2[keep]


def angle_compute_dtype(student: Relations, teacher: Relations) -> torch.dtype:
    """float64 when either side came from float64 embeddings, else float32."""
    return compute_dtype_of(student.source_dtype, teacher.source_dtype)


def compute_dtype_of(*source_dtypes: torch.dtype) -> torch.dtype:
    """float64 when any of the embeddings' dtypes is float64, else float32."""
    return torch.float64 if torch.float64 in source_dtypes else torch.float32


def rkd_angle_all_triplets_mean(
    student: Relations,
    teacher: Relations,
    *,
    backend: str = "auto",
    tile: int | None = None,
) -> Tensor:
    """Mean Huber error over all ``N (N-1) (N-2)`` ordered triplets of distinct examples.

    Exact (float64 for float64 embeddings; float32 arithmetic on float64 relations
    otherwise), in ``O(N^2)`` memory whatever ``N``: the triplets are visited tile by tile
    and the gradient w.r.t. the student's relations is accumulated during the forward pass,
    so nothing ``N^3`` is stored for backward. Second derivatives (``create_graph=True``)
    are exact as well, also in ``O(N^2)`` memory; a third derivative raises RuntimeError
    (see :mod:`rkd_pml.functional.fused`).

    Args:
        backend: ``"auto"`` (torch.compile-fused kernel for large batches when it compiles,
            else the eager one), ``"compiled"`` (fail if it does not compile) or ``"eager"``.
        tile: tile size (vertices per block and end points per tile); default per device.

    Returns a scalar in the dtype of the relations (0 when ``N < 3``).
    """
    n = student.size
    if n < 3:
        return student.gram.sum() * 0.0
    return all_triplets_angle_mean(
        student.half_sq_dist,
        student.inv_dist,
        student.dist,
        teacher.half_sq_dist,
        teacher.inv_dist,
        backend=backend,
        compute_dtype=angle_compute_dtype(student, teacher),
        tile=tile,
    )
