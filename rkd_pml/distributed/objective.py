"""A training objective computed on the global batch of a process group."""

from __future__ import annotations

from typing import Any

import torch.distributed as dist
from torch import Tensor

from .._pml import BaseMetricLossFunction, BaseMiner, CrossBatchMemory
from .wrappers import distributed_rkd


def _wrap_for_global_batch(loss: Any, miner: Any, what: str):
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
    """A :class:`~rkd_pml.training.objective.Objective` computed on the global batch.

    Each term (and the miner) is wrapped with :func:`rkd_pml.distributed.distributed_rkd`: the
    embeddings, labels and teacher embeddings of every process are gathered row-aligned, each
    loss is that of the whole global batch (RKD relates every example of it) and is returned
    multiplied by the number of processes ``W``, so that DistributedDataParallel's gradient
    average over the processes equals the gradient of the global-batch loss. The logged parts
    are divided by ``W``: they are the global-batch losses.

    The losses stay sub-modules of ``objective`` (the wrappers only refer to them), so its state
    dict, and the checkpoints, are those of a single process. A loss's own trainable parameters
    (FitNet's map) are not in the DDP model; call :meth:`reduce_gradients` after ``backward()``:
    every process computed ``W`` x their global-batch gradient, and the sum over processes
    divided by ``W**2`` is that gradient, identical on every process.
    """

    def __init__(self, objective: Any, world_size: int | None = None):
        self.objective = objective
        self.world_size = int(world_size if world_size is not None else dist.get_world_size())
        plain = objective.losses()
        self.fns: dict[str, Any] = {"metric": None, "miner": None}
        if plain["metric"] is not None:
            self.fns["metric"], self.fns["miner"] = _wrap_for_global_batch(plain["metric"], plain["miner"], "metric loss")
        for name, loss in objective.distill_terms.items():
            self.fns[name], _ = _wrap_for_global_batch(loss, None, "distillation loss")
        self.trainable = [p for p in objective.parameters() if p.requires_grad]

    @property
    def needs_teacher(self) -> bool:
        return self.objective.needs_teacher

    def train(self, mode: bool = True) -> "DistributedObjective":
        self.objective.train(mode)
        return self

    def __call__(self, embeddings: Tensor, labels: Tensor, teacher_embeddings: Tensor | None = None):
        """``W`` x the global-batch loss (to back-propagate) and the global-batch parts (to log)."""
        return self.objective(embeddings, labels, teacher_embeddings, scale=self.world_size, losses=self.fns)

    def reduce_gradients(self) -> None:
        """Turn the gradients of the objective's own parameters into the global-batch gradient."""
        for p in self.trainable:
            if p.grad is not None:
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                p.grad.div_(self.world_size * self.world_size)
