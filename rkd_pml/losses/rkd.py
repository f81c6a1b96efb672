"""Relational Knowledge Distillation (Park et al., CVPR 2019) as PML losses.

The student's embeddings are ``embeddings``; the teacher's embeddings of the same batch,
row-aligned, are ``ref_emb``. Relations are computed within each model, so the two widths
may differ. Nothing is L2-normalised unless ``distance=LpDistance(normalize_embeddings=True)``.

Duplicates. Two rows of one model closer than
:data:`~rkd_pml.functional.relations.DUPLICATE_TOLERANCE` of their norms (after centring)
are a duplicate pair: their distance is exactly 0, every angle that has the pair as an arm
has cosine 0, and no gradient flows through the pair: the direction between two equal
points does not exist, and differentiating it anyway is what gives the official code
gradients of order ``1 / eps``. The losses average over pairs and triplets of distinct
*indices*, duplicates included. :class:`RKDDistanceLoss` and :class:`RKDAngleLoss` say how
this relates to the official code's means over all ``N^2`` and ``N^3`` entries
(:mod:`rkd_pml.functional.official`).
"""

from __future__ import annotations

from dataclasses import dataclass
import torch
from torch import Tensor

from .._pml import MeanReducer, MultipleReducers, convert_to_pairs, convert_to_triplets
from ..functional.angle import (
    all_distinct_triplets,
    rkd_angle_all_triplets_mean,
    rkd_angle_triplet_losses,
)
from ..functional.angle_backend import BACKENDS
from ..functional.angle_share import current_share
from ..functional.distance import all_distinct_pairs, rkd_distance_pair_losses
from ..functional.relations import Relations, centred_batch, relations
from ..functional.rkd_share import shared_rkd_means
from ..settings import MAX_WEIGHT, setting
from .base import DistillationLoss, result_dtype
from .inputs import check_choice, check_real
from .registry import register_distillation_loss

#: PML's reducers treat "pos_pair" and "neg_pair" alike; RKD's pairs carry no label sign.
PAIR_REDUCTION = "pos_pair"


class RelationalDistillationLoss(DistillationLoss):
    """Base of the RKD losses: relations of both models and the RKD-D / RKD-A terms.

    Input checks, teacher detach and the dtype rule are :class:`DistillationLoss`'s. The
    only distance honoured is PML's ``LpDistance`` with ``p=2`` and ``power=1``; its
    ``normalize_embeddings`` flag (default here: False) L2-normalises student and teacher.
    Every RKD term is scale invariant, and computed so that it is finite and unchanged at
    any finite norm of either model (see :mod:`rkd_pml.functional.relations`).

    ``backend`` chooses the kernel of the all-triplets angle term: ``"auto"`` (the Triton
    kernel on CUDA for float32, else a ``torch.compile``-fused kernel for large batches where
    it compiles, else plain PyTorch), ``"triton"``, ``"compiled"`` or ``"eager"``; all give
    the same values, and exact first and second derivatives (``create_graph=True``).
    """

    def __init__(self, backend: str = "auto", **kwargs):
        self.backend = check_choice("backend", backend, BACKENDS)
        super().__init__(**kwargs)

    def batch_relations(self, embeddings: Tensor, ref_emb: Tensor) -> tuple[Relations, Relations]:
        """Relations of the student ``(N, Ds)`` and, without gradient, of the teacher ``(N, Dt)``."""
        normalize = self.distance.normalize_embeddings
        with torch.no_grad():
            teacher = relations(ref_emb.detach(), normalize=normalize)
        return relations(embeddings, normalize=normalize), teacher

    def shared_terms(self, embeddings: Tensor, ref_emb: Tensor, indices_tuple, terms: dict) -> dict | None:
        """The sub-loss dict computed on this process's share of the batch, or ``None``.

        ``terms`` maps each sub-loss name to ``("distance" | "angle", weight)``. Under
        :func:`~rkd_pml.functional.angle_share.sharing_triplets` (set up by
        ``distributed_rkd``), with all pairs and triplets (no ``indices_tuple``) and a plain
        ``MeanReducer`` for every weighted term, each process evaluates the pairs and triplets
        whose first index is one of its own rows and the shares are summed
        (:mod:`rkd_pml.functional.rkd_share`); the values and gradients are those of the whole
        batch. Anything else is computed whole (``None`` here).
        """
        n = embeddings.shape[0]
        share = current_share(n)
        active = {name: kind for name, (kind, weight) in terms.items() if weight}
        if share is None or indices_tuple is not None or n < 3 or not active:
            return None
        if any(type(self.reducer_for(name)) is not MeanReducer for name in active):
            return None
        normalize = self.distance.normalize_embeddings
        with torch.no_grad():
            teacher = (*centred_batch(ref_emb.detach(), normalize=normalize), ref_emb.dtype)
        y, scale = centred_batch(embeddings, normalize=normalize)
        kinds = set(active.values())
        means = shared_rkd_means(
            y, scale, embeddings.dtype, teacher, share,
            distance="distance" in kinds, angle="angle" in kinds, backend=self.backend,
        )  # fmt: skip
        out = result_dtype(embeddings)
        result = {}
        for name, (kind, weight) in terms.items():
            if not weight:
                result[name] = self.zero_loss()
                continue
            value = means[0] if kind == "distance" else means[1]
            result[name] = {"losses": weight * value.to(out), "indices": None, "reduction_type": "already_reduced"}
        return result

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


class RKDDistanceLoss(RelationalDistillationLoss):
    """RKD-D: Huber error between the normalised pairwise distances of student and teacher.

    Without ``indices_tuple`` all ordered pairs of distinct examples are penalised; pair or
    triplet tuples from a PML miner restrict the penalty to the mined pairs. The distance
    normaliser always comes from all pairs of the batch.

    Relation to the official code (mean over all ``N^2`` entries, diagonal included):
    ``official = (N-1)/N * ours`` exactly when no two rows coincide. An exact duplicate pair
    has distance 0 here; in the official code the clamp at ``1e-12`` before the square root
    (or the rounding of the Gram form, for large norms) gives it a distance of ``1e-6`` or
    more, so with duplicates the identity holds up to terms of order ``1e-6 / mu``, ``mu``
    the mean distance.
    """

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        shared = self.shared_terms(embeddings, ref_emb, indices_tuple, {"loss": ("distance", 1.0)})
        if shared is not None:
            return shared
        student, teacher = self.batch_relations(embeddings, ref_emb)
        return {"loss": self.distance_term(student, teacher, labels, indices_tuple, result_dtype(embeddings))}


class RKDAngleLoss(RelationalDistillationLoss):
    """RKD-A: Huber error between the angles that triplets form in student and teacher.

    Without ``indices_tuple`` all ordered triplets of distinct examples are penalised;
    triplets ``(a, p, n)`` from a PML miner restrict it to the angle at ``a`` between ``p``
    and ``n`` (pair tuples are converted with PML's ``convert_to_triplets``).

    Relation to the official code (mean over all ``N^3`` index triplets ``(a, b, c)``, with
    ``F.normalize`` turning a zero difference into a zero vector):

    * no two rows coincide: ``official = (N-1)(N-2)/N^2 * ours`` exactly. The official
      degenerate entries all have zero error: ``b = a`` or ``c = a`` gives cosine 0 in both
      models, and ``b = c`` gives cosine 1 (a unit vector with itself) in both.
    * exact duplicate rows: ``official = (N-1)(N-2)/N^2 * ours + K / (2 N^3)``, with ``K``
      the number of ordered pairs ``(a, b)``, ``a != b``, that are duplicates in one model
      and not in the other. For such a pair the official entry ``(a, b, b)`` has cosine 0
      in the model where ``b`` duplicates ``a`` and 1 in the other: a Huber error of exactly
      1/2, constant, without gradient. Those entries are not triplets of distinct examples
      (the paper's potential is defined on those only) and this loss leaves them out, so
      the values differ by that constant, which counts duplicates but teaches nothing. On the
      distinct triplets both give an arm of length 0 the cosine 0. The gradients agree
      (times the factor) when only the teacher has duplicates; with duplicates in the
      student the official gradient contains ``F.normalize``'s ``1 / eps`` (``eps = 1e-12``)
      at each zero difference (student gradients of order ``1e12 / N^2``), where this loss
      has no gradient through the pair.
    * near-duplicates (closer than the tolerance, not equal) are duplicates here, while the
      official code still normalises their difference; the identities then hold only
      approximately.
    """

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        shared = self.shared_terms(embeddings, ref_emb, indices_tuple, {"loss": ("angle", 1.0)})
        if shared is not None:
            return shared
        student, teacher = self.batch_relations(embeddings, ref_emb)
        term = self.angle_term(student, teacher, labels, indices_tuple, result_dtype(embeddings), "loss")
        return {"loss": term}


class RKDLoss(RelationalDistillationLoss):
    """RKD-DA: ``distance_weight * RKD-D + angle_weight * RKD-A``.

    Defaults are the paper's metric-learning weights (1 and 2). The two terms are PML
    sub-losses ``distance_loss`` and ``angle_loss``, each reduced by its own copy of the
    reducer and summed.

    Args:
        distance_weight: weight of RKD-D, a finite, non-negative real number (0 skips it).
        angle_weight: weight of RKD-A, a finite, non-negative real number (0 skips it).
        backend: ``"auto"``, ``"triton"``, ``"compiled"`` or ``"eager"`` (see
            :class:`RelationalDistillationLoss`).
        **kwargs: PML's ``reducer``, ``distance``, ``embedding_regularizer``, ...
    """

    def __init__(self, distance_weight: float = 1.0, angle_weight: float = 2.0, **kwargs):
        self.distance_weight = check_real("distance_weight", distance_weight)
        self.angle_weight = check_real("angle_weight", angle_weight)
        super().__init__(**kwargs)
        self.add_to_recordable_attributes(list_of_names=["distance_weight", "angle_weight"], is_stat=False)

    def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
        terms = {"distance_loss": ("distance", self.distance_weight), "angle_loss": ("angle", self.angle_weight)}
        shared = self.shared_terms(embeddings, ref_emb, indices_tuple, terms)
        if shared is not None:
            return shared
        student, teacher = self.batch_relations(embeddings, ref_emb)
        out = result_dtype(embeddings)
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


@dataclass
class RKDDistanceOptions:
    """Options of ``--loss rkd-d``."""

    distance_weight: float = setting(1.0, "weight of RKD-D", metavar="W", low=0.0, high=MAX_WEIGHT)


@dataclass
class RKDAngleOptions:
    """Options of ``--loss rkd-a``."""

    angle_weight: float = setting(2.0, "weight of RKD-A", metavar="W", low=0.0, high=MAX_WEIGHT)


@dataclass
class RKDOptions(RKDDistanceOptions, RKDAngleOptions):
    """Options of ``--loss rkd`` (RKD-DA): both weights."""


register_distillation_loss(
    "rkd", lambda o, s, t: RKDLoss(distance_weight=o.distance_weight, angle_weight=o.angle_weight),
    "RKD-DA: distance_weight x RKD-D + angle_weight x RKD-A", RKDOptions,
)
register_distillation_loss("rkd-d", lambda o, s, t: RKDLoss(distance_weight=o.distance_weight, angle_weight=0.0),
                           "RKD-D alone", RKDDistanceOptions)
register_distillation_loss("rkd-a", lambda o, s, t: RKDLoss(distance_weight=0.0, angle_weight=o.angle_weight),
                           "RKD-A alone", RKDAngleOptions)
