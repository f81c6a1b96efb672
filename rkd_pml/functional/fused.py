"""The all-triplets RKD angle loss in ``O(N^2)`` memory, with hand-derived first and
second derivatives.

Notation: ``h`` is half the squared distances, ``r`` the inverse distances (0 for
duplicates and on the diagonal) of one model's batch. The cosine of the angle at vertex
``a`` between ``b`` and ``c`` is ``cos = (h_ab + h_ac - h_bc) r_ab r_ac`` (law of cosines).
With ``e = cos_s - cos_t`` (student minus teacher) and ``g = clamp(e, -1, 1)`` the Huber
error is ``huber(e) = g (e - g / 2)`` and its derivative is ``g``. For the sum of the Huber
errors over the ordered triplets ``(a, b, c)`` of distinct examples, with
``W = g r_ab r_ac`` and ``V = g cos_s``:

* ``d/dh_ab = sum_c W_abc + sum_c W_acb`` (the pair as an arm of the angle at ``a``),
* ``d/dh_bc = -sum_a W_abc`` (the pair as the side opposite the vertex),
* ``d/dr_ab = d_ab (sum_c V_abc + sum_c V_acb)``.

The angle is symmetric in its two end points, so only end pairs ``b < c`` are visited
(:mod:`rkd_pml.functional.angle_tiles`): the forward pass produces the loss and the
gradient w.r.t. ``h`` and ``r`` together; nothing ``N^3`` is ever stored, and the backward
pass only scales the saved ``N x N`` gradients.

Second derivatives (``create_graph=True``: gradient penalties, meta-learning, Hessian-vector
products) are exact too: a backward pass run with grad mode on returns the saved gradient
through :class:`_AngleGradient`, whose own backward is the Hessian-vector product of the
same triplet sum, evaluated tile by tile by the eager kernel
(:func:`~rkd_pml.functional.angle_kernels.block_hvp`), again in ``O(N^2)`` memory. Third
derivatives are refused with a RuntimeError (the per-triplet path of the losses, with a
reducer other than ``MeanReducer`` or an ``indices_tuple``, is plain autograd and has them).

The relations are rounded to the compute dtype (float32 unless the embeddings were
float64) only after being formed in float64 from the centred batch scaled to order 1, and
the law of cosines keeps the rounding error of a cosine near
``eps (d_ab / d_ac + d_ac / d_ab)``: near-duplicate embeddings (distances of 1e-3 of their
norm) keep float32 cosines accurate to ~1e-4 and below, where the Gram form
``G_bc - G_ab - G_ac + G_aa`` would cancel catastrophically.

Under data parallelism (:mod:`rkd_pml.functional.angle_share`, set up by
:func:`rkd_pml.distributed.distributed_rkd`) the losses normally take
:mod:`rkd_pml.functional.rkd_share` instead; where this function is called with a share in
force (second derivatives, or a direct call) each process evaluates the triplets whose vertex
is among its own rows and the loss sum and ``N x N`` gradients are summed across the
processes in the forward pass; the second derivative is evaluated whole on every process.

Two interchangeable kernels evaluate a tile pair: an eager one (plain PyTorch ops on
blocks of vertices of a few MiB, always available) and the same arithmetic fused by
``torch.compile`` (:mod:`rkd_pml.functional.angle_backend`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .angle_backend import (  # noqa: F401 - the public names of the angle kernels' backends
    AUTO_COMPILE_MIN_BATCH,
    BACKEND_ENV,
    BACKENDS,
    CompiledKernelUnavailable,
    compile_failures,
    compiled_kernel,
    resolve_backend,
)
from .angle_share import current_share, sum_shares
from .angle_tiles import TILE_SIZES, angle_hvp, angle_sums, tile_size  # noqa: F401

#: Raised for a third derivative of the fused all-triplets angle loss.
THIRD_ORDER_MESSAGE = (
    "the fused all-triplets RKD angle loss has exact first and second derivatives only; a "
    "third one was requested (create_graph=True through a Hessian-vector product). Compute "
    "that backward without create_graph, or use the per-triplet path (an indices_tuple, or "
    "a reducer other than MeanReducer), which is plain autograd."
)


class _AllTripletsAngleMean(torch.autograd.Function):
    """Mean Huber error over ordered triplets of distinct examples (see module docstring).

    Differentiable w.r.t. the student's ``h`` and ``r``; the forward pass computes the
    gradient block by block and saves the two ``N x N`` results with the ``N x N`` inputs.
    """

    @staticmethod
    def forward(ctx, s_half_sq, s_inv, s_dist, t_half_sq, t_inv, need_grad, backend, compute_dtype, tile):
        n = s_half_sq.shape[0]
        norm = float(n * (n - 1) * (n - 2))
        share = current_share(n)
        loss_sum, d_h, d_r_over_d = angle_sums(
            s_half_sq, s_inv, t_half_sq, t_inv,
            need_grad=need_grad, backend=backend, compute_dtype=compute_dtype, tile=tile,
            vertices=None if share is None else (share.start, share.stop),
        )  # fmt: skip
        if share is not None:  # this process's share of the triplets: sum over the processes
            loss_sum, d_h, d_r_over_d = sum_shares(share, loss_sum, d_h, d_r_over_d, compute_dtype)
        if need_grad:
            d_h.div_(norm)
            d_r = d_r_over_d.mul_(s_dist.detach().to(torch.float64)).div_(norm)
            ctx.save_for_backward(
                s_half_sq, s_inv, t_half_sq, t_inv, d_h.to(s_half_sq.dtype), d_r.to(s_inv.dtype)
            )
            ctx.settings = (compute_dtype, tile, norm)
        return (loss_sum / norm).to(s_half_sq.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        s_h, s_r, t_h, t_r, d_h, d_r = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: the gradient must be differentiable
            d_h, d_r = _AngleGradient.apply(s_h, s_r, t_h, t_r, d_h, d_r, *ctx.settings)
        return grad_out * d_h, grad_out * d_r, None, None, None, None, None, None, None


class _AngleGradient(torch.autograd.Function):
    """The gradient ``(d_h, d_r)`` ``(N, N)`` each of the all-triplets mean, as a function of
    the student's ``h`` and ``r`` ``(N, N)``: its forward returns the gradient computed by
    :class:`_AllTripletsAngleMean`, its backward the Hessian-vector product."""

    @staticmethod
    def forward(ctx, s_half_sq, s_inv, t_half_sq, t_inv, d_h, d_r, compute_dtype, tile, norm):
        ctx.save_for_backward(s_half_sq, s_inv, t_half_sq, t_inv)
        ctx.settings = (compute_dtype, tile, norm)
        return d_h.clone(), d_r.clone()

    @staticmethod
    def backward(ctx, u, w):
        if torch.is_grad_enabled() and any(ctx.needs_input_grad[:2]):
            raise RuntimeError(THIRD_ORDER_MESSAGE)
        s_h, s_r, t_h, t_r = ctx.saved_tensors
        compute_dtype, tile, norm = ctx.settings
        hh, hr = angle_hvp(s_h, s_r, t_h, t_r, u, w, compute_dtype=compute_dtype, tile=tile)
        return (hh / norm).to(s_h.dtype), (hr / norm).to(s_r.dtype), None, None, None, None, None, None, None


@torch.compiler.disable
def all_triplets_angle_mean(
    s_half_sq: Tensor,
    s_inv: Tensor,
    s_dist: Tensor,
    t_half_sq: Tensor,
    t_inv: Tensor,
    *,
    backend: str = "auto",
    compute_dtype: torch.dtype = torch.float32,
    tile: int | None = None,
) -> Tensor:
    """Mean Huber error between student and teacher cosines over all ordered triplets of
    distinct examples (scalar, dtype of ``s_half_sq``); twice differentiable w.r.t. the
    student's ``s_half_sq`` and ``s_inv`` ``(N, N)``. Teacher inputs are treated as constants."""
    need_grad = torch.is_grad_enabled() and (s_half_sq.requires_grad or s_inv.requires_grad)
    return _AllTripletsAngleMean.apply(
        s_half_sq, s_inv, s_dist, t_half_sq.detach(), t_inv.detach(), need_grad, backend, compute_dtype, tile
    )
