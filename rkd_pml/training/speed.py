"""Mixed precision, channels-last and compiled models for the training jobs.

* ``precision``: ``fp32`` (default), ``bf16`` (CPU and CUDA autocast) or ``fp16`` (CUDA
  autocast with a gradient scaler). Only the models' forward passes run under autocast; the
  embeddings are cast to float32 before any loss, so the RKD relations stay in float32/float64.
* ``channels_last``: the models' weights (and so their convolutions) in channels-last layout.
* ``compile``: ``torch.compile`` of the student's and the teacher's forward. A model that
  fails to compile falls back to eager once, with one warning, and stays eager.

Checked before a run starts: :func:`check_precision` refuses what the device cannot do.
Checked at every step: :func:`gradients_are_finite`. A finite loss can still give non-finite
gradients (bf16 convolution backward kernels on some CPUs return an infinite or NaN weight
gradient now and then, and recomputing the same step gives finite ones); the loop then skips
that optimizer step, as a gradient scaler does for fp16, instead of writing NaN into the weights.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Callable

import torch
from torch import Tensor, nn

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device: torch.device) -> None:
    """ValueError naming ``--precision`` when ``device`` cannot run ``precision``."""
    if precision == "fp32":
        return
    if precision not in AUTOCAST_DTYPES:
        raise ValueError(f"--precision must be fp32, bf16 or fp16, got {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"--precision fp16 needs a CUDA device (it trains with a gradient scaler); on {device.type} use bf16 or fp32")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("--precision bf16: this GPU has no bfloat16 support; use fp16 or fp32")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--precision {precision} runs on cpu or cuda, not {device.type}; use fp32")


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context of the models' forward passes (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPES[precision])


def gradients_are_finite(optimizer: torch.optim.Optimizer) -> bool:
    """True when every gradient of ``optimizer``'s parameters is finite (one device sync)."""
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if not grads:
        return True
    largest = torch.stack([torch.linalg.vector_norm(g.detach(), ord=float("inf")).float() for g in grads])
    return bool(torch.isfinite(largest).all())


def make_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A gradient scaler, enabled for fp16 only (its state goes into the checkpoints)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


class CompiledForward:
    """``module``'s forward through ``torch.compile``; on the first failure, one warning and
    eager from then on. Not a module: ``module`` stays what is trained, saved and loaded."""

    def __init__(self, module: nn.Module, name: str):
        self.module, self.name = module, name
        self.compiled: Callable[..., Tensor] | None = torch.compile(module)

    def __call__(self, *args: Any) -> Tensor:
        if self.compiled is not None:
            try:
                return self.compiled(*args)
            except Exception as exc:  # compilation problems surface at the first call
                warnings.warn(f"torch.compile of the {self.name} failed ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); running it eagerly", stacklevel=2)
                self.compiled = None
        return self.module(*args)


def prepare_forward(module: nn.Module, channels_last: bool, compile: bool, name: str) -> Callable[..., Tensor]:
    """``module`` in channels-last layout (in place) and its forward, compiled when asked."""
    if channels_last:
        module.to(memory_format=torch.channels_last)
    return CompiledForward(module, name) if compile else module


def to_input(images: Tensor, device: torch.device, channels_last: bool) -> Tensor:
    """A batch of images on ``device``, channels-last when the models are."""
    images = images.to(device, non_blocking=True)
    return images.contiguous(memory_format=torch.channels_last) if channels_last and images.dim() == 4 else images
