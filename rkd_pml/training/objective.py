"""What a training step minimises, built in one place.

:class:`Objective` is a weighted sum of named terms: an optional PML metric loss (with its
miner) on the trained model's embeddings, and distillation terms that receive the frozen
teacher's embeddings of the same batch as ``ref_emb``. Each term is logged on its own
(``triplet``, ``rkd_distance``, ``rkd_angle``, ``fitnet``, ..., ``compat``: the coordinate term
of a student trained to search its teacher's index, see :func:`build_objective`). :func:`build_objective`
turns a job's config into one, reading distillation losses from the registry in
:mod:`rkd_pml.losses.registry`. A loss with learnable parameters (FitNet's map) is a
sub-module of the objective, so its parameters reach the optimizer and the checkpoints.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .._pml import AvgNonZeroReducer, DistanceWeightedMiner, MeanReducer, TripletMarginLoss
from ..losses import RKDLoss
from ..losses.compatibility import EmbeddingCompatibilityLoss
from ..losses.registry import NO_DISTILLATION, build_distillation_loss


def build_triplet_loss(margin: float = 0.2, reduction: str = "mean") -> TripletMarginLoss:
    """PML's triplet loss on Euclidean distances of L2-normalised embeddings.

    ``reduction="mean"`` averages over every mined triplet (the official RKD code);
    ``"avg_nonzero"`` is PML's default.
    """
    reducer = MeanReducer() if reduction == "mean" else AvgNonZeroReducer()
    return TripletMarginLoss(margin=margin, reducer=reducer)


def build_miner(spec: Any):
    """``"distance_weighted"`` (Wu et al. 2017, the recipe's sampling), ``"none"``/None, or a miner."""
    if spec is None or (isinstance(spec, str) and spec.lower() in ("none", "all")):
        return None
    if isinstance(spec, str):
        if spec.lower().replace("-", "_") == "distance_weighted":
            # cutoff 0.5 and nonzero_loss_cutoff 1.4 as in the official RKD code
            return DistanceWeightedMiner(cutoff=0.5, nonzero_loss_cutoff=1.4)
        raise ValueError(f"unknown miner {spec!r}; use 'distance_weighted', 'none' or a PML miner object")
    return spec


def split_rkd_terms(loss: nn.Module) -> dict[str, nn.Module]:
    """An :class:`RKDLoss` as its two terms (each weighted as in ``loss``), so each is logged;
    their sum is ``loss``. Any other loss is one term, ``distill``."""
    if type(loss) is RKDLoss and loss.distance_weight and loss.angle_weight:
        return {
            "rkd_distance": RKDLoss(distance_weight=loss.distance_weight, angle_weight=0.0, backend=loss.backend),
            "rkd_angle": RKDLoss(distance_weight=0.0, angle_weight=loss.angle_weight, backend=loss.backend),
        }
    if type(loss) is RKDLoss:
        return {"rkd_distance" if loss.distance_weight else "rkd_angle": loss}
    return {"distill": loss}


class Objective(nn.Module):
    """``metric_weight * metric_loss + sum(weight_k * distill_terms[k])`` for one batch, with
    ``weight_k = term_weights.get(k, distill_weight)``.

    Args:
        metric_loss: PML loss on the trained model's embeddings (labels used), or None;
            logged as ``metric_name``.
        miner: PML miner whose tuples feed ``metric_loss``, or None (all tuples).
        distill_terms: name -> loss called as ``loss(emb, labels, None, ref_emb=teacher_emb)``.
        metric_weight, distill_weight: weights of the two groups.
        term_weights: name -> weight of a distillation term weighted on its own (instead of
            ``distill_weight``).
    """

    def __init__(
        self,
        metric_loss: nn.Module | None = None,
        miner: nn.Module | None = None,
        distill_terms: dict[str, nn.Module] | None = None,
        metric_weight: float = 1.0,
        distill_weight: float = 1.0,
        metric_name: str = "triplet",
        term_weights: dict[str, float] | None = None,
    ):
        super().__init__()
        if metric_loss is None and not distill_terms:
            raise ValueError("nothing to train: give a metric loss, a distillation loss, or both")
        self.metric_loss = metric_loss
        self.miner = miner
        self.distill_terms = nn.ModuleDict(distill_terms or {})
        self.metric_weight = float(metric_weight)
        self.distill_weight = float(distill_weight)
        self.metric_name = metric_name
        self.term_weights = {str(k): float(v) for k, v in (term_weights or {}).items()}
        unknown = sorted(set(self.term_weights) - set(self.distill_terms))
        if unknown:
            raise ValueError(f"term_weights name no distillation term: {unknown}")

    @property
    def needs_teacher(self) -> bool:
        return len(self.distill_terms) > 0

    def losses(self) -> dict[str, Any]:
        """The callables of each term (replaced by global-batch wrappers under DDP)."""
        return {"metric": self.metric_loss, "miner": self.miner, **dict(self.distill_terms.items())}

    def forward(
        self, embeddings: Tensor, labels: Tensor, teacher_embeddings: Tensor | None = None, scale: int = 1,
        losses: dict[str, Any] | None = None,
    ) -> tuple[Tensor, dict[str, float]]:
        """Total loss and its named parts (floats, for logging; divided by ``scale``).

        ``embeddings`` ``(N, Ds)``, ``labels`` ``(N,)``, ``teacher_embeddings`` ``(N, Dt)``.
        """
        fns = self.losses() if losses is None else losses
        total = embeddings.new_zeros((), dtype=torch.promote_types(embeddings.dtype, torch.float32))
        parts: dict[str, float] = {}
        if fns["metric"] is not None and self.metric_weight > 0:
            indices_tuple = fns["miner"](embeddings, labels) if fns["miner"] is not None else None
            metric = fns["metric"](embeddings, labels, indices_tuple)
            total = total + self.metric_weight * metric
            parts[self.metric_name] = float(metric.detach()) / scale
        if self.distill_terms:
            if teacher_embeddings is None:
                raise ValueError("this objective distils: pass the teacher's embeddings of the batch")
            for name in self.distill_terms:
                term = fns[name](embeddings, labels, None, ref_emb=teacher_embeddings)
                total = total + self.term_weights.get(name, self.distill_weight) * term
                parts[name] = float(term.detach()) / scale
        parts["loss"] = float(total.detach()) / scale
        return total, parts


def build_objective(cfg: Any, student_dim: int, teacher_dim: int | None = None) -> Objective:
    """The objective of a job's config (the one place where losses and miners are built).

    * :class:`~rkd_pml.training.config.TripletConfig`: triplet loss on mined triplets.
    * :class:`~rkd_pml.training.config.DistillConfig`: the distillation loss ``cfg.loss`` (a
      registered name or a loss object), plus ``cfg.student_metric_loss`` when given, plus, when
      ``cfg.compat_weight > 0``, the term ``compat``: ``compat_weight * mean_i ||s_i - t_i||^2``
      (:class:`~rkd_pml.losses.compatibility.EmbeddingCompatibilityLoss`, weighted by
      ``compat_weight`` alone) on the embeddings as the two models output them, which is what
      cross-model retrieval compares (a teacher-indexed gallery searched with the student's
      queries). It needs the student's width equal to the teacher's: ValueError otherwise,
      before any run directory exists.
    """
    from .config import DistillConfig, TripletConfig

    if isinstance(cfg, TripletConfig):
        return Objective(metric_loss=build_triplet_loss(cfg.margin, cfg.triplet_reduction), miner=build_miner(cfg.miner))
    if not isinstance(cfg, DistillConfig):
        raise TypeError(f"no objective for {type(cfg).__name__}")
    terms, term_weights = None, None
    if cfg.uses_teacher:
        if teacher_dim is None:
            raise ValueError("distillation needs the teacher's embedding width")
        loss = cfg.loss if isinstance(cfg.loss, nn.Module) or not isinstance(cfg.loss, str) else (
            build_distillation_loss(cfg.loss, cfg.loss_options, student_dim, teacher_dim)
        )
        terms = split_rkd_terms(loss)
        compat = float(getattr(cfg, "compat_weight", 0.0) or 0.0)
        if compat > 0:
            check_compatible_widths(compat, student_dim, teacher_dim)
            terms["compat"] = EmbeddingCompatibilityLoss()
            term_weights = {"compat": compat}
    metric, weight = cfg.student_metric_loss, cfg.student_metric_weight
    if not cfg.uses_teacher and metric is None:
        metric, weight = NO_DISTILLATION, 1.0
    if isinstance(metric, str):
        if metric.lower() != "triplet":
            raise ValueError(f"unknown student metric loss {metric!r}; use 'triplet' or a PML loss object")
        metric = build_triplet_loss(cfg.margin, cfg.triplet_reduction)
    miner = build_miner(cfg.student_miner) if metric is not None else None
    name = "triplet" if isinstance(metric, TripletMarginLoss) else "metric"
    return Objective(metric, miner, terms, weight, cfg.distill_weight, metric_name=name, term_weights=term_weights)


def check_compatible_widths(compat_weight: float, student_dim: int, teacher_dim: int) -> None:
    """ValueError, one line naming the setting and both widths, unless the student's embedding is
    as wide as the teacher's (the compatibility term compares coordinates, with no map)."""
    if int(student_dim) != int(teacher_dim):
        raise ValueError(f"compat_weight ({compat_weight}) pulls the student onto the teacher's embeddings: "
                         f"embedding_dim ({student_dim}) must equal the teacher's width ({teacher_dim})")


def trainable_parameters(*modules: nn.Module) -> list[torch.nn.Parameter]:
    """Parameters with ``requires_grad`` of the given modules, each once."""
    seen, out = set(), []
    for m in modules:
        for p in m.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out
