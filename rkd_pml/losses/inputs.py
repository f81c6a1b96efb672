"""Validation of what users pass to the distillation losses: clear errors, early.

Constructor arguments are checked when the loss is built, call arguments before anything is
computed; every error names the argument, what it accepts and what it got.
"""

from __future__ import annotations

import math
import numbers
import operator
from typing import Any, Sequence

import torch
from torch import Tensor

#: Index dtypes accepted in an ``indices_tuple`` (bool and uint8 tensors index as masks).
INDEX_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8)


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


def check_indices_tuple(indices_tuple: Sequence[Tensor] | None, embeddings: Tensor) -> None:
    """Pair tuples ``(a1, p, a2, n)`` or triplet tuples ``(a, p, n)``: 1-D integer index tensors
    ``(P,)`` or ``(T,)`` with values in ``[0, N)``, on the device of ``embeddings`` ``(N, D)``."""
    if indices_tuple is None:
        return
    n = embeddings.shape[0]
    is_sequence = isinstance(indices_tuple, (tuple, list))
    if not is_sequence or len(indices_tuple) not in (3, 4):
        got = f"{len(indices_tuple)} tensors" if is_sequence else type(indices_tuple).__name__
        raise ValueError(
            "indices_tuple must be a tuple (anchors, positives, negatives) or "
            f"(anchors1, positives, anchors2, negatives) of index tensors, as PML's miners "
            f"return; got {got}"
        )
    for i, idx in enumerate(indices_tuple):
        if not torch.is_tensor(idx) or idx.ndim != 1 or idx.dtype not in INDEX_DTYPES:
            got = f"shape {tuple(idx.shape)}, dtype {idx.dtype}" if torch.is_tensor(idx) else type(idx).__name__
            mask_hint = (
                " (a boolean mask: pass its positions, mask.nonzero().squeeze(1))"
                if torch.is_tensor(idx) and idx.dtype in (torch.bool, torch.uint8)
                else ""
            )
            raise ValueError(
                f"indices_tuple[{i}] must be a 1-D tensor of integer indices (torch.long); "
                f"got {got}{mask_hint}"
            )
        if idx.device != embeddings.device:
            raise ValueError(
                f"indices_tuple[{i}] is on {idx.device} but the embeddings are on {embeddings.device}"
            )
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
    check_indices_tuple(indices_tuple, embeddings)


def check_euclidean(distance, loss_name: str) -> None:
    """Only PML's ``LpDistance(p=2, power=1)`` (normalised or not) can be honoured."""
    d = distance
    if type(d).__name__ != "LpDistance" or d.p != 2 or d.power != 1 or d.is_inverted:
        raise ValueError(
            f"{loss_name} needs Euclidean distances: pass "
            "LpDistance(p=2, power=1, normalize_embeddings=True|False), got "
            f"{type(d).__name__}(p={getattr(d, 'p', None)}, power={getattr(d, 'power', None)})"
        )


def _given(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def check_real(name: str, value: Any, *, positive: bool = False) -> float:
    """``value`` as a float: a finite real number (not a bool or a string), ``> 0`` if
    ``positive`` else ``>= 0``. ValueError naming ``name`` otherwise."""
    wanted = f"a finite, {'positive' if positive else 'non-negative'} real number (int or float)"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be {wanted}, got {_given(value)}")
    number = float(value)
    if not math.isfinite(number) or number < 0 or (positive and number == 0):
        raise ValueError(f"{name} must be {wanted}, got {_given(value)}")
    return number


def check_count(name: str, value: Any) -> int:
    """``value`` as an int: an integer ``>= 1`` (not a bool, not a float). ValueError otherwise."""
    try:
        count = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        count = None
    if count is None or count < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {_given(value)}")
    return count


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """``value`` must be one of the strings ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {_given(value)}")
    return value


def check_callable_or_none(name: str, value: Any, example: str) -> None:
    """PML's ``reducer`` and ``embedding_regularizer`` must be objects that can be called."""
    if value is not None and not callable(value):
        raise ValueError(f"{name} must be None or a PML object such as {example}, got {_given(value)}")
