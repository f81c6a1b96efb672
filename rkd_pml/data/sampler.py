"""Class-balanced batches with PML's MPerClassSampler, with argument checks that say what is wrong."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .._pml import MPerClassSampler


def class_balanced_sampler(
    labels: Sequence[int] | np.ndarray | torch.Tensor | Any,
    m: int,
    batch_size: int,
    length: int | None = None,
) -> MPerClassSampler:
    """Sampler whose every ``batch_size`` consecutive indices hold ``m`` images of each of
    ``batch_size // m`` classes. Use it with ``DataLoader(..., batch_size=batch_size, sampler=...)``.

    Args:
        labels: 1-D class labels ``(N,)``, or a data set with a ``.labels`` attribute.
        m: images per class in a batch (drawn with replacement for smaller classes).
        batch_size: batch size; a multiple of ``m`` and at most ``m * num_classes``.
        length: indices per pass (rounded down to a multiple of ``batch_size``); default ``N``.
    """
    if hasattr(labels, "labels") and not isinstance(labels, (np.ndarray, torch.Tensor)):
        labels = labels.labels
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).reshape(-1)
    if labels.size == 0:
        raise ValueError("labels is empty")
    if not isinstance(m, (int, np.integer)) or m < 1:
        raise ValueError(f"m (images per class) must be a positive int, got {m!r}")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if batch_size % m:
        raise ValueError(f"batch_size ({batch_size}) must be a multiple of m ({m})")
    num_classes = len(np.unique(labels))
    if m * num_classes < batch_size:
        raise ValueError(
            f"m * num_classes = {m} * {num_classes} = {m * num_classes} < batch_size ({batch_size}): "
            f"too few classes for batches of {batch_size // m} classes x {m} images"
        )
    length = len(labels) if length is None else int(length)
    if length < batch_size:
        raise ValueError(f"length ({length}) must be at least batch_size ({batch_size})")
    return MPerClassSampler(labels, m, batch_size=batch_size, length_before_new_iter=length)
