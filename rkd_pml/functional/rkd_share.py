"""RKD-D and the all-triplets RKD-A of a global batch shared out among processes, with the
gradient w.r.t. the embeddings formed analytically.

Every process holds the whole (gathered) batch of ``N`` rows. Inside
:func:`~rkd_pml.functional.angle_share.sharing_triplets` each one forms the relations of both
models for its own ``R = N / P`` rows only, without autograd (``R x N`` Gram rows and
element-wise work; no ``N x N`` autograd graph), and receives the half squared distances of
the other rows (the opposite sides of its angles) from the other processes, with the per-row
distance sums that give the mean distance of the whole batch (two all-gathers: the squared
norms, then those rows). It evaluates the RKD-D pairs ``(i, j)`` and the angle triplets whose
first index (the vertex) is one of its own rows, and turns the derivative of each term w.r.t.
the squared distances ``s_ij = |y_i - y_j|^2`` into the gradient w.r.t. the centred batch
``y`` ``(N, D)``::

    dL/dy = 2 (diag(S 1) - S) y,   S = C + C^T,   C_ij = dL/ds_ij   (0 for duplicate pairs).

Everything is laid out in the row order common to all processes. The loss shares and these
``N x D`` gradients are summed across the processes by one all-reduce in the forward pass
(``2 + 2 N D`` float64 numbers at most), so each process ends with the loss and gradient of
the whole batch; the backward pass only scales the saved gradients (no collective).

RKD-D normalises by the mean distance ``mu`` of the whole batch, known to every process (the
gathered row sums). Its derivative through ``mu`` needs a sum over all pairs,
``A = sum_ij g_ij d_ij`` (``g`` the Huber derivative): the coefficient of pair ``(i, j)`` is
``(g_ij / (M mu) - A / (M mu)^2) r_ij / 2`` (``M = N (N - 1)``, ``r`` the inverse distance), so
the shares of ``A`` are summed first (an all-reduce of one number) and each process then forms
the gradient of its own rows' pairs at once.

Second derivatives (``create_graph=True``): the backward pass recomputes the loss by the
differentiable path (:func:`~rkd_pml.functional.relations.relations_of_centred`, the fused
angle term with its own sharing) and differentiates that, so the second derivative is the
exact one of the unshared path.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from .angle import compute_dtype_of, rkd_angle_all_triplets_mean
from .angle_backend import wants_triton
from .angle_share import TripletShare, sharing_triplets
from .angle_tiles import _no_autocast, angle_sums
from .distance import all_distinct_pairs, rkd_distance_pair_losses
from .relations import relations_of_centred, row_relations


def pair_gradient(c: Tensor, y: Tensor) -> Tensor:
    """``dL/dy`` ``(N, D)`` for ``dL/ds = c`` ``(N, N)``, ``s_ij = |y_i - y_j|^2``."""
    s = c + c.T
    return 2.0 * (s.sum(dim=1, keepdim=True) * y - s @ y)


def row_pair_gradient(cb: Tensor, rows: slice, y: Tensor) -> Tensor:
    """:func:`pair_gradient` of a ``c`` that is zero outside ``rows``; ``cb`` ``(R, N)`` is
    ``c[rows]`` (two ``R x N x D`` products instead of one ``N x N x D``)."""
    g = -(cb.T @ y[rows])
    g[rows] -= cb @ y
    degree = cb.sum(dim=0)
    degree[rows] += cb.sum(dim=1)
    return 2.0 * (g + degree.unsqueeze(1) * y)


def _mean_distance(total: Tensor, n: int) -> tuple[Tensor, bool]:
    """Mean distance over the ``N (N - 1)`` pairs from the sum of all distances, clamped at
    the smallest normal number, and whether it is above it (has a derivative)."""
    raw = total / (n * (n - 1))
    tiny = torch.finfo(total.dtype).tiny
    return raw.clamp_min(tiny), bool(raw >= tiny)


class _Batch:
    """What this process needs of both models' relations, in the common row order:
    ``h_s``, ``h_t`` ``(N, N)`` half squared distances (float64 or the compute dtype),
    ``r_s``, ``r_t`` inverse distances, ``(N, N)`` or the vertex rows alone ``(R, N)``, ``d_s``, ``d_t``
    and ``ri_s`` ``(R, N)`` distances and inverse distances of the vertex rows, ``total_s``,
    ``total_t`` the sums of all distances (float64 0-d)."""

    def __init__(self, yc: Tensor, ytc: Tensor, rows: slice, share: TripletShare, dtype: torch.dtype, whole: bool):
        n = yc.shape[0]
        if whole or share.gather is None:  # every row here (the Triton kernel reads r everywhere)
            s, t = (relations_of_centred(z, torch.ones(()), torch.float64) for z in (yc, ytc))
            self.h_s, self.r_s, self.h_t, self.r_t = s.half_sq_dist, s.inv_dist, t.half_sq_dist, t.inv_dist
            self.d_s, self.d_t, self.ri_s = s.dist[rows], t.dist[rows], s.inv_dist[rows]
            self.total_s, self.total_t = s.dist.sum(), t.dist.sum()
            return
        # This process's rows; the squared norms and half squared distances of all rows come
        # from the others (two gathers).
        grams = [z[rows] @ z.T for z in (yc, ytc)]
        norms = share.gather(torch.stack([g[:, rows].diagonal() for g in grams], dim=1)).unbind(dim=1)
        h_s, self.d_s, self.ri_s = row_relations(grams[0], norms[0], rows)
        h_t, self.d_t, ri_t = row_relations(grams[1], norms[1], rows)
        del grams
        sums = torch.stack([self.d_s.sum(dim=1), self.d_t.sum(dim=1)], dim=1)  # (R, 2) float64
        packed = torch.cat([h_s.to(dtype), h_t.to(dtype), sums.view(dtype)], dim=1)  # bytes of the sums kept
        everyone = share.gather(packed)
        self.h_s, self.h_t = everyone[:, :n], everyone[:, n : 2 * n]
        totals = everyone[:, 2 * n :].contiguous().view(torch.float64).sum(dim=0)
        self.total_s, self.total_t = totals[0], totals[1]
        self.r_s, self.r_t = self.ri_s, ri_t  # the angle term reads them at the vertex rows only


class _SharedRKD(torch.autograd.Function):
    """``(RKD-D mean, RKD-A mean)`` of the centred batch ``y`` (float64 0-d each); a term not
    wanted is 0 without gradient."""

    @staticmethod
    def forward(ctx, y, scale, source_dtype, teacher_batch, share, want_d, want_a, backend, tile, need_grad):
        n, width = y.shape
        pos = share.positions.to(y.device)
        order = torch.argsort(pos)  # the local row at each common position
        c0 = int(pos[share.start])
        rows = slice(c0, c0 + share.stop - share.start)  # this process's rows, common order
        if not torch.equal(pos[share.start : share.stop].cpu(), torch.arange(rows.start, rows.stop)):
            raise ValueError("a process's own rows must be consecutive in the common order")
        with torch.no_grad(), _no_autocast(y.device):
            yc = y.detach().index_select(0, order)
            compute_dtype = compute_dtype_of(source_dtype, teacher_batch[2])
            whole = wants_triton(backend, y.device, compute_dtype)
            rel = _Batch(yc, teacher_batch[0].index_select(0, order), rows, share, compute_dtype, whole)
            m = n * (n - 1)
            sizes = [2] + [width * n] * ((want_a + want_d) if need_grad else 0)
            buf = torch.zeros(sum(sizes), dtype=torch.float64, device=y.device)
            head, *grads = buf.split(sizes)
            grads = [g.view(n, width) for g in grads]  # common order
            if want_d:
                mu_s, live = _mean_distance(rel.total_s, n)
                mu_t, _ = _mean_distance(rel.total_t, n)
                ps, pt = rel.d_s / mu_s, rel.d_t / mu_t
                head[0] = F.smooth_l1_loss(ps, pt, reduction="sum", beta=1.0) / m
                if need_grad:
                    coef = (ps - pt).clamp_(-1.0, 1.0)  # g, the Huber derivative
                    through_mu = None
                    if live:  # A = sum_ij g_ij d_ij over the whole batch
                        through_mu = (coef * rel.d_s).sum().reshape(1)
                        share.reduce(through_mu)
                    coef.div_(m * mu_s)
                    if through_mu is not None:
                        coef.sub_(through_mu / (m * mu_s) ** 2)
                    grads[-1].copy_(row_pair_gradient(coef.mul_(rel.ri_s).mul_(0.5), rows, yc))
                    del coef
            if want_a:
                norm = float(n * (n - 1) * (n - 2))
                loss_sum, d_h, d_r_over_d = angle_sums(
                    rel.h_s, rel.r_s, rel.h_t, rel.r_t, need_grad=need_grad, backend=backend,
                    compute_dtype=compute_dtype, tile=tile, vertices=(rows.start, rows.stop),
                )  # fmt: skip
                head[1] = loss_sum / norm
                if need_grad:  # dL/ds = dL/dh / 2 - dL/dr r^3 / 2 = (d_h - d_r_over_d r^2) / 2 (d r = 1)
                    c = d_h.masked_fill_(rel.h_s == 0, 0.0)  # none through duplicates
                    c[rows] -= d_r_over_d[rows] * rel.ri_s * rel.ri_s  # d_r_over_d is 0 off the vertex rows
                    grads[0].copy_(pair_gradient(c.mul_(0.5 / norm), yc))
                    del c, d_h, d_r_over_d
            del rel
            share.reduce(buf)
            if need_grad:
                local = [gr.index_select(0, pos) for gr in grads]
                g_a = local[0] if want_a else None
                g_d = local[-1] if want_d else None
                ctx.save_for_backward(y)
                ctx.parts = (g_d, g_a)
                ctx.recompute = (scale, source_dtype, teacher_batch, share, want_d, want_a, backend, tile)
        return head[0].clone(), head[1].clone()

    @staticmethod
    def backward(ctx, grad_d, grad_a):
        if torch.is_grad_enabled():  # create_graph=True: differentiate the unshared path
            (y,) = ctx.saved_tensors
            return (_recomputed_gradient(y, grad_d, grad_a, *ctx.recompute),) + (None,) * 9
        g_d, g_a = ctx.parts
        out = None
        for part, weight in ((g_d, grad_d), (g_a, grad_a)):
            if part is not None:
                out = part * weight if out is None else out + part * weight
        return (out,) + (None,) * 9


def _recomputed_gradient(y, grad_d, grad_a, scale, source_dtype, teacher_batch, share, want_d, want_a, backend, tile):
    """``grad_d dD/dy + grad_a dA/dy`` by autograd through the differentiable path, with its graph."""
    with torch.enable_grad(), sharing_triplets(share), _no_autocast(y.device):
        with torch.no_grad():
            teacher = relations_of_centred(*teacher_batch)
        student = relations_of_centred(y, scale, source_dtype)
        outs, weights = [], []
        if want_d:
            first, second = all_distinct_pairs(student.size, y.device)
            outs.append(rkd_distance_pair_losses(student, teacher, first, second).mean())
            weights.append(grad_d)
        if want_a:
            outs.append(rkd_angle_all_triplets_mean(student, teacher, backend=backend, tile=tile))
            weights.append(grad_a)
        (grad,) = torch.autograd.grad(outs, y, weights, create_graph=True)
    return grad


@torch.compiler.disable
def shared_rkd_means(
    y: Tensor,
    scale: Tensor,
    source_dtype: torch.dtype,
    teacher: tuple[Tensor, Tensor, torch.dtype],
    share: TripletShare,
    *,
    distance: bool = True,
    angle: bool = True,
    backend: str = "auto",
    tile: int | None = None,
) -> tuple[Tensor, Tensor]:
    """RKD-D mean over ordered pairs and RKD-A mean over ordered triplets of distinct examples
    of the whole batch (float64 0-d each), this process evaluating its ``share``.

    ``y`` ``(N, D)`` float64 and ``scale`` come from
    :func:`~rkd_pml.functional.relations.centred_batch` of the student's batch (``N >= 3``),
    whose dtype is ``source_dtype``; ``teacher`` is ``(y_t, scale_t, dtype_t)``, the same for
    the teacher's batch (no gradient). Every process of the share must call this with
    the same flags. A term not asked for is 0.
    """
    need_grad = torch.is_grad_enabled() and y.requires_grad
    return _SharedRKD.apply(y, scale, source_dtype, teacher, share, bool(distance), bool(angle), backend, tile, need_grad)
