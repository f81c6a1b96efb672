"""Relational Knowledge Distillation (Park et al., CVPR 2019) as PML losses.

The student's embeddings are ``embeddings``; the teacher's embeddings of the same batch,
row-aligned, are ``ref_emb``. Relations are computed within each model, so the two widths
may differ. Nothing is L2-normalised unless ``distance=LpDistance(normalize_embeddings=True)``.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from .._pml import (
    BaseMetricLossFunction,
    LpDistance,
    MeanReducer,
    MultipleReducers,
    convert_to_pairs,
    convert_to_triplets,
)
from ..functional.angle import (
    all_distinct_triplets,
    rkd_angle_all_triplets_mean,
    rkd_angle_triplet_losses,
)
from ..functional.fused import BACKENDS
from ..functional.distance import all_distinct_pairs, rkd_distance_pair_losses
from ..functional.relations import Relations, relations
from .inputs import check_distillation_call, check_euclidean

#: PML's reducers treat "pos_pair" and "neg_pair" alike; RKD's pairs carry no label sign.
PAIR_REDUCTION = "pos_pair"


class RelationalDistillationLoss(BaseMetricLossFunction):
    """Base of the RKD losses: input checks, teacher handling and the distance contract.

    The only distance honoured is PML's ``LpDistance`` with ``p=2`` and ``power=1``; its
    ``normalize_embeddings`` flag (default here: False) L2-normalises student and teacher.

    ``backend`` chooses the kernel of the all-triplets angle term: ``"auto"`` (a
    ``torch.compile``-fused kernel for large batches where it compiles, else plain PyTorch),
    ``"compiled"`` or ``"eager"``; all give the same values.
    """

    def __init__(self, backend: str = "auto", **kwargs):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.backend = backend
        super().__init__(**kwargs)
        check_euclidean(self.distance, type(self).__name__)

    def get_default_distance(self) -> LpDistance:
        return LpDistance(p=2, power=1, normalize_embeddings=False)

    def forward(self, embeddings, labels=None, indices_tuple=None, ref_emb=None, ref_labels=None):
        check_distillation_call(type(self).__name__, embeddings, labels, indices_tuple, ref_emb)
        # Half-precision embeddings (AMP) are upcast: the relational arithmetic and the
        # reduction run in float32 or better; autograd returns the gradient in the input dtype.
        embeddings = embeddings.to(_out_dtype(embeddings))
        return super().forward(embeddings, labels, indices_tuple, ref_emb.detach(), ref_labels)

    def batch_relations(self, embeddings: Tensor, ref_emb: Tensor) -> tuple[Relations, Relations]:
        """Relations of the student ``(N, Ds)`` and, without gradient, of the teacher ``(N, Dt)``."""
        if self.distance.normalize_embeddings:
            embeddings = F.normalize(embeddings.to(_out_dtype(embeddings)), dim=1)
            ref_emb = F.normalize(ref_emb.to(_out_dtype(ref_emb)), dim=1)
        with torch.no_grad():
            teacher = relations(ref_emb.detach())
        return relations(embeddings), teacher

    def reducer_for(self, sub_loss: str):
        if isinstance(self.reducer, MultipleReducers):
            return self.reducer.reducers[sub_loss] if sub_loss in self.reducer.reducers else self.reducer.default_reducer
        return self.reducer

    def distance_term(self, student, teacher, labels, indices_tuple, out_dtype, weight=1.0):
        """RKD-D sub-loss dict: per-pair Huber errors for PML's reducers."""
        n = student.size
        if indices_tuple is None:
            if n < 2:
                return self.zero_loss()
            first, second = all_distinct_pairs(n, student.gram.device)
        else:
            a1, p, a2, neg = convert_to_pairs(indices_tuple, labels)
            first, second = torch.cat([a1, a2]), torch.cat([p, neg])
            if len(first) == 0:
                return self.zero_loss()
        losses = rkd_distance_pair_losses(student, teacher, first, second)
        return {
            "losses": weight * losses.to(out_dtype),
            "indices": (first, second),
            "reduction_type": PAIR_REDUCTION,
        }

    def angle_term(self, student, teacher, labels, indices_tuple, out_dtype, sub_loss, weight=1.0):
        """RKD-A sub-loss dict: the fused all-triplets mean under a plain MeanReducer,
        per-triplet Huber errors otherwise."""
        n = student.size
        if indices_tuple is None:
            if n < 3:
                return self.zero_loss()
            if type(self.reducer_for(sub_loss)) is MeanReducer:
                loss = rkd_angle_all_triplets_mean(student, teacher, backend=self.backend)
                return {"losses": weight * loss.to(out_dtype), "indices": None, "reduction_type": "already_reduced"}
            vertex, end1, end2 = all_distinct_triplets(n, student.gram.device)
        else:
            vertex, end1, end2 = convert_to_triplets(indices_tuple, labels)
            if len(vertex) == 0:
                return self.zero_loss()
        losses = rkd_angle_triplet_losses(student, teacher, vertex, end1, end2)
        return {
            "losses": weight * losses.to(out_dtype),
            "indices": (vertex, end1, end2),
            "reduction_type": "triplet",
        }


def _out_dtype(embeddings: Tensor) -> torch.dtype:
    return torch.promote_types(embeddings.dtype, torch.float32)


class RKDDistanceLoss(RelationalDistillationLoss):
    """RKD-D: Huber error between the normalised pairwise distances of student and teacher.

    Without ``indices_tuple`` all ordered pairs of distinct examples are penalised; pair or
    triplet tuples from a PML miner restrict the penalty to the mined pairs. The distance
    normaliser always comes from all pairs of the batch.
    """

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        student, teacher = self.batch_relations(embeddings, ref_emb)
        return {"loss": self.distance_term(student, teacher, labels, indices_tuple, _out_dtype(embeddings))}


class RKDAngleLoss(RelationalDistillationLoss):
    """RKD-A: Huber error between the angles that triplets form in student and teacher.

    Without ``indices_tuple`` all ordered triplets of distinct examples are penalised;
    triplets ``(a, p, n)`` from a PML miner restrict it to the angle at ``a`` between ``p``
    and ``n`` (pair tuples are converted with PML's ``convert_to_triplets``).
    """

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        student, teacher = self.batch_relations(embeddings, ref_emb)
        term = self.angle_term(student, teacher, labels, indices_tuple, _out_dtype(embeddings), "loss")
        return {"loss": term}


class RKDLoss(RelationalDistillationLoss):
    """RKD-DA: ``distance_weight * RKD-D + angle_weight * RKD-A``.

    Defaults are the paper's metric-learning weights (1 and 2). The two terms are PML
    sub-losses ``distance_loss`` and ``angle_loss``, each reduced by its own copy of the
    reducer and summed.
    """

    def __init__(self, distance_weight: float = 1.0, angle_weight: float = 2.0, **kwargs):
        if distance_weight < 0 or angle_weight < 0:
            raise ValueError(
                f"RKD weights must be non-negative, got distance_weight={distance_weight}, "
                f"angle_weight={angle_weight}"
            )
        self.distance_weight = float(distance_weight)
        self.angle_weight = float(angle_weight)
        super().__init__(**kwargs)
        self.add_to_recordable_attributes(list_of_names=["distance_weight", "angle_weight"], is_stat=False)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        student, teacher = self.batch_relations(embeddings, ref_emb)
        out = _out_dtype(embeddings)
        result = {}
        result["distance_loss"] = (
            self.distance_term(student, teacher, labels, indices_tuple, out, self.distance_weight)
            if self.distance_weight
            else self.zero_loss()
        )
        result["angle_loss"] = (
            self.angle_term(student, teacher, labels, indices_tuple, out, "angle_loss", self.angle_weight)
            if self.angle_weight
            else self.zero_loss()
        )
        return result

    def _sub_loss_names(self):
        return ["distance_loss", "angle_loss"]
