"""Correlation congruence (Peng et al., ICCV 2019) as a PML loss.

Each model's batch correlation matrix ``C_ij = k(f_i, f_j)`` uses the Gaussian RBF kernel
``k(x, y) = exp(-gamma ||x - y||^2)`` on L2-normalised embeddings, approximated by its
``P``-order Taylor series (for unit vectors ``||x - y||^2 = 2 - 2 x.y``)::

    C_ij = sum_{p=0..P} exp(-2 gamma) (2 gamma)^p / p! * (f_i . f_j)^p

and the loss is ``||C_t - C_s||_F^2 / b^2``. Defaults are the paper's ImageNet setting,
``gamma = 0.4`` and ``P = 2``.
"""

from __future__ import annotations

from dataclasses import dataclass
import math

import torch
from torch import Tensor

from ..functional.relations import unit_rows
from ..settings import MAX_WEIGHT, setting
from .base import DistillationLoss, result_dtype
from .inputs import check_count, check_real
from .similarity_preserving import row_congruence_losses
from .registry import register_distillation_loss


def taylor_rbf_correlation(x: Tensor, gamma: float, order: int) -> Tensor:
    """``C`` ``(N, N)`` in float64 for ``x`` ``(N, D)``: the ``order``-term Taylor series of the
    RBF kernel with ``gamma`` on the L2-normalised rows (a zero row has product 0 with all)."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        u = unit_rows(x)
        dots = u @ u.T
        series = torch.ones_like(dots)
        power = torch.ones_like(dots)
        for p in range(1, order + 1):
            power = power * dots
            series = series + ((2.0 * gamma) ** p / math.factorial(p)) * power
        return math.exp(-2.0 * gamma) * series


class CorrelationCongruenceLoss(DistillationLoss):
    """CC: squared Frobenius distance between the batch correlation matrices of both models.

    Call it as ``loss(student_emb, ref_emb=teacher_emb)``:

    * ``embeddings``: the student's ``(N, Ds)`` embeddings.
    * ``ref_emb``: the teacher's ``(N, Dt)`` embeddings of the same batch, row-aligned.
      Required; detached (the teacher gets no gradient). ``Ds`` and ``Dt`` may differ.
    * ``labels``: accepted (checked for shape) and unused. ``ref_labels``: unused.
    * ``indices_tuple``: not supported (ValueError): the loss compares whole matrices.

    Row ``i`` contributes ``||C_t[i] - C_s[i]||^2 / N`` as an ``"element"`` loss, so the
    default ``MeanReducer`` gives ``||C_t - C_s||_F^2 / N^2``. The embeddings are
    L2-normalised first, as the Taylor expansion assumes; the loss is therefore scale
    invariant and finite at any finite norm, with duplicates or zero rows, and computed in
    float64. ``N < 2``: a zero loss, still connected to ``embeddings``. No distance is used:
    a ``distance`` argument is refused.

    Args:
        gamma: the RBF kernel's ``gamma``, a finite number > 0 (paper: 0.4).
        order: ``P``, the order of the Taylor series, an integer >= 1 (paper: 2).
        **kwargs: passed to ``BaseMetricLossFunction`` (``reducer``, ``embedding_regularizer``, ...).
    """

    indices_tuple_refusal = "it compares whole batch correlation matrices; mined tuples do not define them."
    uses_distance = False

    def __init__(self, gamma: float = 0.4, order: int = 2, **kwargs):
        self.gamma = check_real("gamma", gamma, positive=True)
        self.order = check_count("order", order)
        super().__init__(**kwargs)
        self.add_to_recordable_attributes(list_of_names=["gamma", "order"], is_stat=False)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        if embeddings.shape[0] < 2:
            return {"loss": self.zero_loss()}
        with torch.no_grad():
            teacher = taylor_rbf_correlation(ref_emb, self.gamma, self.order)
        student = taylor_rbf_correlation(embeddings, self.gamma, self.order)
        return self.per_example(row_congruence_losses(student, teacher).to(result_dtype(embeddings)))


#: the most terms of CC's Taylor series (a typo guard: each term is one more (N, N) product)
MAX_CC_ORDER = 64


@dataclass
class CorrelationCongruenceOptions:
    """Options of ``--loss cc``."""

    cc_gamma: float = setting(0.4, "CC's Gaussian-RBF kernel parameter gamma", metavar="G", above=0.0, high=MAX_WEIGHT)
    cc_order: int = setting(2, "CC's order of the Taylor series of the RBF kernel", metavar="P", low=1, high=MAX_CC_ORDER)


register_distillation_loss(
    "cc", lambda o, s, t: CorrelationCongruenceLoss(gamma=o.cc_gamma, order=o.cc_order),
    "CC (Peng et al. 2019): Taylor-RBF batch correlation matrices", CorrelationCongruenceOptions,
)


__all__ = ["CorrelationCongruenceLoss", "taylor_rbf_correlation"]
