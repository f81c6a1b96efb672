"""Validation of what users pass to the distillation losses: clear errors, early."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


def _describe(t: Tensor) -> str:
    return f"shape {tuple(t.shape)}, dtype {t.dtype}"


def check_embeddings(x: Tensor, role: str) -> None:
    """``x`` must be a finite, non-empty, floating ``(N, D)`` tensor."""
    if not torch.is_tensor(x):
        raise TypeError(f"{role} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{role} must be 2-D (batch, dim), got {_describe(x)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{role} is empty: {_describe(x)}")
    if not x.is_floating_point():
        raise TypeError(f"{role} must have a floating dtype, got {_describe(x)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{role} contains NaN or Inf values ({_describe(x)})")


def check_teacher(student: Tensor, teacher: Tensor | None) -> None:
    """The teacher (``ref_emb``) must be given and row-aligned with the student."""
    if teacher is None:
        raise ValueError(
            "RKD needs the teacher's embeddings of the same batch: call "
            "loss(student_emb, labels, indices_tuple, ref_emb=teacher_emb)"
        )
    check_embeddings(teacher, "ref_emb (teacher embeddings)")
    if teacher.shape[0] != student.shape[0]:
        raise ValueError(
            f"ref_emb (teacher) must have one row per student embedding: student has "
            f"{student.shape[0]} rows ({_describe(student)}), teacher has "
            f"{teacher.shape[0]} ({_describe(teacher)})"
        )
    if teacher.device != student.device:
        raise ValueError(
            f"student and teacher embeddings are on different devices "
            f"({student.device} and {teacher.device})"
        )


def check_labels(labels: Tensor | None, n: int) -> None:
    if labels is None:
        return
    if not torch.is_tensor(labels) or labels.ndim != 1 or labels.shape[0] != n:
        shape = tuple(labels.shape) if torch.is_tensor(labels) else type(labels).__name__
        raise ValueError(f"labels must be a 1-D tensor of length {n}, got {shape}")


def check_indices_tuple(indices_tuple: Sequence[Tensor] | None, n: int) -> None:
    """Pair tuples ``(a1, p, a2, n)`` or triplet tuples ``(a, p, n)`` of indices in ``[0, n)``."""
    if indices_tuple is None:
        return
    if len(indices_tuple) not in (3, 4):
        raise ValueError(
            "indices_tuple must be (anchors, positives, negatives) or "
            f"(anchors1, positives, anchors2, negatives); got {len(indices_tuple)} tensors"
        )
    for i, idx in enumerate(indices_tuple):
        if not torch.is_tensor(idx) or idx.ndim != 1 or idx.is_floating_point():
            raise ValueError(f"indices_tuple[{i}] must be a 1-D integer tensor")
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
            raise ValueError(
                f"indices_tuple[{i}] has indices outside [0, {n}) "
                f"(min {int(idx.min())}, max {int(idx.max())})"
            )
    groups = [indices_tuple] if len(indices_tuple) == 3 else [indices_tuple[:2], indices_tuple[2:]]
    for group in groups:
        if len({len(idx) for idx in group}) != 1:
            raise ValueError(
                "indices_tuple tensors that form one tuple must have equal lengths, got "
                f"{[len(idx) for idx in group]}"
            )
