"""Tiled drivers of the all-triplets angle loss: its value, gradient and second derivative.

Where the Triton kernel is chosen (:func:`~rkd_pml.functional.angle_backend.wants_triton`)
:func:`angle_sums` hands the whole batch to it (:mod:`rkd_pml.functional.angle_triton`).
Otherwise the end points are padded to a multiple of a tile size ``T`` and cut into tiles; for two
end tiles ``I <= J`` a kernel (:mod:`rkd_pml.functional.angle_kernels`) evaluates the
triplets (vertex a, b in I, c in J) and returns sums over each axis, which are scattered
into ``N x N`` accumulators. Memory is ``O(N^2)`` plus one block whatever ``N``.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from .angle_backend import kernel_for, mark_dynamic, triton_failed, wants_triton
from .angle_kernels import block_eager, block_hvp
from .angle_triton import triton_angle_sums
from .relations import power_of_two_scale

#: Tile size per device type (vertices per block and end points per tile).
TILE_SIZES = {"cpu": 64}
DEFAULT_TILE_SIZE = 128

#: The eager kernel works on blocks of about this many triplets (vertices x T x T): a few
#: MiB of temporaries on CPU (cache-sized), more on accelerators (fewer kernel launches).
EAGER_BLOCK_ELEMENTS = {"cpu": 2**18}
DEFAULT_EAGER_BLOCK_ELEMENTS = 2**24


def tile_size(device: torch.device) -> int:
    return TILE_SIZES.get(torch.device(device).type, DEFAULT_TILE_SIZE)


def _no_autocast(device: torch.device):
    """Autocast off: the kernels are element-wise, and compiled code is not retraced for it."""
    try:
        return torch.autocast(device_type=device.type, enabled=False)
    except RuntimeError:  # a device type without autocast support
        return contextlib.nullcontext()


def _column_tiles(mats: list[Tensor], n_pad: int, t: int, dtype: torch.dtype, rows: int | None = None) -> Tensor:
    """``(nb, len(mats), rows, t)``: ``out[k, m, a, u] = mats[m][a, k t + u]``, zero-padded
    (``rows`` defaults to ``n_pad``; the matrices may have fewer rows than that)."""
    n = mats[0].shape[1]
    nb = n_pad // t
    rows = n_pad if rows is None else rows
    padding = n < n_pad or any(mat.shape[0] < rows for mat in mats)
    out = (torch.zeros if padding else torch.empty)(nb, len(mats), rows, t, dtype=dtype, device=mats[0].device)
    for m, mat in enumerate(mats):
        n_in = mat.shape[0]
        if n < n_pad:
            padded = torch.zeros(n_in, n_pad, dtype=dtype, device=mat.device)
            padded[:, :n] = mat
            mat = padded
        out[:, m, :n_in, :] = mat.reshape(n_in, nb, t).transpose(0, 1)
    return out


def _from_column_tiles(m: Tensor, n: int) -> Tensor:
    """Inverse of :func:`_column_tiles` for one matrix ``(nb, rows, t)`` -> ``(min(rows, n), n)``."""
    nb, rows, t = m.shape
    return m.transpose(0, 1).reshape(rows, nb * t)[:n, :n]


def _vertex_block(device: torch.device, t: int) -> int:
    return max(1, EAGER_BLOCK_ELEMENTS.get(device.type, DEFAULT_EAGER_BLOCK_ELEMENTS) // (t * t))


def angle_sums(
    s_half_sq: Tensor,
    s_inv: Tensor,
    t_half_sq: Tensor,
    t_inv: Tensor,
    *,
    need_grad: bool,
    backend: str = "auto",
    compute_dtype: torch.dtype = torch.float32,
    tile: int | None = None,
    vertices: tuple[int, int] | None = None,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Sum of the Huber errors over ordered triplets of distinct examples, and its gradient.

    Inputs are ``(N, N)`` relations (see :class:`~rkd_pml.functional.relations.Relations`).
    Returns ``(loss_sum, d_h, d_r_over_d)`` in float64: ``d_h`` ``(N, N)`` the gradient
    w.r.t. the student's ``h``; ``d_r_over_d`` ``(N, N)`` the gradient w.r.t. ``r`` divided by
    the distance (multiply by ``d`` to get it). Both are ``None`` unless ``need_grad``.
    The arithmetic runs in ``compute_dtype``; memory is ``O(N^2)`` plus one block.
    ``vertices=(start, stop)`` restricts the sums to the triplets whose vertex is in rows
    ``[start, stop)`` (a share of the work; see :mod:`rkd_pml.functional.angle_share`); the
    inverse distances are then read at those rows only and may be given as those rows alone,
    ``(stop - start, N)``, outside the Triton kernel (which reads them whole).
    """
    n = s_half_sq.shape[0]
    device = s_half_sq.device
    if wants_triton(backend, device, compute_dtype):
        try:
            _check_triton(device, compute_dtype)
            return triton_angle_sums(
                s_half_sq, s_inv, t_half_sq, t_inv, need_grad=need_grad, compute_dtype=compute_dtype, vertices=vertices
            )
        except Exception as exc:  # noqa: BLE001 - any failure means "use the other kernels"
            triton_failed(backend, device, compute_dtype, exc)
    t = tile or tile_size(device)
    kernel = kernel_for(backend, n, device, compute_dtype, t, need_grad)
    nb = -(-n // t)
    n_pad = nb * t

    with torch.no_grad(), _no_autocast(device):
        mats = [m.detach() for m in (s_half_sq, s_inv, t_half_sq, t_inv)]
        lo, hi = (0, n_pad if kernel is not None else n) if vertices is None else vertices
        if vertices is None:
            vcols = _column_tiles(mats, n_pad, t, compute_dtype)  # [h_s, r_s, h_t, r_t]
            hcols = vcols[:, 0::2]  # [h_s, h_t]
        else:  # all four at the vertex rows; the end-end sides (h only) at every row
            at_vertices = [m if m.shape[0] == hi - lo else m[lo:hi] for m in mats]
            vcols = _column_tiles(at_vertices, n_pad, t, compute_dtype, rows=hi - lo)
            hcols = _column_tiles(mats[0::2], n_pad, t, compute_dtype)
        del mats
        if need_grad:
            grad_h = torch.zeros(nb, n_pad, t, dtype=compute_dtype, device=device)
            grad_v = torch.zeros(nb, hi - lo, t, dtype=compute_dtype, device=device)  # vertex rows only
        if kernel is not None:
            w_off = torch.full((t, t), 2.0, dtype=compute_dtype, device=device)
            w_diag = 1.0 - torch.eye(t, dtype=compute_dtype, device=device)
            loss_acc = torch.zeros(hi - lo, t, dtype=compute_dtype, device=device)
        else:
            loss_acc = torch.zeros((), dtype=compute_dtype, device=device)
            block = _vertex_block(device, t)
        for i in range(nb):
            rows_i = slice(i * t, (i + 1) * t)
            for j in range(i, nb):
                diag = i == j
                ci, cj = vcols[i], vcols[j]
                bc = hcols[j, :, rows_i].contiguous()  # h_s, h_t between I and J
                if kernel is not None:
                    mark_dynamic(ci, cj)
                    out = kernel(ci, cj, bc, w_diag if diag else w_off)
                    if not need_grad:
                        loss_acc += out
                        continue
                    loss_acc += out[0]
                    grad_h[i, lo:hi] += out[1]
                    grad_h[j, lo:hi] += out[2]
                    grad_h[j, rows_i] -= out[3]
                    grad_v[i] += out[4]
                    grad_v[j] += out[5]
                    continue
                for a0 in range(lo, hi, block):
                    rows_a = slice(a0, min(a0 + block, hi))
                    local = slice(a0 - lo, rows_a.stop - lo)
                    out = block_eager(ci[:, local], cj[:, local], bc, diag, need_grad)
                    loss_acc += out[0]
                    if need_grad:
                        grad_h[i, rows_a] += out[1]
                        grad_h[j, rows_a] += out[2]
                        grad_h[j, rows_i] -= out[3]
                        grad_v[i, local] += out[4]
                        grad_v[j, local] += out[5]
        loss_sum = loss_acc.sum(dtype=torch.float64)
        if not need_grad:
            return loss_sum, None, None
        d_h = _from_column_tiles(grad_h, n).to(torch.float64)
        d_r_over_d = torch.zeros(n, n, dtype=torch.float64, device=device)
        v_rows = _from_column_tiles(grad_v, n)
        d_r_over_d[lo : lo + v_rows.shape[0]] = v_rows
        return loss_sum, d_h, d_r_over_d


_TRITON_CHECKED: set = set()


def _check_triton(device: torch.device, dtype: torch.dtype) -> None:
    """On first use per (device, dtype): RuntimeError unless the Triton kernel agrees with the
    eager kernel on a random batch of 40 (two Triton tiles, with padding)."""
    key = (str(device), dtype)
    if key in _TRITON_CHECKED:
        return
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = [torch.rand(40, 40, generator=gen, dtype=torch.float64) + 0.5 for _ in range(4)]
    args = [(m + m.T).fill_diagonal_(0).to(device) for m in x]
    got = triton_angle_sums(*args, need_grad=True, compute_dtype=dtype)
    ref = angle_sums(*args, need_grad=True, backend="eager", compute_dtype=dtype)
    sym = [(m + m.T) for m in (got[1], ref[1])]  # the h-gradient counts each pair once in either place
    for a, b in ((got[0], ref[0]), (*sym,), (got[2], ref[2])):
        if not bool(torch.isfinite(a).all()) or float((a - b).abs().max()) > 1e-3 * float(b.abs().max()):
            raise RuntimeError("the Triton kernel disagrees with the eager kernel")
    _TRITON_CHECKED.add(key)


def angle_hvp(
    s_half_sq: Tensor,
    s_inv: Tensor,
    t_half_sq: Tensor,
    t_inv: Tensor,
    u: Tensor,
    w: Tensor,
    *,
    compute_dtype: torch.dtype = torch.float32,
    tile: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Hessian of the triplet Huber sum of :func:`angle_sums` applied to a direction.

    ``u`` and ``w`` ``(N, N)`` are the direction for the student's ``h`` and ``r``. Returns
    ``(H_hh u + H_hr w, H_rh u + H_rr w)``, two ``(N, N)`` float64 tensors: the exact second
    derivative of the same function (same triplets, same entries read), evaluated by the
    eager kernel in ``compute_dtype`` in ``O(N^2)`` memory. The direction is rescaled by a
    power of two (exact: the product is linear in it) so its rounding cannot overflow.
    """
    n = s_half_sq.shape[0]
    device = s_half_sq.device
    t = tile or tile_size(device)
    nb = -(-n // t)
    n_pad = nb * t
    with torch.no_grad(), _no_autocast(device):
        u, w = u.detach().to(torch.float64), w.detach().to(torch.float64)
        scale = power_of_two_scale(torch.stack([u.abs().amax(), w.abs().amax()]))
        mats = [m.detach() for m in (s_half_sq, s_inv, t_half_sq, t_inv)]
        cols = _column_tiles(mats, n_pad, t, compute_dtype)  # [h_s, r_s, h_t, r_t]
        dirs = _column_tiles([u / scale, w / scale], n_pad, t, compute_dtype)  # [u, w]
        del mats
        out_h = torch.zeros(nb, n_pad, t, dtype=compute_dtype, device=device)
        out_r = torch.zeros(nb, n_pad, t, dtype=compute_dtype, device=device)
        w_off = torch.full((t, t), 2.0, dtype=compute_dtype, device=device)
        w_diag = 1.0 - torch.eye(t, dtype=compute_dtype, device=device)
        block = _vertex_block(device, t)
        for i in range(nb):
            rows_i = slice(i * t, (i + 1) * t)
            for j in range(i, nb):
                ci, cj, di, dj = cols[i], cols[j], dirs[i], dirs[j]
                bc = cj[0::2, rows_i].contiguous()
                u_bc = dj[0, rows_i].contiguous()
                wgt = w_diag if i == j else w_off
                for a0 in range(0, n, block):
                    rows_a = slice(a0, min(a0 + block, n))
                    out = block_hvp(ci[:, rows_a], cj[:, rows_a], bc, di[:, rows_a], dj[:, rows_a], u_bc, wgt)
                    out_h[i, rows_a] += out[0]
                    out_h[j, rows_a] += out[1]
                    out_h[j, rows_i] -= out[2]
                    out_r[i, rows_a] += out[3]
                    out_r[j, rows_a] += out[4]
        hh = _from_column_tiles(out_h, n).to(torch.float64) * scale
        hr = _from_column_tiles(out_r, n).to(torch.float64) * scale
        return hh, hr
