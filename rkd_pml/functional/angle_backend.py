"""Which kernel evaluates the all-triplets angle loss: Triton, ``torch.compile``-fused or eager.

On CUDA, ``backend="auto"`` uses the Triton kernel (:mod:`rkd_pml.functional.angle_triton`)
for float32 arithmetic: it is checked against the eager kernel on its first use per device,
and a failure is remembered for the life of the process (with one warning; the compiled or
eager kernel takes over). The compiled kernel is built once per (device type, dtype, tile size, kind), validated
against the eager kernel on random data, and a failure is remembered for the life of the
process (``backend="auto"`` then falls back to the eager kernel with one warning).
"""

from __future__ import annotations

import os
import types
import warnings
from typing import Callable

import torch
from torch import Tensor

from .angle_kernels import block_eager, fused_loss, fused_loss_grad
from .angle_triton import triton_supports

#: Accepted values of the ``backend`` argument.
BACKENDS = ("auto", "triton", "compiled", "eager")

#: Environment variable that sets what ``backend="auto"`` means ("triton", "compiled" or "eager").
BACKEND_ENV = "RKD_PML_ANGLE_BACKEND"

#: ``backend="auto"`` uses the compiled kernel from this batch size on; below it the eager
#: kernel costs milliseconds and a one-off compilation would not pay for itself.
AUTO_COMPILE_MIN_BATCH = 96


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
    ref = block_eager(*args, diag=False, need_grad=need_grad)
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


def mark_dynamic(ci: Tensor, cj: Tensor) -> None:
    """The vertex dimension varies with the batch size: one compilation for every N."""
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
            _private_copy(fused_loss_grad if need_grad else fused_loss, key),
            fullgraph=True,
            options={
                # Recompute the cheap element-wise terms in each reduction instead of
                # materialising (A, T, T) buffers.
                "realize_reads_threshold": 1_000_000,
                "realize_opcount_threshold": 1_000_000,
            },
        )
        args = _random_args(t, dtype, device)
        mark_dynamic(args[0], args[1])
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
    """``"compiled"`` or ``"eager"`` for ``backend`` in :data:`BACKENDS` and batch size ``n``:
    the kernel of the tiled driver when the Triton kernel is not used.

    ``"auto"`` (and ``"triton"``, for its fallback) follows the environment variable
    :data:`BACKEND_ENV` when it is set, else picks the compiled kernel from
    :data:`AUTO_COMPILE_MIN_BATCH` on (it falls back to the eager kernel, once and for all,
    if compilation fails).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend in ("compiled", "eager"):
        return backend
    env = _env_backend()
    if env in ("compiled", "eager"):
        return env
    return "compiled" if n >= AUTO_COMPILE_MIN_BATCH and _compile_supported() else "eager"


def _env_backend() -> str:
    env = os.environ.get(BACKEND_ENV, "").strip().lower()
    if env not in ("", *BACKENDS):
        raise ValueError(f"{BACKEND_ENV} must be one of {BACKENDS}, got {env!r}")
    return env


def wants_triton(backend: str, device: torch.device, dtype: torch.dtype) -> bool:
    """Whether the Triton kernel should evaluate the angle sums (``backend="triton"``, or
    ``"auto"`` on CUDA for float32 arithmetic where Triton works and has not failed)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "triton":
        return True
    if backend != "auto":
        return False
    env = _env_backend()
    if env == "triton":
        return True
    if env in ("compiled", "eager"):
        return False
    on_cuda = torch.device(device).type == "cuda"
    return dtype == torch.float32 and on_cuda and ("triton", dtype) not in _FAILURES and triton_supports(device)


def triton_failed(backend: str, device: torch.device, dtype: torch.dtype, exc: BaseException) -> None:
    """Remember a failure of the Triton kernel and warn once; re-raise for ``backend="triton"``."""
    key = ("triton", dtype)
    _FAILURES[key] = f"{type(exc).__name__}: {exc}".strip()[:2000]
    if backend == "triton":
        raise RuntimeError(f"backend='triton' was requested but the Triton kernel failed: {_FAILURES[key]}") from exc
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(
            f"rkd_pml: the Triton RKD angle kernel failed ({_FAILURES[key][:200]}); using the "
            "compiled or eager kernel instead.",
            RuntimeWarning,
            stacklevel=4,
        )


def kernel_for(
    backend: str, n: int, device: torch.device, dtype: torch.dtype, t: int, need_grad: bool
) -> Callable | None:
    """The compiled kernel to use for a batch of ``n``, or ``None`` for the eager one.

    ``backend="compiled"`` raises RuntimeError when compilation fails; ``"auto"`` warns once
    per (device type, dtype, tile, kind) and falls back to the eager kernel.
    """
    if resolve_backend(backend, n) != "compiled":
        return None
    try:
        return compiled_kernel(device, dtype, t, need_grad)
    except CompiledKernelUnavailable as exc:
        if backend == "compiled":
            raise RuntimeError(f"backend='compiled' was requested but torch.compile failed: {exc}") from exc
        key = (torch.device(device).type, dtype, t, need_grad)
        if key not in _WARNED:
            _WARNED.add(key)
            warnings.warn(
                f"rkd_pml: torch.compile is unavailable ({str(exc)[:200]}); using the "
                "eager RKD angle kernel (exact, slower).",
                RuntimeWarning,
                stacklevel=4,
            )
    return None
