"""Per-block arithmetic of the all-triplets RKD angle loss (see :mod:`rkd_pml.functional.fused`).

For two end tiles ``I, J`` (``T`` end points each) and a block of ``A`` vertices:

* ``ci``: ``(4, A, T)`` rows ``A`` of the columns ``I`` of ``[h_s, r_s, h_t, r_t]``;
  ``cj``: the same for ``J``;
* ``bc``: ``(2, T, T)`` ``h_s`` and ``h_t`` between ``I`` and ``J`` (rows ``I``, columns ``J``);
* ``wgt``: ``(T, T)`` weights of the end pairs (2 off the diagonal tile: a triplet stands for
  itself and its mirror image; on a diagonal tile 1, and 0 for ``b = c``).

Element ``(a, b, c)`` of a block is the triplet with vertex ``a`` and end points ``b`` in
``I``, ``c`` in ``J``. The fused kernels (``fused_loss``, ``fused_loss_grad``) are written
for ``torch.compile``; :func:`block_eager` and :func:`block_hvp` are plain PyTorch.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _terms(ci: Tensor, cj: Tensor, bc: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    hs_ab, rs_ab, ht_ab, rt_ab = ci.unsqueeze(3).unbind(0)  # (A, T, 1)
    hs_ac, rs_ac, ht_ac, rt_ac = cj.unsqueeze(2).unbind(0)  # (A, 1, T)
    hs_bc, ht_bc = bc.unbind(0)  # (T, T)
    rr = rs_ab * rs_ac
    cs = (hs_ab + hs_ac - hs_bc) * rr
    ct = (ht_ab + ht_ac - ht_bc) * (rt_ab * rt_ac)
    return rr, cs, cs - ct


def fused_loss(ci: Tensor, cj: Tensor, bc: Tensor, wgt: Tensor) -> Tensor:
    """Per-(vertex, b) sums of the weighted Huber errors, ``(A, T)``."""
    _, _, e = _terms(ci, cj, bc)
    g = e.clamp(-1.0, 1.0)
    return (g * wgt * (e - 0.5 * g)).sum(2)


def fused_loss_grad(ci: Tensor, cj: Tensor, bc: Tensor, wgt: Tensor) -> tuple[Tensor, ...]:
    """Loss row sums ``(A, T)``, ``W`` summed over c ``(A, T)``, b ``(A, T)`` and a ``(T, T)``,
    ``V`` summed over c and b ``(A, T)`` each."""
    rr, cs, e = _terms(ci, cj, bc)
    g = e.clamp(-1.0, 1.0)
    gw = g * wgt
    w = gw * rr
    v = gw * cs
    return (gw * (e - 0.5 * g)).sum(2), w.sum(2), w.sum(1), w.sum(0), v.sum(2), v.sum(1)


def block_eager(ci: Tensor, cj: Tensor, bc: Tensor, diag: bool, need_grad: bool) -> tuple[Tensor, ...]:
    """Same sums as the fused kernels with in-place PyTorch ops on one ``(A, T, T)`` block.

    Returns the loss sum (0-d) and, if ``need_grad``, ``W`` summed over c, b, a and ``V``
    summed over c, b. ``diag``: the two end tiles are the same (weight 1, b = c excluded);
    otherwise every triplet stands for itself and its mirror image (weight 2).
    """
    hs_ab, rs_ab, ht_ab, rt_ab = ci.unsqueeze(3).unbind(0)
    hs_ac, rs_ac, ht_ac, rt_ac = cj.unsqueeze(2).unbind(0)
    hs_bc, ht_bc = bc.unbind(0)
    rr = rs_ab * rs_ac
    cs = torch.add(hs_ab, hs_ac).sub_(hs_bc).mul_(rr)
    e = torch.add(ht_ab, ht_ac).sub_(ht_bc).mul_(rt_ab).mul_(rt_ac)
    torch.sub(cs, e, out=e)
    if diag:
        e.diagonal(dim1=1, dim2=2).zero_()
    g = e.clamp(-1.0, 1.0)
    flat_g = g.view(-1)
    loss = torch.dot(flat_g, e.view(-1)) - 0.5 * torch.dot(flat_g, flat_g)
    scale = 1.0 if diag else 2.0
    if not need_grad:
        return (loss * scale,)
    w = rr.mul_(g)
    v = cs.mul_(g)
    w_row, v_row = w.sum(2), v.sum(2)
    if diag:  # w and v are symmetric in (b, c) on a diagonal tile
        w_col, v_col = w_row, v_row
    else:
        w_col, v_col = w.sum(1), v.sum(1)
    w_opp = w.sum(0)
    if scale != 1.0:
        loss, w_row, w_col, w_opp, v_row, v_col = (
            t * scale for t in (loss, w_row, w_col, w_opp, v_row, v_col)
        )
    return loss, w_row, w_col, w_opp, v_row, v_col


def block_hvp(
    ci: Tensor, cj: Tensor, bc: Tensor, di: Tensor, dj: Tensor, u_bc: Tensor, wgt: Tensor
) -> tuple[Tensor, ...]:
    """Hessian-vector product of one block's weighted Huber sum w.r.t. the student's ``h, r``.

    The direction is ``(u, w)`` (for ``h_s`` and ``r_s``): ``di``, ``dj`` ``(2, A, T)`` hold
    rows ``A`` of its columns ``I`` and ``J``, ``u_bc`` ``(T, T)`` is ``u`` between ``I`` and
    ``J``. With ``n = h_ab + h_ac - h_bc``, ``cos = n r_ab r_ac``, ``g = clamp(e, -1, 1)``,
    ``k = 1{|e| < 1}`` (the Huber's second derivative) and ``dcos`` the derivative of the
    cosine along the direction, the per-triplet products are

    * ``P = k dcos r_ab r_ac + g (w_ab r_ac + r_ab w_ac)`` for ``h_ab``, ``h_ac`` and ``-h_bc``;
    * ``Q = (k dcos n + g dn) r_ac + g n w_ac`` for ``r_ab`` (``R``: ``b`` and ``c`` swapped).

    Returns ``P`` summed over c ``(A, T)``, b ``(A, T)`` and a ``(T, T)``, ``Q`` summed over c
    and ``R`` summed over b ``(A, T)`` each, all weighted by ``wgt``.
    """
    hs_ab, rs_ab, ht_ab, rt_ab = ci.unsqueeze(3).unbind(0)
    hs_ac, rs_ac, ht_ac, rt_ac = cj.unsqueeze(2).unbind(0)
    hs_bc, ht_bc = bc.unbind(0)
    u_ab, w_ab = di.unsqueeze(3).unbind(0)
    u_ac, w_ac = dj.unsqueeze(2).unbind(0)
    num = hs_ab + hs_ac - hs_bc
    rr = rs_ab * rs_ac
    e = num * rr - (ht_ab + ht_ac - ht_bc) * (rt_ab * rt_ac)
    g = e.clamp(-1.0, 1.0).mul_(wgt)
    d_num = u_ab + u_ac - u_bc
    d_rr = w_ab * rs_ac + rs_ab * w_ac
    kd = (e.abs() < 1.0).to(e.dtype).mul_(wgt).mul_(d_num * rr + num * d_rr)
    p = kd * rr + g * d_rr
    common = kd.mul_(num).add_(g * d_num)
    g_num = g.mul_(num)
    q = common * rs_ac + g_num * w_ac
    r = common.mul_(rs_ab).add_(g_num.mul_(w_ab))
    return p.sum(2), p.sum(1), p.sum(0), q.sum(2), r.sum(1)
