"""What a training step minimises, built in one place.

:class:`Objective` combines an optional PML metric loss (with its miner) on the trained
model's embeddings and an optional distillation loss that receives the frozen teacher's
embeddings of the same batch as ``ref_emb``. :func:`build_objective` turns a config into one.

Distillation losses are chosen by name ("rkd", "rkd-d", "rkd-a", "triplet", or any name
given to :func:`register_distillation_loss`) or passed as objects. A loss with learnable
parameters (FitNet's regressor, for example) is a sub-module of the objective, so its
parameters reach the optimizer and the checkpoints.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable

import torch
from torch import Tensor, nn

from .._pml import (
    AvgNonZeroReducer,
    BaseMetricLossFunction,
    BaseMiner,
    CrossBatchMemory,
    DistanceWeightedMiner,
    MeanReducer,
    TripletMarginLoss,
)
from ..losses import RKDLoss

#: factory(config, student_dim, teacher_dim) -> loss
LossFactory = Callable[[Any, int, int], nn.Module]

_REGISTRY: dict[str, LossFactory] = {}

#: distillation losses of this package found by name when first asked for:
#: name -> (module, class name)
_PACKAGE_LOSSES = {
    "fitnet": ("rkd_pml.losses", "FitNetEmbeddingLoss"),
    "darkrank": ("rkd_pml.losses", "DarkRankLoss"),
}

#: constructor arguments filled in from the model widths
_STUDENT_DIM_ARGS = ("student_dim", "in_features", "student_features")
_TEACHER_DIM_ARGS = ("teacher_dim", "out_features", "teacher_features")


def register_distillation_loss(name: str, factory: LossFactory) -> None:
    """Make ``name`` usable as ``DistillConfig(loss=name)`` and ``--loss name``.

    ``factory(config, student_dim, teacher_dim)`` returns a loss called as
    ``loss(student_emb, labels, indices_tuple, ref_emb=teacher_emb)``.
    """
    _REGISTRY[name.lower()] = factory


register_distillation_loss(
    "rkd", lambda cfg, s, t: RKDLoss(distance_weight=cfg.distance_weight, angle_weight=cfg.angle_weight)
)
register_distillation_loss("rkd-d", lambda cfg, s, t: RKDLoss(distance_weight=cfg.distance_weight, angle_weight=0.0))
register_distillation_loss("rkd-a", lambda cfg, s, t: RKDLoss(distance_weight=0.0, angle_weight=cfg.angle_weight))


def distillation_loss_names() -> list[str]:
    return sorted({*_REGISTRY, *_PACKAGE_LOSSES, "triplet"})


def _from_package(name: str, student_dim: int, teacher_dim: int) -> nn.Module | None:
    spec = _PACKAGE_LOSSES.get(name)
    if spec is None:
        return None
    try:
        cls = getattr(importlib.import_module(spec[0]), spec[1])
    except (ImportError, AttributeError):
        return None
    kwargs = {}
    for param in inspect.signature(cls).parameters:
        if param in _STUDENT_DIM_ARGS:
            kwargs[param] = student_dim
        elif param in _TEACHER_DIM_ARGS:
            kwargs[param] = teacher_dim
    return cls(**kwargs)


def build_distillation_loss(spec: Any, cfg: Any, student_dim: int, teacher_dim: int) -> nn.Module | None:
    """The distillation loss for ``spec``: a name, a loss object, or None/"triplet" for none."""
    if spec is None:
        return None
    if isinstance(spec, nn.Module) or (callable(spec) and not isinstance(spec, (str, type))):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"loss must be a name or a loss object, got {type(spec).__name__}")
    name = spec.lower()
    if name in ("triplet", "none"):
        return None
    if name in _REGISTRY:
        return _REGISTRY[name](cfg, student_dim, teacher_dim)
    loss = _from_package(name, student_dim, teacher_dim)
    if loss is not None:
        return loss
    raise ValueError(f"unknown distillation loss {spec!r}; choose one of {', '.join(distillation_loss_names())}")


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


class Objective(nn.Module):
    """``metric_weight * metric_loss + distill_weight * distill_loss`` for one batch.

    Args:
        metric_loss: PML loss on the trained model's embeddings (labels used), or None.
        miner: PML miner whose tuples feed ``metric_loss``, or None (all tuples).
        distill_loss: loss called as ``loss(emb, labels, None, ref_emb=teacher_emb)``, or None.
        metric_weight, distill_weight: weights of the two terms.
    """

    def __init__(
        self,
        metric_loss: nn.Module | None = None,
        miner: nn.Module | None = None,
        distill_loss: nn.Module | None = None,
        metric_weight: float = 1.0,
        distill_weight: float = 1.0,
    ):
        super().__init__()
        if metric_loss is None and distill_loss is None:
            raise ValueError("nothing to train: give a metric loss, a distillation loss, or both")
        self.metric_loss = metric_loss
        self.miner = miner
        self.distill_loss = distill_loss
        self.metric_weight = float(metric_weight)
        self.distill_weight = float(distill_weight)

    @property
    def needs_teacher(self) -> bool:
        return self.distill_loss is not None

    def forward(
        self, embeddings: Tensor, labels: Tensor, teacher_embeddings: Tensor | None = None
    ) -> tuple[Tensor, dict[str, float]]:
        """Total loss and its named parts (floats, for logging)."""
        return self._combine(embeddings, labels, teacher_embeddings, self.metric_loss, self.miner, self.distill_loss)

    def _combine(self, embeddings, labels, teacher_embeddings, metric_loss, miner, distill_loss, scale: int = 1):
        """The weighted sum of the given losses; the logged parts are divided by ``scale``."""
        total = embeddings.new_zeros(())
        parts: dict[str, float] = {}
        if metric_loss is not None and self.metric_weight > 0:
            indices_tuple = miner(embeddings, labels) if miner is not None else None
            metric = metric_loss(embeddings, labels, indices_tuple)
            total = total + self.metric_weight * metric
            parts["metric"] = float(metric.detach()) / scale
        if distill_loss is not None:
            if teacher_embeddings is None:
                raise ValueError("this objective distils: pass the teacher's embeddings of the batch")
            distill = distill_loss(embeddings, labels, None, ref_emb=teacher_embeddings)
            total = total + self.distill_weight * distill
            parts["distill"] = float(distill.detach()) / scale
        parts["loss"] = float(total.detach()) / scale
        return total, parts


def _wrap_for_global_batch(loss: Any, miner: Any, what: str):
    from ..distributed import distributed_rkd

    if not isinstance(loss, (BaseMetricLossFunction, CrossBatchMemory)):
        raise ValueError(
            f"with several processes the {what} must be a pytorch-metric-learning loss "
            f"(BaseMetricLossFunction), which can be computed on the gathered global batch; "
            f"got {type(loss).__name__}"
        )
    if miner is not None and not isinstance(miner, BaseMiner):
        raise ValueError(
            f"with several processes the miner must be a pytorch-metric-learning miner (BaseMiner); "
            f"got {type(miner).__name__}"
        )
    return distributed_rkd(loss, miner)


class DistributedObjective:
    """An :class:`Objective` computed on the global batch of a process group.

    Each loss (and its miner) is wrapped with :func:`rkd_pml.distributed.distributed_rkd`:
    the embeddings, labels and teacher embeddings of every process are gathered row-aligned,
    the loss is that of the whole global batch (RKD relates every example of it) and is
    returned multiplied by the number of processes ``W``, so that DistributedDataParallel's
    gradient average over the processes equals the gradient of the global-batch loss. The
    logged parts are divided by ``W``: they are the global-batch losses.

    The losses stay sub-modules of ``objective`` (the wrappers only refer to them), so its
    state dict, and the checkpoints, are those of a single process. A loss's own trainable
    parameters (FitNet's regressor) are not in the DDP model; call :meth:`reduce_gradients`
    after ``backward()``: every process computed ``W`` x their global-batch gradient, and the
    sum over processes divided by ``W**2`` is that gradient, identical on every process.
    """

    def __init__(self, objective: Objective, world_size: int | None = None):
        import torch.distributed as dist

        self.objective = objective
        self.world_size = int(world_size if world_size is not None else dist.get_world_size())
        self.metric_fn = self.miner_fn = self.distill_fn = None
        if objective.metric_loss is not None:
            self.metric_fn, self.miner_fn = _wrap_for_global_batch(objective.metric_loss, objective.miner, "metric loss")
        if objective.distill_loss is not None:
            self.distill_fn, _ = _wrap_for_global_batch(objective.distill_loss, None, "distillation loss")
        self.trainable = [p for p in objective.parameters() if p.requires_grad]

    @property
    def needs_teacher(self) -> bool:
        return self.objective.needs_teacher

    def train(self, mode: bool = True) -> "DistributedObjective":
        self.objective.train(mode)
        return self

    def __call__(
        self, embeddings: Tensor, labels: Tensor, teacher_embeddings: Tensor | None = None
    ) -> tuple[Tensor, dict[str, float]]:
        """``W`` x the global-batch loss (to back-propagate) and the global-batch parts (to log)."""
        return self.objective._combine(
            embeddings, labels, teacher_embeddings, self.metric_fn, self.miner_fn, self.distill_fn, self.world_size
        )

    def reduce_gradients(self) -> None:
        """Turn the gradients of the objective's own parameters into the global-batch gradient."""
        import torch.distributed as dist

        grads = [p.grad for p in self.trainable if p.grad is not None]
        if not grads:
            return
        for g in grads:
            dist.all_reduce(g, op=dist.ReduceOp.SUM)
            g.div_(self.world_size * self.world_size)


def build_objective(cfg: Any, student_dim: int, teacher_dim: int | None = None) -> Objective:
    """The objective of a job's config (the one place where losses and miners are built).

    * :class:`~rkd_pml.training.config.TripletConfig`: triplet loss on mined triplets.
    * :class:`~rkd_pml.training.config.DistillConfig`: the distillation loss ``cfg.loss``,
      plus ``cfg.student_metric_loss`` (triplet or any PML loss) when given.
    """
    from .config import DistillConfig, TripletConfig

    if isinstance(cfg, TripletConfig):
        return Objective(
            metric_loss=build_triplet_loss(cfg.margin, cfg.triplet_reduction), miner=build_miner(cfg.miner)
        )
    if not isinstance(cfg, DistillConfig):
        raise TypeError(f"no objective for {type(cfg).__name__}")
    is_triplet_only = isinstance(cfg.loss, str) and cfg.loss.lower() in ("triplet", "none")
    distill = None
    if not is_triplet_only:
        if teacher_dim is None:
            raise ValueError("distillation needs the teacher's embedding width")
        distill = build_distillation_loss(cfg.loss, cfg, student_dim, teacher_dim)
    metric, metric_weight = cfg.student_metric_loss, cfg.student_metric_weight
    if is_triplet_only and metric is None:
        metric, metric_weight = "triplet", 1.0
    if isinstance(metric, str):
        if metric.lower() != "triplet":
            raise ValueError(f"unknown student metric loss {metric!r}; use 'triplet' or a PML loss object")
        metric = build_triplet_loss(cfg.margin, cfg.triplet_reduction)
    miner = build_miner(cfg.student_miner) if metric is not None else None
    return Objective(
        metric_loss=metric,
        miner=miner,
        distill_loss=distill,
        metric_weight=metric_weight,
        distill_weight=cfg.distill_weight,
    )


def trainable_parameters(*modules: nn.Module) -> list[torch.nn.Parameter]:
    """Parameters with ``requires_grad`` of the given modules, each once."""
    seen, out = set(), []
    for m in modules:
        for p in m.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out
