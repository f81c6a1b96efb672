"""Similarity-preserving distillation (Tung and Mori, ICCV 2019) as a PML loss.

Each model's batch Gram matrix ``G = A A^T`` ``(b, b)`` has its rows L2-normalised
(``G~_i = G_i / ||G_i||``); the loss is ``||G~_t - G~_s||_F^2 / b^2``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..functional.relations import ACCUMULATE_DTYPE, power_of_two_scale, unit_rows
from .base import DistillationLoss, result_dtype
from .registry import register_distillation_loss


def row_normalised_gram(x: Tensor) -> Tensor:
    """``G~`` ``(N, N)`` in float64: the Gram matrix of ``x`` ``(N, D)``, rows L2-normalised.

    ``x`` is first divided by a power of two (exact; ``G~`` is scale invariant), so no entry
    overflows or underflows at any finite norm; a zero row of ``x`` gives a zero row of ``G~``.
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.to(ACCUMULATE_DTYPE)
        x = x / power_of_two_scale(x)
        return unit_rows(x @ x.T)


def row_congruence_losses(student: Tensor, teacher: Tensor) -> Tensor:
    """Per-row shares ``||T_i - S_i||^2 / N`` ``(N,)`` of ``||T - S||_F^2 / N^2`` for ``(N, N)`` matrices."""
    return (teacher - student).pow(2).sum(dim=1) / student.shape[0]


class SimilarityPreservingLoss(DistillationLoss):
    """SP: squared Frobenius distance between the row-normalised batch Gram matrices.

    Call it as ``loss(student_emb, ref_emb=teacher_emb)``:

    * ``embeddings``: the student's ``(N, Ds)`` embeddings.
    * ``ref_emb``: the teacher's ``(N, Dt)`` embeddings of the same batch, row-aligned.
      Required; detached (the teacher gets no gradient). ``Ds`` and ``Dt`` may differ.
    * ``labels``: accepted (checked for shape) and unused. ``ref_labels``: unused.
    * ``indices_tuple``: not supported (ValueError): each row normalisation runs over the
      whole batch.

    Row ``i`` contributes ``||G~_t[i] - G~_s[i]||^2 / N`` as an ``"element"`` loss, so the
    default ``MeanReducer`` gives the paper's ``||G~_t - G~_s||_F^2 / N^2``. The Gram matrices
    are not centred (as in the paper). Computed in float64; the loss is scale invariant in
    each model and finite at any finite norm, with duplicates or zero rows. ``N < 2``: a zero
    loss, still connected to ``embeddings``. No distance is used: a ``distance`` is refused.

    Args:
        **kwargs: passed to ``BaseMetricLossFunction`` (``reducer``, ``embedding_regularizer``, ...).
    """

    indices_tuple_refusal = "it compares whole rows of the batch Gram matrices; mined tuples do not define them."
    uses_distance = False

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        if embeddings.shape[0] < 2:
            return {"loss": self.zero_loss()}
        with torch.no_grad():
            teacher = row_normalised_gram(ref_emb)
        losses = row_congruence_losses(row_normalised_gram(embeddings), teacher)
        return self.per_example(losses.to(result_dtype(embeddings)))


register_distillation_loss("sp", lambda o, s, t: SimilarityPreservingLoss(), "SP (Tung and Mori 2019): row-normalised batch Gram matrices")


__all__ = ["SimilarityPreservingLoss", "row_congruence_losses", "row_normalised_gram"]
