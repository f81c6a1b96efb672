"""RKD over the global batch under DistributedDataParallel, with PML's wrappers.

``DistributedLossWrapper(loss, efficient=False)`` from ``pytorch_metric_learning.utils.
distributed`` already does what RKD needs: it gathers the student embeddings and the teacher
(``ref_emb``) of every rank in the same row order (this rank's rows first, with gradient, then
the other ranks' rows, without), computes the loss on the global batch and multiplies it by the
world size, so that DDP's gradient average is the single-process gradient of the global batch.
``DistributedMinerWrapper(miner, efficient=False)`` mines the same gathered batch, and its
indices refer to it (a plain miner would mine the local rows only).

:func:`distributed_rkd` builds that pair and adds only what PML leaves unchecked:

* ``efficient=True`` is refused. The loss wrapper then passes the local student batch with the
  global teacher batch (no row alignment, so RKD cannot relate them); the miner wrapper then
  mines only tuples anchored at the local rows, which silently gives each rank a different loss
  that is not the global one.
* Every rank must bring the same number of rows (PML gathers with equal-size buffers; with
  unequal sizes gloo aborts the process). The wrappers returned here compare the sizes first and
  raise the same ``ValueError`` on every rank.
* RKD over all pairs and triplets is not repeated on every process: each one forms the
  relations of its own rows of the global batch without autograd and gathers the half
  squared distances of the others' rows, evaluates the RKD-D pairs and the RKD-A triplets
  whose first index (the vertex) is one of its own rows, and turns their derivative into a
  gradient w.r.t. the ``N x D`` embeddings; the loss shares and those gradients are summed
  by one all-reduce (``2 + 2 N D`` float64 numbers at most), all in the forward pass
  (:mod:`rkd_pml.functional.rkd_share`). Every process gets the global loss and gradient for
  ``1 / W`` of the ``N^3`` angle work. Mined tuples (an ``indices_tuple``), reducers other than
  ``MeanReducer`` and second derivatives take the unshared path (the angle term then still
  shares its triplets, with an all-reduce of ``1 + 2 N^2`` numbers).
* The miner wrapper, like the loss wrapper, falls back to the plain miner (with a warning) when
  no process group is initialised, instead of failing in ``get_world_size()``.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from .._pml import BaseMiner, DistributedLossWrapper, DistributedMinerWrapper, is_distributed
from ..functional.angle_share import rank_share, sharing_triplets

__all__ = [
    "RKDDistributedLossWrapper",
    "RKDDistributedMinerWrapper",
    "check_equal_batch_sizes",
    "distributed_rkd",
]

EFFICIENT_REFUSAL = (
    "RKD needs efficient=False: with efficient=True, PML's DistributedLossWrapper passes the "
    "local student embeddings together with the teacher embeddings of the whole global batch "
    "(they are no longer row-aligned), and DistributedMinerWrapper mines only tuples anchored "
    "at the local rows, which gives every rank a different loss instead of the global one. "
    "efficient=False relates every example of the global batch and gives the single-process "
    "gradient."
)


def check_equal_batch_sizes(embeddings: Tensor, ref_emb: Tensor | None = None) -> None:
    """Raise the same ``ValueError`` on every rank unless all ranks bring as many rows.

    PML gathers with buffers of the local shape, so ``embeddings`` (and ``ref_emb``, where
    given) must have the same number of rows on every rank. Costs one all-gather of two
    integers; a no-op without an initialised process group or with a single process.
    """
    if not is_distributed() or torch.distributed.get_world_size() <= 1:
        return
    world_size = torch.distributed.get_world_size()
    n_ref = -1 if ref_emb is None else ref_emb.shape[0]
    local = torch.tensor([embeddings.shape[0], n_ref], dtype=torch.long, device=embeddings.device)
    table = [torch.empty_like(local) for _ in range(world_size)]
    torch.distributed.all_gather(table, local)
    sizes = torch.stack(table).tolist()
    for column, what in ((0, "embeddings"), (1, "ref_emb")):
        rows = [s[column] for s in sizes]
        if len(set(rows)) != 1:
            shown = ["none" if r < 0 else r for r in rows]
            raise ValueError(
                f"every rank must pass the same number of {what} rows to the distributed RKD "
                f"loss and miner (PML gathers equal-size blocks); got {shown} on ranks "
                f"0..{world_size - 1}. Use equal per-rank batches (e.g. drop_last=True in the "
                "DataLoader)."
            )


class RKDDistributedLossWrapper(DistributedLossWrapper):
    """PML's ``DistributedLossWrapper`` with ``efficient=False``, a batch-size check and RKD
    shared out: every process evaluates the pairs and triplets whose first index is one of its
    own rows, and the loss and gradient shares are summed across the processes
    (:mod:`rkd_pml.functional.rkd_share`, :mod:`rkd_pml.functional.angle_share`). Loss and
    gradients are those of the whole global batch; each process does ``1 / W`` of the angle
    work."""

    def __init__(self, loss):
        super().__init__(loss, efficient=False)

    def forward(
        self,
        embeddings,
        labels=None,
        indices_tuple=None,
        ref_emb=None,
        ref_labels=None,
        enqueue_mask=None,
    ):
        check_equal_batch_sizes(embeddings, ref_emb)
        return super().forward(embeddings, labels, indices_tuple, ref_emb, ref_labels, enqueue_mask)

    def forward_regular_loss(self, emb, labels, indices_tuple, ref_emb, ref_labels, world_size):
        if world_size <= 1:
            return super().forward_regular_loss(emb, labels, indices_tuple, ref_emb, ref_labels, world_size)
        # PML gathers this process's rows first, then the others' in rank order.
        share = rank_share(
            emb.shape[0], torch.distributed.get_rank(), world_size, _all_reduce_sum, emb.device, _all_gather_rows
        )
        with sharing_triplets(share):
            return super().forward_regular_loss(emb, labels, indices_tuple, ref_emb, ref_labels, world_size)


def _all_reduce_sum(buf: Tensor) -> None:
    torch.distributed.all_reduce(buf, op=torch.distributed.ReduceOp.SUM)


def _all_gather_rows(rows: Tensor) -> Tensor:
    """``(W * R, C)``: the ``(R, C)`` tensors of every process, in rank order."""
    out = torch.empty((torch.distributed.get_world_size() * rows.shape[0], *rows.shape[1:]), dtype=rows.dtype,
                      device=rows.device)  # fmt: skip
    torch.distributed.all_gather(list(out.chunk(torch.distributed.get_world_size())), rows.contiguous())
    return out


class RKDDistributedMinerWrapper(DistributedMinerWrapper):
    """PML's ``DistributedMinerWrapper`` with ``efficient=False``, a batch-size check and a
    single-process fallback. Its indices refer to the gathered batch, which is what
    :class:`RKDDistributedLossWrapper` passes to the loss."""

    def __init__(self, miner):
        super().__init__(miner, efficient=False)

    def forward(self, emb, labels, ref_emb=None, ref_labels=None):
        if not is_distributed():
            warnings.warn(
                "DistributedMinerWrapper is being used in a non-distributed setting. "
                "Returning the miner's output as is."
            )
            return self.miner(emb, labels, ref_emb, ref_labels)
        check_equal_batch_sizes(emb, ref_emb)
        return super().forward(emb, labels, ref_emb, ref_labels)


def distributed_rkd(loss, miner=None, *, efficient: bool = False):
    """Wrap an RKD loss (and optionally a PML miner) to relate the global batch under DDP.

    Returns ``(loss_fn, miner_fn)``; ``miner_fn`` is None without a miner. Use them as::

        idx = miner_fn(student_emb, labels) if miner_fn else None
        loss = loss_fn(student_emb, labels, idx, ref_emb=teacher_emb)

    The returned loss is the global-batch loss times the world size (what makes DDP's gradient
    average exact); divide by ``torch.distributed.get_world_size()`` to log it.

    ``loss`` and ``miner`` may also be PML wrappers built with ``efficient=False``; anything
    built with ``efficient=True`` is refused with a ``ValueError``.
    """
    if efficient:
        raise ValueError(EFFICIENT_REFUSAL)
    if isinstance(loss, DistributedLossWrapper):
        if loss.efficient:
            raise ValueError(
                f"the given DistributedLossWrapper has efficient=True. {EFFICIENT_REFUSAL}"
            )
        loss = loss.loss
    if isinstance(miner, DistributedMinerWrapper):
        if miner.efficient:
            raise ValueError(
                f"the given DistributedMinerWrapper has efficient=True. {EFFICIENT_REFUSAL}"
            )
        miner = miner.miner
    if miner is not None and not isinstance(miner, BaseMiner):
        raise TypeError(f"miner must be a PML miner (BaseMiner), got {type(miner).__name__}")
    loss_fn = RKDDistributedLossWrapper(loss)
    miner_fn = RKDDistributedMinerWrapper(miner) if miner is not None else None
    return loss_fn, miner_fn
