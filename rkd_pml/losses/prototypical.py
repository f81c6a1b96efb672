"""The prototypical-network loss (Snell et al., NeurIPS 2017) as a PML loss.

For an episode with supports ``s`` (labels ``c``) and queries ``q`` (labels ``y``), the
prototype of class ``k`` is ``p_k = mean{s_i : c_i = k}`` and the loss of query ``j`` is
``-log softmax_k(-||q_j - p_k||^2)[y_j]``; the reducer (default: mean) averages it over
the queries.

Why a ``BaseMetricLossFunction`` and not a plain function: the loss needs two roles in a
batch, and PML's call already has two sets, ``embeddings``/``labels`` (queries) and
``ref_emb``/``ref_labels`` (the reference set: here the supports), as its accuracy tools
use them. The subclass then gets PML's reducers (per-query ``"element"`` losses), its
distance objects (default: squared Euclidean, nothing L2-normalised; ``CosineSimilarity``
or ``LpDistance(normalize_embeddings=True)`` also work, similarities being used as
logits as they are), embedding regularisers and trainers. Batches from a PML trainer come
without ``ref_emb``; PML then passes the batch itself as the reference set, which would put
every query inside its own prototype, so that call needs ``shots``: the first ``shots``
rows of each class, in batch order, are its supports and the rest its queries (the layout
of :class:`rkd_pml.data.episodes.EpisodicBatchSampler` and of PML's ``MPerClassSampler``
batches, whose within-class order is random).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._pml import BaseMetricLossFunction, LpDistance
from .inputs import check_embeddings


def split_support_query(labels: Tensor, shots: int) -> Tensor:
    """Boolean mask ``(N,)``: True for the first ``shots`` rows of each class of ``labels`` ``(N,)``."""
    order = torch.argsort(labels, stable=True)
    _, counts = torch.unique_consecutive(labels[order], return_counts=True)
    starts = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(labels), device=labels.device) - starts
    return rank < shots


class PrototypicalLoss(BaseMetricLossFunction):
    """Prototypical-network loss: cross-entropy of the queries over the class prototypes.

    Calls:

    * ``loss(query_emb (Q, D), query_labels (Q,), ref_emb=support_emb (S, D),
      ref_labels=support_labels (S,))``: explicit roles; every query label must have
      supports, and support classes without queries still compete as prototypes;
    * ``loss(embeddings (N, D), labels (N,))`` with ``shots`` set: the first ``shots``
      rows of each class are its supports, the others its queries.

    Args:
        shots: supports per class for the single-batch call (``None``: that call is refused).
        **kwargs: PML's ``distance`` (default ``LpDistance(power=2,
            normalize_embeddings=False)``), ``reducer`` and regularisers.
    """

    def __init__(self, shots: int | None = None, **kwargs):
        if shots is not None and (isinstance(shots, bool) or not isinstance(shots, int) or shots < 1):
            raise ValueError(f"shots must be a positive int or None, got {shots!r}")
        self.shots = shots
        super().__init__(**kwargs)

    def get_default_distance(self) -> LpDistance:
        return LpDistance(p=2, power=2, normalize_embeddings=False)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        if labels is None:
            raise ValueError("PrototypicalLoss needs labels (and ref_labels with ref_emb)")
        check_embeddings(embeddings, "embeddings (queries)")
        if ref_emb is not embeddings:
            check_embeddings(ref_emb, "ref_emb (supports)")
        if ref_emb is embeddings:  # PML's stand-in when no ref_emb was given
            if self.shots is None:
                raise ValueError(
                    "PrototypicalLoss without ref_emb needs shots= (supports per class in the "
                    "batch); or call loss(query_emb, query_labels, ref_emb=support_emb, "
                    "ref_labels=support_labels)"
                )
            support = split_support_query(labels, self.shots)
            _, counts = torch.unique(labels, return_counts=True)
            if int(counts.min()) < self.shots:
                raise ValueError(
                    f"every class in the batch needs at least shots={self.shots} rows; the "
                    f"smallest has {int(counts.min())}"
                )
            query_idx = torch.nonzero(~support).reshape(-1)
            supports, support_labels = embeddings[support], labels[support]
        else:
            if ref_labels is None:
                raise ValueError("ref_labels (the supports' labels) must be given with ref_emb")
            if len(ref_emb) != len(ref_labels):
                raise ValueError(f"ref_emb has {len(ref_emb)} rows but ref_labels has {len(ref_labels)}")
            query_idx = torch.arange(len(embeddings), device=embeddings.device)
            supports, support_labels = ref_emb, ref_labels
        if len(query_idx) == 0:
            raise ValueError("no queries: every row of the batch is a support")
        classes, inverse = torch.unique(support_labels, return_inverse=True)  # (K,), (S,)
        sums = torch.zeros(len(classes), supports.shape[1], dtype=supports.dtype, device=supports.device)
        sums.index_add_(0, inverse, supports)
        sizes = torch.bincount(inverse, minlength=len(classes)).to(supports.dtype)
        prototypes = sums / sizes[:, None]  # (K, D)
        query_labels = labels[query_idx]
        target = torch.searchsorted(classes, query_labels).clamp(max=len(classes) - 1)
        if not bool((classes[target] == query_labels).all()):
            missing = query_labels[classes[target] != query_labels][0].item()
            raise ValueError(f"query label {missing} has no supports")
        mat = self.distance(embeddings[query_idx], prototypes)  # (Q, K)
        logits = mat if self.distance.is_inverted else -mat
        losses = -torch.log_softmax(logits, dim=1).gather(1, target[:, None]).reshape(-1)
        return {"loss": {"losses": losses, "indices": query_idx, "reduction_type": "element"}}
