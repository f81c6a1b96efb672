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


def check_teacher(student: Tensor, teacher: Tensor | None, loss_name: str = "RKD") -> None:
    """The teacher (``ref_emb``) must be given and row-aligned with the student."""
    if teacher is None:
        raise ValueError(
            f"{loss_name} needs the teacher's embeddings of the same batch: call "
            "loss(student_emb, labels, indices_tuple, ref_emb=teacher_emb)"
        )
    check_embeddings(teacher, "ref_emb (teacher embeddings)")
    if teacher.shape[0] != student.shape[0]:
        hint = ""
        if (
            teacher.shape[0] > student.shape[0]
            and torch.distributed.is_available()
            and torch.distributed.is_initialized()
        ):
            hint = (
                "; this is what PML's DistributedLossWrapper(..., efficient=True) passes (local "
                "student rows, global teacher rows): use efficient=False "
                "(see rkd_pml.distributed.distributed_rkd)"
            )
        raise ValueError(
            f"ref_emb (teacher) must have one row per student embedding: student has "
            f"{student.shape[0]} rows ({_describe(student)}), teacher has "
            f"{teacher.shape[0]} ({_describe(teacher)}){hint}"
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


def check_distillation_call(
    loss_name: str,
    embeddings: Tensor,
    labels: Tensor | None,
    indices_tuple: Sequence[Tensor] | None,
    ref_emb: Tensor | None,
    tuples_meaning: str | None = None,
) -> None:
    """All checks of a distillation loss call: student ``(N, Ds)``, teacher ``(N, Dt)``,
    labels ``(N,)`` and indices. ``tuples_meaning`` explains why a loss that takes no
    ``indices_tuple`` refuses one (``None``: tuples are supported)."""
    if indices_tuple is not None and tuples_meaning is not None:
        raise ValueError(
            f"{loss_name} does not take an indices_tuple: {tuples_meaning} "
            "Call it without a miner (indices_tuple=None)."
        )
    check_embeddings(embeddings, "embeddings (student)")
    check_teacher(embeddings, ref_emb, loss_name)
    check_labels(labels, embeddings.shape[0])
    check_indices_tuple(indices_tuple, embeddings.shape[0])


def check_euclidean(distance, loss_name: str) -> None:
    """Only PML's ``LpDistance(p=2, power=1)`` (normalised or not) can be honoured."""
    d = distance
    if type(d).__name__ != "LpDistance" or d.p != 2 or d.power != 1 or d.is_inverted:
        raise ValueError(
            f"{loss_name} needs Euclidean distances: pass "
            "LpDistance(p=2, power=1, normalize_embeddings=True|False), got "
            f"{type(d).__name__}(p={getattr(d, 'p', None)}, power={getattr(d, 'power', None)})"
        )
