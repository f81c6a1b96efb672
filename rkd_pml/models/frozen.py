"""A frozen teacher: eval mode for good, no gradients, forward under ``torch.inference_mode``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class FrozenModel(nn.Module):
    """Wraps ``model`` (as ``self.model``) so that it can only be used for inference.

    - it stays in eval mode when a parent module calls ``.train()`` (BatchNorm statistics
      and dropout never change);
    - all its parameters have ``requires_grad=False``;
    - ``forward`` runs under ``torch.inference_mode()`` and returns ordinary tensors (clones
      of the inference-mode outputs), so the outputs can enter a loss next to a student's
      outputs (inference tensors cannot be saved for backward);
    - other attributes (``data_config``, ``embedding_dim``, ``save``...) are the wrapped model's.

    State-dict keys get the prefix ``model.``.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        model.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> FrozenModel:
        """Ignores ``mode``: a frozen model stays in eval mode."""
        return super().train(False)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The wrapped model's forward, without autograd; e.g. ``(B, C, H, W) -> (B, D)``."""
        with torch.inference_mode():
            out = self.model(*args, **kwargs)
        return _clone(out)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            modules = self.__dict__.get("_modules")
            if name.startswith("__") or not modules or "model" not in modules:
                raise
            return getattr(modules["model"], name)


def freeze_teacher(model: nn.Module) -> FrozenModel:
    """``model`` frozen for use as a teacher (see :class:`FrozenModel`); idempotent."""
    if isinstance(model, FrozenModel):
        return model
    return FrozenModel(model)


def _clone(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return out.clone()
    if isinstance(out, (list, tuple)):
        items = [_clone(x) for x in out]
        return type(out)(*items) if hasattr(out, "_fields") else type(out)(items)
    if isinstance(out, dict):
        return type(out)((k, _clone(v)) for k, v in out.items())
    return out
