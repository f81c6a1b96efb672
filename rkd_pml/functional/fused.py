"""The all-triplets RKD angle loss in ``O(N^2)`` memory, with a hand-derived gradient.

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

The angle is symmetric in its two end points, so only end pairs ``b < c`` are visited:
the end points are padded to a multiple of a tile size ``T`` and cut into tiles; for two
end tiles ``I <= J`` a kernel evaluates the triplets (vertex a, b in I, c in J) and returns
the sums above over each of the three axes (weight 2 for ``I < J``; weight 1 on a diagonal
tile, whose ``b = c`` entries are excluded). The forward pass thus produces the loss and
the gradient w.r.t. ``h`` and ``r`` together; nothing ``N^3`` is ever stored, and the
backward pass only scales the saved ``N x N`` gradients.

The relations are rounded to the compute dtype (float32 unless the embeddings were
float64) only after being formed in float64, and the law of cosines keeps the rounding
error of a cosine near ``eps (d_ab / d_ac + d_ac / d_ab)``: near-duplicate embeddings
(distances of 1e-3 of their norm) keep float32 cosines accurate to ~1e-4 and below,
where the Gram form ``G_bc - G_ab - G_ac + G_aa`` would cancel catastrophically.

Two interchangeable kernels evaluate a tile pair: an eager one (plain PyTorch ops on
blocks of vertices of a few MiB, always available) and the same arithmetic fused by
``torch.compile`` over all vertices at once (one pass per reduction axis, nothing
materialised; the vertex dimension is dynamic, so one compilation serves every batch
size). See :func:`resolve_backend`.
"""

from __future__ import annotations

import contextlib
import os
import types
import warnings
from typing import Callable

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

#: Accepted values of the ``backend`` argument.
BACKENDS = ("auto", "compiled", "eager")

#: Environment variable that sets what ``backend="auto"`` means ("compiled" or "eager").
BACKEND_ENV = "RKD_PML_ANGLE_BACKEND"

#: ``backend="auto"`` uses the compiled kernel from this batch size on; below it the eager
#: kernel costs milliseconds and a one-off compilation would not pay for itself.
AUTO_COMPILE_MIN_BATCH = 96

#: Tile size per device type (vertices per block and end points per tile).
TILE_SIZES = {"cpu": 64}
DEFAULT_TILE_SIZE = 128


def tile_size(device: torch.device) -> int:
    return TILE_SIZES.get(torch.device(device).type, DEFAULT_TILE_SIZE)


# --------------------------------------------------------------------------------------
# Kernels. For two end tiles I, J (T end points each) and a block of vertices A:
#   ci: (4, A, T) rows A of the columns I of [h_s, r_s, h_t, r_t]; cj: the same for J;
#   bc: (2, T, T) h_s and h_t between I and J; wgt: (T, T) weights of the end pairs.
# Element (a, b, c) of a block is the triplet with vertex a and end points b in I, c in J.
# --------------------------------------------------------------------------------------


def _terms(ci, cj, bc):
    hs_ab, rs_ab, ht_ab, rt_ab = ci.unsqueeze(3).unbind(0)  # (A, T, 1)
    hs_ac, rs_ac, ht_ac, rt_ac = cj.unsqueeze(2).unbind(0)  # (A, 1, T)
    hs_bc, ht_bc = bc.unbind(0)  # (T, T)
    rr = rs_ab * rs_ac
    cs = (hs_ab + hs_ac - hs_bc) * rr
    ct = (ht_ab + ht_ac - ht_bc) * (rt_ab * rt_ac)
    return rr, cs, cs - ct


def _fused_loss(ci, cj, bc, wgt):
    """Per-(vertex, b) sums of the weighted Huber errors, ``(A, T)``."""
    _, _, e = _terms(ci, cj, bc)
    g = e.clamp(-1.0, 1.0)
    return (g * wgt * (e - 0.5 * g)).sum(2)


def _fused_loss_grad(ci, cj, bc, wgt):
    """Loss row sums, ``W`` summed over c, b and a, ``V`` summed over c and b."""
    rr, cs, e = _terms(ci, cj, bc)
    g = e.clamp(-1.0, 1.0)
    gw = g * wgt
    w = gw * rr
    v = gw * cs
    return (gw * (e - 0.5 * g)).sum(2), w.sum(2), w.sum(1), w.sum(0), v.sum(2), v.sum(1)


def _block_eager(ci, cj, bc, diag, need_grad):
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


# --------------------------------------------------------------------------------------
# Backend selection: compile once per (device type, dtype, tile size, kind), validate the
# compiled kernel against the eager one on random data, remember failures.
# --------------------------------------------------------------------------------------


class CompiledKernelUnavailable(RuntimeError):
    """torch.compile could not produce a working kernel on this machine."""


_COMPILED: dict[tuple, Callable] = {}
_FAILURES: dict[tuple, str] = {}
_WARNED: set = set()


def compile_failures() -> dict[tuple, str]:
    """Compilation failures remembered by this process: ``{(device, dtype, T, grad): why}``."""
    return dict(_FAILURES)


def _random_args(t: int, dtype: torch.dtype, device: torch.device, seed: int = 0):
    """Kernel arguments for two vertex tiles (2T vertices) with random relations."""
    gen = torch.Generator(device="cpu").manual_seed(seed)

    def rand(*shape):
        return (torch.rand(shape, generator=gen, dtype=torch.float64) + 0.5).to(dtype=dtype, device=device)

    return rand(4, 2 * t, t), rand(4, 2 * t, t), rand(2, t, t)


def _check_against_eager(out, args, need_grad):
    """Raise if the compiled kernel's outputs on ``args`` (weight 2) differ from eager's."""
    ref = _block_eager(*args, diag=False, need_grad=need_grad)
    got = (out[0].sum(),) + tuple(out[1:]) if need_grad else (out.sum(),)
    tol = 1e-3 if args[0].dtype != torch.float64 else 1e-9
    for a, b in zip(got, ref):
        bound = tol * (float(b.abs().max()) + 1e-30)
        if a.shape != b.shape or not bool(torch.isfinite(a).all()) or float((a.to(b.dtype) - b).abs().max()) > bound:
            raise CompiledKernelUnavailable("compiled kernel disagrees with the eager kernel")


def _private_copy(fn: Callable, key: tuple) -> Callable:
    name = fn.__name__ + "__" + "_".join(str(k).replace("torch.", "").replace(".", "_") for k in key)
    try:
        code = fn.__code__.replace(co_name=name, co_qualname=name)
    except TypeError:  # Python < 3.11: no co_qualname
        code = fn.__code__.replace(co_name=name)
    return types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__, fn.__closure__)


def _mark_dynamic(ci: Tensor, cj: Tensor) -> None:
    # the vertex dimension varies with the batch size: one compilation for every N
    mark = getattr(torch._dynamo, "maybe_mark_dynamic", torch._dynamo.mark_dynamic)
    mark(ci, 1)
    mark(cj, 1)


def compiled_kernel(device: torch.device, dtype: torch.dtype, t: int, need_grad: bool) -> Callable:
    """The ``torch.compile``-d kernel for this device type, dtype and tile size.

    Compiles (and validates against the eager kernel) on first use; a failure is
    remembered for the life of the process and raises :class:`CompiledKernelUnavailable`.
    """
    key = (torch.device(device).type, dtype, t, need_grad)
    if key in _FAILURES:
        raise CompiledKernelUnavailable(_FAILURES[key])
    fn = _COMPILED.get(key)
    if fn is not None:
        return fn
    try:
        # A private copy of the function per key: torch.compile caches per code object,
        # so each (device, dtype, tile) variant gets its own cache and recompile budget.
        fn = torch.compile(
            _private_copy(_fused_loss_grad if need_grad else _fused_loss, key),
            fullgraph=True,
            options={
                # Recompute the cheap element-wise terms in each reduction instead of
                # materialising (A, T, T) buffers.
                "realize_reads_threshold": 1_000_000,
                "realize_opcount_threshold": 1_000_000,
            },
        )
        args = _random_args(t, dtype, device)
        _mark_dynamic(args[0], args[1])
        with torch.no_grad():
            out = fn(*args, torch.full((t, t), 2.0, dtype=dtype, device=device))
        _check_against_eager(out, args, need_grad)
    except Exception as exc:  # noqa: BLE001 - any failure means "use the eager kernel"
        _FAILURES[key] = f"{type(exc).__name__}: {exc}".strip()[:2000]
        raise CompiledKernelUnavailable(_FAILURES[key]) from exc
    _COMPILED[key] = fn
    return fn


def _compile_supported() -> bool:
    return hasattr(torch, "compile") and not torch.compiler.is_compiling()


def resolve_backend(backend: str, n: int) -> str:
    """``"compiled"`` or ``"eager"`` for ``backend`` in :data:`BACKENDS` and batch size ``n``.

    ``"auto"`` follows the environment variable :data:`BACKEND_ENV` when it is set, else
    picks the compiled kernel from :data:`AUTO_COMPILE_MIN_BATCH` on (it falls back to the
    eager kernel, once and for all, if compilation fails).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend != "auto":
        return backend
    env = os.environ.get(BACKEND_ENV, "").strip().lower()
    if env in ("compiled", "eager"):
        return env
    if env not in ("", "auto"):
        raise ValueError(f"{BACKEND_ENV} must be 'auto', 'compiled' or 'eager', got {env!r}")
    return "compiled" if n >= AUTO_COMPILE_MIN_BATCH and _compile_supported() else "eager"


# --------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------


def _no_autocast(device: torch.device):
    """Autocast off: the kernels are element-wise, and compiled code is not retraced for it."""
    try:
        return torch.autocast(device_type=device.type, enabled=False)
    except RuntimeError:  # a device type without autocast support
        return contextlib.nullcontext()


def _column_tiles(mats: list[Tensor], n_pad: int, t: int, dtype: torch.dtype) -> Tensor:
    """``(nb, len(mats), n_pad, t)``: ``out[k, m, a, u] = mats[m][a, k t + u]``, zero-padded."""
    n = mats[0].shape[0]
    nb = n_pad // t
    out = torch.zeros(nb, len(mats), n_pad, t, dtype=dtype, device=mats[0].device)
    for m, mat in enumerate(mats):
        padded = torch.zeros(n, n_pad, dtype=dtype, device=mat.device)
        padded[:, :n] = mat
        out[:, m, :n, :] = padded.view(n, nb, t).transpose(0, 1)
    return out


def _from_column_tiles(m: Tensor, n: int) -> Tensor:
    """Inverse of :func:`_column_tiles` for one matrix ``(nb, n_pad, t)`` -> ``(n, n)``."""
    nb, n_pad, t = m.shape
    return m.transpose(0, 1).reshape(n_pad, nb * t)[:n, :n]


#: The eager kernel works on blocks of about this many triplets (vertices x T x T): a few
#: MiB of temporaries on CPU (cache-sized), more on accelerators (fewer kernel launches).
EAGER_BLOCK_ELEMENTS = {"cpu": 2**18}
DEFAULT_EAGER_BLOCK_ELEMENTS = 2**24


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
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Sum of the Huber errors over ordered triplets of distinct examples, and its gradient.

    Inputs are ``(N, N)`` relations (see :class:`~rkd_pml.functional.relations.Relations`).
    Returns ``(loss_sum, d_h, d_r_over_d)`` in float64: ``d_h`` the gradient w.r.t. the
    student's ``h``; ``d_r_over_d`` the gradient w.r.t. ``r`` divided by the distance
    (multiply by ``d`` to get it). Both are ``None`` unless ``need_grad``.
    The arithmetic runs in ``compute_dtype``; memory is ``O(N^2)`` plus one block.
    """
    n = s_half_sq.shape[0]
    device = s_half_sq.device
    t = tile or tile_size(device)
    which = resolve_backend(backend, n)
    kernel = None
    if which == "compiled":
        try:
            kernel = compiled_kernel(device, compute_dtype, t, need_grad)
        except CompiledKernelUnavailable as exc:
            if backend == "compiled":
                raise RuntimeError(
                    f"backend='compiled' was requested but torch.compile failed: {exc}"
                ) from exc
            key = (device.type, compute_dtype, t, need_grad)
            if key not in _WARNED:
                _WARNED.add(key)
                warnings.warn(
                    f"rkd_pml: torch.compile is unavailable ({str(exc)[:200]}); using the "
                    "eager RKD angle kernel (exact, slower).",
                    RuntimeWarning,
                    stacklevel=3,
                )
    nb = -(-n // t)
    n_pad = nb * t

    with torch.no_grad(), _no_autocast(device):
        mats = [m.detach() for m in (s_half_sq, s_inv, t_half_sq, t_inv)]
        cols = _column_tiles(mats, n_pad, t, compute_dtype)  # [h_s, r_s, h_t, r_t]
        del mats
        if need_grad:
            grad_h = torch.zeros(nb, n_pad, t, dtype=compute_dtype, device=device)
            grad_v = torch.zeros(nb, n_pad, t, dtype=compute_dtype, device=device)
        if kernel is not None:
            w_off = torch.full((t, t), 2.0, dtype=compute_dtype, device=device)
            w_diag = 1.0 - torch.eye(t, dtype=compute_dtype, device=device)
            loss_acc = torch.zeros(n_pad, t, dtype=compute_dtype, device=device)
        else:
            loss_acc = torch.zeros((), dtype=compute_dtype, device=device)
            block = max(1, EAGER_BLOCK_ELEMENTS.get(device.type, DEFAULT_EAGER_BLOCK_ELEMENTS) // (t * t))
        for i in range(nb):
            rows_i = slice(i * t, (i + 1) * t)
            for j in range(i, nb):
                diag = i == j
                ci, cj = cols[i], cols[j]
                bc = cj[0::2, rows_i].contiguous()  # h_s, h_t between I and J
                if kernel is not None:
                    _mark_dynamic(ci, cj)
                    out = kernel(ci, cj, bc, w_diag if diag else w_off)
                    if not need_grad:
                        loss_acc += out
                        continue
                    loss_acc += out[0]
                    grad_h[i] += out[1]
                    grad_h[j] += out[2]
                    grad_h[j, rows_i] -= out[3]
                    grad_v[i] += out[4]
                    grad_v[j] += out[5]
                    continue
                for a0 in range(0, n, block):
                    rows_a = slice(a0, min(a0 + block, n))
                    out = _block_eager(ci[:, rows_a], cj[:, rows_a], bc, diag, need_grad)
                    loss_acc += out[0]
                    if need_grad:
                        grad_h[i, rows_a] += out[1]
                        grad_h[j, rows_a] += out[2]
                        grad_h[j, rows_i] -= out[3]
                        grad_v[i, rows_a] += out[4]
                        grad_v[j, rows_a] += out[5]
        loss_sum = loss_acc.sum(dtype=torch.float64)
        if not need_grad:
            return loss_sum, None, None
        d_h = _from_column_tiles(grad_h, n).to(torch.float64)
        d_r_over_d = _from_column_tiles(grad_v, n).to(torch.float64)
        return loss_sum, d_h, d_r_over_d


class _AllTripletsAngleMean(torch.autograd.Function):
    """Mean Huber error over ordered triplets of distinct examples (see module docstring).

    Differentiable w.r.t. the student's ``h`` and ``r``; the forward pass computes the
    gradient block by block and saves only the two ``N x N`` results.
    """

    @staticmethod
    def forward(ctx, s_half_sq, s_inv, s_dist, t_half_sq, t_inv, need_grad, backend, compute_dtype, tile):
        n = s_half_sq.shape[0]
        norm = float(n * (n - 1) * (n - 2))
        loss_sum, d_h, d_r_over_d = angle_sums(
            s_half_sq, s_inv, t_half_sq, t_inv,
            need_grad=need_grad, backend=backend, compute_dtype=compute_dtype, tile=tile,
        )  # fmt: skip
        if need_grad:
            d_h.div_(norm)
            d_r = d_r_over_d.mul_(s_dist.detach().to(torch.float64)).div_(norm)
            ctx.save_for_backward(d_h.to(s_half_sq.dtype), d_r.to(s_inv.dtype))
        return (loss_sum / norm).to(s_half_sq.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        d_h, d_r = ctx.saved_tensors
        return grad_out * d_h, grad_out * d_r, None, None, None, None, None, None, None


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
    distinct examples (scalar, dtype of ``s_half_sq``); differentiable w.r.t. the student's
    ``s_half_sq`` and ``s_inv``. Teacher inputs are treated as constants."""
    need_grad = torch.is_grad_enabled() and (s_half_sq.requires_grad or s_inv.requires_grad)
    return _AllTripletsAngleMean.apply(
        s_half_sq, s_inv, s_dist, t_half_sq.detach(), t_inv.detach(), need_grad, backend, compute_dtype, tile
    )
