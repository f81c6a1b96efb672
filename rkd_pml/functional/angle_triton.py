"""The all-triplets angle sums (:func:`~rkd_pml.functional.angle_tiles.angle_sums`) in one
Triton kernel launch: the loss sum and the gradient accumulators of every tile pair at once.

The end points are cut into tiles of ``BLOCK_T``; one program takes a pair of end tiles
``I <= J`` and a range of vertices, and visits blocks of ``BLOCK_A`` vertices x ``BLOCK_T`` x
``BLOCK_T`` triplets with the arithmetic of :mod:`rkd_pml.functional.angle_kernels`: the law
of cosines on half squared distances and inverse distances, both already rescaled by a power
of two and with duplicates at ``r = 0`` (:mod:`rkd_pml.functional.relations`), in the dtype
of the inputs (float32 in practice; float64 works too). It adds its sums over ``c``, ``b``
and ``a`` into the ``N x N`` accumulators with atomic additions and writes one partial loss
sum; nothing else is launched but the zero-filled outputs and the final sums. Padding is
masked loads (``r = 0``: cosine 0, no error, no gradient).

Runs on CUDA; on the CPU only under Triton's interpreter (``TRITON_INTERPRET=1`` set before
``triton`` is imported), which is how the tests check it.
"""

from __future__ import annotations

import importlib.util
import os

import torch
from torch import Tensor

#: Vertices per block and end points per tile of the Triton kernel, and its warps per
#: program (a block of 4 x 32 x 32 triplets and its half-dozen temporaries: 32 values per
#: thread each with 8 warps). Chosen, not tuned: no GPU was at hand to measure.
BLOCK_A, BLOCK_T, NUM_WARPS = 4, 32, 8
#: Aim for about this many programs (several per streaming multiprocessor) when splitting
#: the vertices of each tile pair among programs.
TARGET_PROGRAMS = 1024


def interpreted() -> bool:
    """True when Triton runs its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "") == "1"


def triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def triton_supports(device: torch.device) -> bool:
    """Triton is installed and can run on ``device`` (CUDA, or any device when interpreted)."""
    return (torch.device(device).type == "cuda" or interpreted()) and triton_installed()


def _kernel():
    """The jitted kernel (Triton is imported on first use only: the CPU path never needs it)."""
    from .angle_triton_kernel import angle_kernel

    return angle_kernel


def _tile_pairs(nb: int, device: torch.device) -> tuple[Tensor, Tensor]:
    i, j = torch.triu_indices(nb, nb, device=device)
    return i.to(torch.int32).contiguous(), j.to(torch.int32).contiguous()


def triton_angle_sums(
    s_half_sq: Tensor,
    s_inv: Tensor,
    t_half_sq: Tensor,
    t_inv: Tensor,
    *,
    need_grad: bool,
    compute_dtype: torch.dtype = torch.float32,
    vertices: tuple[int, int] | None = None,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Same contract as :func:`~rkd_pml.functional.angle_tiles.angle_sums`, in one kernel launch.

    Inputs ``(N, N)``; returns ``(loss_sum, d_h, d_r_over_d)`` in float64 (the last two
    ``(N, N)`` or ``None``). The arithmetic and the accumulation run in ``compute_dtype``.
    """
    if not triton_installed():
        raise RuntimeError("Triton is not installed")
    n = s_half_sq.shape[0]
    device = s_half_sq.device
    lo, hi = (0, n) if vertices is None else vertices
    with torch.no_grad():
        mats = [m.detach().to(compute_dtype).contiguous() for m in (s_half_sq, s_inv, t_half_sq, t_inv)]
        nb = -(-n // BLOCK_T)
        pair_i, pair_j = _tile_pairs(nb, device)
        n_pairs = pair_i.numel()
        nv = max(hi - lo, 0)
        n_split = max(1, min(-(-nv // BLOCK_A), -(-TARGET_PROGRAMS // n_pairs)))
        chunk = -(-nv // n_split)
        chunk = -(-chunk // BLOCK_A) * BLOCK_A
        n_split = max(1, -(-nv // chunk)) if nv else 1
        loss = torch.zeros(n_pairs * n_split, dtype=compute_dtype, device=device)
        d_h = torch.zeros(n, n, dtype=compute_dtype, device=device) if need_grad else loss
        d_v = torch.zeros(n, n, dtype=compute_dtype, device=device) if need_grad else loss
        if nv:
            _kernel()[(n_pairs, n_split)](
                *mats, pair_i, pair_j, loss, d_h, d_v,
                n, n, lo, hi, chunk, n_split,
                NEED_GRAD=need_grad, BLOCK_A=BLOCK_A, BLOCK_T=BLOCK_T, num_warps=NUM_WARPS,
            )  # fmt: skip
        loss_sum = loss.sum(dtype=torch.float64)
        if not need_grad:
            return loss_sum, None, None
        return loss_sum, d_h.to(torch.float64), d_v.to(torch.float64)
