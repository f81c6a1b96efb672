"""Relaxed contrastive loss (Kim et al., "Embedding Transfer with Label Relaxation", CVPR 2021).

The teacher's pairwise distances become soft labels ``w_ij = exp(-||t_i - t_j||^2 / sigma)``
on L2-normalised teacher embeddings (so ``||t_i - t_j||^2`` lies in ``[0, 4]``). The student's
distances are divided by each anchor's mean distance, ``d^_ij = d_ij / mu_i`` with
``mu_i = (1/N) sum_k d_ik`` (the zero self-distance counted, as in the authors' code), and::

    loss_i = sum_{j != i} w_ij d^_ij^2 + (1 - w_ij) max(0, delta - d^_ij)^2

with the loss the mean over anchors. Defaults ``sigma = 1`` and ``delta = 1`` are the paper's
and its code's, used for all its datasets.
"""

from __future__ import annotations

from dataclasses import dataclass
import torch
from torch import Tensor

from ..functional.relations import relations, unit_rows
from ..settings import MAX_WEIGHT, setting
from .base import DistillationLoss, result_dtype
from .inputs import check_real
from .registry import register_distillation_loss


def soft_labels(ref_emb: Tensor, sigma: float) -> Tensor:
    """``w_ij = exp(-||t_i - t_j||^2 / sigma)`` ``(N, N)`` in float64 on L2-normalised rows of ``ref_emb`` ``(N, Dt)``."""
    with torch.autocast(device_type=ref_emb.device.type, enabled=False):
        u = unit_rows(ref_emb)
        sq = (2.0 - 2.0 * (u @ u.T)).clamp(min=0.0)
        return torch.exp(-sq / sigma)


def mean_normalised_distances(x: Tensor) -> Tensor:
    """``d_ij / mu_i`` ``(N, N)`` in float64 for ``x`` ``(N, D)``, ``mu_i`` the row mean of the distances.

    Distances are :func:`~rkd_pml.functional.relations.relations`'s: exactly 0, without gradient,
    for duplicate pairs; a row whose distances are all 0 gives zeros.
    """
    dist = relations(x).dist  # in units of a power of two: d / mu does not depend on it
    mu = dist.mean(dim=1, keepdim=True)
    positive = mu > 0
    return torch.where(positive, dist / torch.where(positive, mu, torch.ones_like(mu)), 0.0)


class RelaxedContrastiveLoss(DistillationLoss):
    """Relaxed contrastive loss: a contrastive loss on the student's distances, labelled softly
    by the teacher's.

    Call it as ``loss(student_emb, ref_emb=teacher_emb)``:

    * ``embeddings``: the student's ``(N, Ds)`` embeddings (not normalised).
    * ``ref_emb``: the teacher's ``(N, Dt)`` embeddings of the same batch, row-aligned.
      Required; detached (the teacher gets no gradient). ``Ds`` and ``Dt`` may differ.
    * ``labels``: accepted (checked for shape) and unused: the teacher's soft labels replace
      them. ``ref_labels``: unused.
    * ``indices_tuple``: not supported (ValueError): every pair of the batch is weighted by
      the teacher, and the distance normaliser runs over the batch.

    The ``N`` per-anchor losses (module docstring) go to the reducer as ``"element"`` losses,
    so the default ``MeanReducer`` gives the paper's ``1/N`` sum. The student's distances over
    their mean are scale invariant and the teacher is L2-normalised, so the loss is finite and
    unchanged at any finite norm of either model; a duplicate pair of the student has distance
    0 and no gradient (its push term ``(1 - w) delta^2`` stays in the sum). Computed in float64.
    ``N < 2``: a zero loss, still connected to ``embeddings``. No distance argument is taken.

    Args:
        sigma: width of the soft labels' kernel, a finite number > 0 (paper: 1).
        delta: margin on the normalised distances, a finite number > 0 (paper: 1).
        **kwargs: passed to ``BaseMetricLossFunction`` (``reducer``, ``embedding_regularizer``, ...).
    """

    indices_tuple_refusal = "the teacher weights every pair of the batch; mined tuples do not replace its soft labels."
    uses_distance = False

    def __init__(self, sigma: float = 1.0, delta: float = 1.0, **kwargs):
        self.sigma = check_real("sigma", sigma, positive=True)
        self.delta = check_real("delta", delta, positive=True)
        super().__init__(**kwargs)
        self.add_to_recordable_attributes(list_of_names=["sigma", "delta"], is_stat=False)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        n = embeddings.shape[0]
        if n < 2:
            return {"loss": self.zero_loss()}
        with torch.no_grad():
            w = soft_labels(ref_emb, self.sigma)
        d = mean_normalised_distances(embeddings)
        pairs = w * d.pow(2) + (1.0 - w) * torch.relu(self.delta - d).pow(2)
        eye = torch.eye(n, dtype=torch.bool, device=embeddings.device)
        losses = pairs.masked_fill(eye, 0.0).sum(dim=1)  # (N,)
        return self.per_example(losses.to(result_dtype(embeddings)))


@dataclass
class RelaxedContrastiveOptions:
    """Options of ``--loss relaxed-contrastive``."""

    relaxed_sigma: float = setting(1.0, "relaxed contrastive: width sigma of the teacher's soft labels", metavar="S",
                                   above=0.0, high=MAX_WEIGHT)
    relaxed_delta: float = setting(1.0, "relaxed contrastive: margin delta on the student's distances", metavar="D",
                                   above=0.0, high=MAX_WEIGHT)


register_distillation_loss(
    "relaxed-contrastive", lambda o, s, t: RelaxedContrastiveLoss(sigma=o.relaxed_sigma, delta=o.relaxed_delta),
    "relaxed contrastive (Kim et al. 2021): the teacher's distances as soft labels", RelaxedContrastiveOptions,
)


__all__ = ["RelaxedContrastiveLoss", "mean_normalised_distances", "soft_labels"]
