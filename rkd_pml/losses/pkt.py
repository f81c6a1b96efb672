"""Probabilistic Knowledge Transfer (Passalis and Tefas, ECCV 2018) as a PML loss.

Within each model the cosine kernel ``K_ij = (cos(x_i, x_j) + 1) / 2`` (values in ``[0, 1]``)
of distinct examples is turned into conditional probabilities
``p_j|i = K_ij / sum_{k != i} K_ik``; the loss of anchor ``i`` is the Kullback-Leibler
divergence of the teacher's distribution ``p_.|i`` from the student's ``q_.|i``::

    loss_i = sum_{j != i} p_j|i * log((p_j|i + eps) / (q_j|i + eps)),   eps = 1e-7

and the loss is the mean over anchors (the default reducer). ``eps`` is the authors' code's
(``probabilistic_kt``); it keeps the logarithm finite where a probability is 0 (two antipodal
embeddings). As in the paper, the self-similarity ``K_ii`` (1 in both models) is left out of
the distributions; the authors' code keeps it, and takes the mean over all ``N^2`` entries.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..functional.relations import unit_rows
from .base import DistillationLoss, result_dtype
from .registry import register_distillation_loss

#: Added to both probabilities inside the logarithm (the authors' value).
PKT_EPS = 1e-7


def cosine_probabilities(x: Tensor) -> Tensor:
    """Rows of conditional probabilities ``p_j|i`` ``(N, N)`` in float64 from a batch ``(N, D)``.

    ``p_j|i = K_ij / sum_{k != i} K_ik`` with ``K_ij = (cos(x_i, x_j) + 1) / 2`` and ``p_i|i = 0``.
    A zero row has cosine 0 with every other row; a row whose kernel sums to 0 (only possible
    for two antipodal examples) has all probabilities 0.
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        u = unit_rows(x)  # (N, D) float64, scale free
        kernel = (u @ u.T + 1.0) / 2.0
        eye = torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
        kernel = kernel.masked_fill(eye, 0.0)
        total = kernel.sum(dim=1, keepdim=True)
        positive = total > 0
        return torch.where(positive, kernel / torch.where(positive, total, torch.ones_like(total)), 0.0)


class PKTLoss(DistillationLoss):
    """PKT: KL divergence between the teacher's and the student's cosine-similarity distributions.

    Call it as ``loss(student_emb, ref_emb=teacher_emb)``:

    * ``embeddings``: the student's ``(N, Ds)`` embeddings.
    * ``ref_emb``: the teacher's ``(N, Dt)`` embeddings of the same batch, row-aligned.
      Required; detached (the teacher gets no gradient). ``Ds`` and ``Dt`` may differ.
    * ``labels``: accepted (checked for shape) and unused. ``ref_labels``: unused.
    * ``indices_tuple``: not supported (ValueError): each anchor's distribution runs over
      the whole batch.

    The ``N`` per-anchor divergences (see the module docstring) go to the reducer as
    ``"element"`` losses, so the default ``MeanReducer`` gives the mean over anchors. Cosines
    are scale invariant and computed in float64 from rows normalised with
    :func:`~rkd_pml.functional.relations.unit_rows`, so the loss is the same and finite at any
    finite norm; duplicate rows are harmless (cosine 1). ``N < 2``: a zero loss, still
    connected to ``embeddings``; ``N = 2`` gives exactly 0 (one-point distributions).
    No distance is used: a ``distance`` argument is refused.

    Args:
        **kwargs: passed to ``BaseMetricLossFunction`` (``reducer``, ``embedding_regularizer``, ...).
    """

    indices_tuple_refusal = "each anchor's distribution runs over the whole batch; mined tuples do not define it."
    uses_distance = False

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        if embeddings.shape[0] < 2:
            return {"loss": self.zero_loss()}
        with torch.no_grad():
            p = cosine_probabilities(ref_emb)
        q = cosine_probabilities(embeddings)
        kl = (p * (torch.log(p + PKT_EPS) - torch.log(q + PKT_EPS))).sum(dim=1)  # (N,)
        return self.per_example(kl.to(result_dtype(embeddings)))


register_distillation_loss("pkt", lambda o, s, t: PKTLoss(), "PKT (Passalis and Tefas 2018): KL between cosine-similarity distributions")


__all__ = ["PKTLoss", "PKT_EPS", "cosine_probabilities"]
