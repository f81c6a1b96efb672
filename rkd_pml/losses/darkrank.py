"""Hard DarkRank (Chen, Wang, Zhang, AAAI 2018) as a PML loss: a distillation baseline.

For every anchor ``i`` the teacher ranks the other examples of the batch by distance; the
student is trained to reproduce the teacher's top of that ranking. Scores are
``s_ij = -alpha * d_ij ** beta`` with ``d`` the Euclidean distance, and the loss of anchor
``i`` is the negative Plackett-Luce log-likelihood of the teacher's order ``pi_1 .. pi_L``
(its ``L`` nearest other examples, nearest first) under the student's scores::

    loss_i = -sum_{k=1..L} [ s_i,pi_k - logsumexp_{m >= k} s_i,pi_m ]

This is the "hard" DarkRank that the RKD paper compares against (alpha = beta = 3, L = 4).
"""

from __future__ import annotations

from dataclasses import dataclass
import math

import torch
from torch import Tensor

from ..functional.relations import ACCUMULATE_DTYPE, relations, unit_rows
from ..settings import MAX_BATCH, MAX_WEIGHT, setting
from .base import DistillationLoss, result_dtype
from .inputs import check_count, check_real
from .registry import register_distillation_loss

#: Scores saturate at ``-SCORE_HEADROOM * finfo(out_dtype).max / (2 * (L + 1))``: then a
#: per-anchor loss (at most about ``2 L`` score magnitudes), and a sum over up to a million
#: anchors, stay finite in the output dtype; saturated pairs get no gradient. Only reached
#: for distances of about 1e10 in float32 with the default alpha and beta.
SCORE_HEADROOM = 1e-6


def plackett_luce_nll(ordered_scores: Tensor) -> Tensor:
    """Negative Plackett-Luce log-likelihood of each row's order.

    Args:
        ordered_scores: ``(N, L)`` scores, column ``k`` being the item ranked ``k``-th.

    Returns:
        ``(N,)`` values ``-sum_k [s_k - logsumexp_{m >= k} s_m]``, each ``>= 0``.
    """
    tail_lse = torch.logcumsumexp(ordered_scores.flip(1), dim=1).flip(1)
    return (tail_lse - ordered_scores).sum(dim=1)


class DarkRankLoss(DistillationLoss):
    """Hard DarkRank distillation loss (listwise, Plackett-Luce), one loss per anchor.

    Call it as ``loss(student_emb, ref_emb=teacher_emb)``:

    * ``embeddings``: the student's ``(N, Ds)`` embeddings.
    * ``ref_emb``: the teacher's ``(N, Dt)`` embeddings of the same batch, row-aligned
      (row ``i`` is the same example). Required; detached (the teacher gets no gradient).
      ``Ds`` and ``Dt`` may differ: only distances within each model are compared.
    * ``labels``: accepted (checked for shape) and unused. ``ref_labels``: unused.
    * ``indices_tuple``: not supported (ValueError). The list of each anchor is chosen by
      the teacher's distances over the whole batch; label-driven pairs or triplets from a
      miner do not define such lists.

    For each anchor ``i`` the teacher's ``L = min(list_length, N - 1)`` nearest other
    examples are taken in the teacher's order (ties broken by the lower index); the
    anchor's loss is the negative Plackett-Luce log-likelihood of that order under the
    student's scores ``s_ij = -alpha * d_ij ** beta``. The ``N`` per-anchor losses go to the
    reducer as ``"element"`` losses indexed by anchor, so the default ``MeanReducer`` gives
    the mean over anchors (the published formulation) and other reducers work too.

    Small batches: with ``N - 1 < list_length`` the lists are shortened to ``N - 1``; with
    ``N = 2`` every list has one item and the loss is exactly 0; with ``N = 1`` the loss is
    a zero that is still connected to ``embeddings`` (``backward`` works, gradient 0).

    Distances are Euclidean, without L2 normalisation by default
    (``LpDistance(normalize_embeddings=False)``); pass
    ``distance=LpDistance(normalize_embeddings=True)`` to L2-normalise both student and
    teacher first (the RKD paper notes DarkRank-like losses collapse without it). Other
    distances are refused. The teacher's ranking and the student's scores are computed in
    float64; pairs of identical student embeddings have distance 0 and no gradient, so
    duplicates never give NaN or Inf, and scores saturate (without gradient) far beyond
    any sensible scale (see ``SCORE_HEADROOM``), so the loss stays finite at any finite
    norm. Checks, teacher detach and dtype rule are :class:`DistillationLoss`'s: the loss
    has the dtype of ``embeddings`` promoted to at least float32.

    Args:
        alpha: scale of the scores, a finite number > 0.
        beta: power of the distances in the scores, a finite number > 0.
        list_length: number ``L``, an integer >= 1, of the teacher's nearest neighbours
            ranked per anchor.
        **kwargs: passed to ``BaseMetricLossFunction`` (``reducer``, ``distance``,
            ``embedding_regularizer``, ...).
    """

    indices_tuple_refusal = (
        "it ranks, for every anchor, the teacher's nearest neighbours over the whole batch; "
        "mined pairs or triplets do not define these lists."
    )

    def __init__(self, alpha: float = 3.0, beta: float = 3.0, list_length: int = 4, **kwargs):
        self.alpha = check_real("alpha", alpha, positive=True)
        self.beta = check_real("beta", beta, positive=True)
        self.list_length = check_count("list_length", list_length)
        super().__init__(**kwargs)
        self.add_to_recordable_attributes(
            list_of_names=["alpha", "beta", "list_length"], is_stat=False
        )

    def teacher_order(self, ref_emb: Tensor, length: int) -> Tensor:
        """Indices ``(N, length)`` of each anchor's nearest other examples in the teacher ``(N, Dt)``,
        nearest first, ties broken by the lower index."""
        with torch.no_grad():
            dist = relations(ref_emb, normalize=self.distance.normalize_embeddings).dist.clone()
            dist.fill_diagonal_(float("inf"))
            order = torch.sort(dist, dim=1, stable=True).indices
        return order[:, :length]

    def student_scores(
        self, embeddings: Tensor, order: Tensor, out_dtype: torch.dtype = torch.float32
    ) -> Tensor:
        """Scores ``s_i,order[i,k] = -alpha * d ** beta`` ``(N, L)`` of the student ``(N, Ds)``,
        in float64, from direct differences (exact for near-duplicates); identical rows
        score 0 with no gradient, and scores saturate as ``SCORE_HEADROOM`` says."""
        x = embeddings.to(ACCUMULATE_DTYPE)
        diff = x.unsqueeze(1) - x[order]  # (N, L, Ds)
        sq = diff.pow(2).sum(dim=2)
        # d ** beta = sq ** (beta / 2), bounded so that alpha * d ** beta <= score_limit.
        score_limit = SCORE_HEADROOM * torch.finfo(out_dtype).max / (2 * (order.shape[1] + 1))
        log_cap = (2.0 / self.beta) * (math.log(score_limit) - math.log(self.alpha))
        max_value = torch.finfo(ACCUMULATE_DTYPE).max
        sq_cap = max_value if log_cap >= math.log(max_value) else math.exp(log_cap)
        positive = sq > 0
        safe_sq = torch.where(positive, sq, torch.ones_like(sq)).clamp(max=sq_cap)
        powered = torch.where(positive, safe_sq.pow(self.beta / 2.0), torch.zeros_like(sq))
        return -self.alpha * powered

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        length = min(self.list_length, embeddings.shape[0] - 1)
        if length < 1:
            return {"loss": self.zero_loss()}
        out_dtype = result_dtype(embeddings)
        order = self.teacher_order(ref_emb, length)
        if self.distance.normalize_embeddings:
            embeddings = unit_rows(embeddings)
        scores = self.student_scores(embeddings, order, out_dtype)
        return self.per_example(plackett_luce_nll(scores).to(out_dtype))


@dataclass
class DarkRankOptions:
    """Options of ``--loss darkrank``."""

    darkrank_alpha: float = setting(3.0, "DarkRank's score scale alpha", metavar="A", above=0.0, high=MAX_WEIGHT)
    darkrank_beta: float = setting(3.0, "DarkRank's distance exponent beta", metavar="B", above=0.0, high=MAX_WEIGHT)
    darkrank_list_length: int = setting(4, "DarkRank's list length (teacher's nearest neighbours per anchor)", metavar="L",
                                        low=1, high=MAX_BATCH)


register_distillation_loss(
    "darkrank",
    lambda o, s, t: DarkRankLoss(alpha=o.darkrank_alpha, beta=o.darkrank_beta, list_length=o.darkrank_list_length),
    "hard DarkRank (Chen et al. 2018)", DarkRankOptions,
)


__all__ = ["DarkRankLoss", "SCORE_HEADROOM", "plackett_luce_nll"]
