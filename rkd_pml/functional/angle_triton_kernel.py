"""The Triton kernel of :mod:`rkd_pml.functional.angle_triton` (imports Triton: imported
only where the kernel is used)."""

import triton
import triton.language as tl


@triton.jit
def angle_kernel(
    S_H, S_R, T_H, T_R, PAIR_I, PAIR_J, LOSS, D_H, D_V,
    n, stride, v_lo, v_hi, chunk, n_split,
    NEED_GRAD: tl.constexpr, BLOCK_A: tl.constexpr, BLOCK_T: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    sid = tl.program_id(1)
    ti = tl.load(PAIR_I + pid)
    tj = tl.load(PAIR_J + pid)
    offs = tl.arange(0, BLOCK_T)
    col_i = ti * BLOCK_T + offs
    col_j = tj * BLOCK_T + offs
    m_i = col_i < n
    m_j = col_j < n
    bc_off = col_i[:, None] * stride + col_j[None, :]
    bc_m = m_i[:, None] & m_j[None, :]
    hs_bc = tl.load(S_H + bc_off, mask=bc_m, other=0.0)
    ht_bc = tl.load(T_H + bc_off, mask=bc_m, other=0.0)
    # A triplet stands for itself and its mirror image off the diagonal tile pair; on it
    # both orders are visited, and b = c is not a triplet.
    same = offs[:, None] == offs[None, :]
    wgt = tl.where(ti == tj, tl.where(same, 0.0, 1.0), 2.0).to(hs_bc.dtype)
    loss_acc = tl.zeros((BLOCK_T, BLOCK_T), dtype=hs_bc.dtype)
    opp_acc = tl.zeros((BLOCK_T, BLOCK_T), dtype=hs_bc.dtype)
    a_start = v_lo + sid * chunk
    a_stop = tl.minimum(a_start + chunk, v_hi)
    for a0 in range(a_start, a_stop, BLOCK_A):
        rows = a0 + tl.arange(0, BLOCK_A)
        m_a = rows < a_stop
        ai_off = rows[:, None] * stride + col_i[None, :]
        aj_off = rows[:, None] * stride + col_j[None, :]
        ai_m = m_a[:, None] & m_i[None, :]
        aj_m = m_a[:, None] & m_j[None, :]
        hs_ab = tl.load(S_H + ai_off, mask=ai_m, other=0.0)[:, :, None]
        rs_ab = tl.load(S_R + ai_off, mask=ai_m, other=0.0)[:, :, None]
        ht_ab = tl.load(T_H + ai_off, mask=ai_m, other=0.0)[:, :, None]
        rt_ab = tl.load(T_R + ai_off, mask=ai_m, other=0.0)[:, :, None]
        hs_ac = tl.load(S_H + aj_off, mask=aj_m, other=0.0)[:, None, :]
        rs_ac = tl.load(S_R + aj_off, mask=aj_m, other=0.0)[:, None, :]
        ht_ac = tl.load(T_H + aj_off, mask=aj_m, other=0.0)[:, None, :]
        rt_ac = tl.load(T_R + aj_off, mask=aj_m, other=0.0)[:, None, :]
        rr = rs_ab * rs_ac
        cs = (hs_ab + hs_ac - hs_bc[None, :, :]) * rr
        e = cs - (ht_ab + ht_ac - ht_bc[None, :, :]) * (rt_ab * rt_ac)
        g = tl.minimum(tl.maximum(e, -1.0), 1.0)
        gw = g * wgt[None, :, :]
        loss_acc += tl.sum(gw * (e - 0.5 * g), axis=0)
        if NEED_GRAD:
            w = gw * rr
            v = gw * cs
            tl.atomic_add(D_H + ai_off, tl.sum(w, axis=2), mask=ai_m)
            tl.atomic_add(D_H + aj_off, tl.sum(w, axis=1), mask=aj_m)
            tl.atomic_add(D_V + ai_off, tl.sum(v, axis=2), mask=ai_m)
            tl.atomic_add(D_V + aj_off, tl.sum(v, axis=1), mask=aj_m)
            opp_acc += tl.sum(w, axis=0)
    tl.store(LOSS + pid * n_split + sid, tl.sum(tl.sum(loss_acc, axis=1), axis=0))
    if NEED_GRAD:
        tl.atomic_add(D_H + bc_off, -opp_acc, mask=bc_m)
