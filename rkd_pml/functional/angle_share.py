"""The all-triplets angle term shared out among processes that hold the same batch.

Under data parallelism every process has the whole (gathered) batch of ``N`` examples and
would otherwise evaluate all ``N (N-1) (N-2)`` triplets itself. Inside
:func:`sharing_triplets` each process evaluates only the triplets whose *vertex* lies in its
own range of rows; the loss sum and the ``N x N`` gradient accumulators of the shares are
then summed across the processes (one all-reduce of ``1 + 2 N^2`` float64 numbers), so
every process ends with the loss and gradient of the whole batch while doing about ``1/P``
of the ``N^3`` work.

The processes may hold the batch in different row orders (PML's gather puts each process's
own rows first): ``positions`` gives each row's place in one order common to all, and the
accumulators are summed in that order. Nothing here talks to a process group: the caller
passes the in-place sum (``torch.distributed.all_reduce`` for instance).
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import Tensor


@dataclass(frozen=True)
class TripletShare:
    """One process's share of the triplets of a batch of ``N`` rows.

    Attributes:
        start, stop: this process evaluates the triplets whose vertex is at rows
            ``[start, stop)`` of its batch; over the processes these rows, mapped through
            ``positions``, must cover every example exactly once.
        positions: ``(N,)`` int64, the place of each of this process's rows in the order
            common to all processes (a permutation of ``0..N-1``).
        reduce: sums a 1-D float64 tensor in place across the processes (every process
            makes the same calls, in the same order, with tensors of the same sizes).
        gather: optional; returns the rows of a 2-D tensor ``(stop - start, C)`` of every
            process stacked in the common order ``(N, C)`` (every process makes the same
            calls, with tensors of the same shapes and dtypes; it copies bytes, so a float64
            tensor viewed as float32 comes back intact).
    """

    start: int
    stop: int
    positions: Tensor
    reduce: Callable[[Tensor], None]
    gather: Callable[[Tensor], Tensor] | None = None

    @property
    def size(self) -> int:
        return int(self.positions.shape[0])


_SHARE: contextvars.ContextVar[TripletShare | None] = contextvars.ContextVar("rkd_pml_triplet_share", default=None)


@contextlib.contextmanager
def sharing_triplets(share: TripletShare | None) -> Iterator[None]:
    """Within the block, the all-triplets angle term of a batch of ``share.size`` rows
    evaluates only this process's share and sums the results across the processes
    (batches of another size are evaluated whole, without any collective)."""
    token = _SHARE.set(share)
    try:
        yield
    finally:
        _SHARE.reset(token)


def current_share(n: int) -> TripletShare | None:
    """The share in force for a batch of ``n`` rows, or ``None`` (evaluate everything)."""
    share = _SHARE.get()
    return share if share is not None and share.size == n else None


def rank_share(
    n_local: int,
    rank: int,
    world_size: int,
    reduce: Callable[[Tensor], None],
    device=None,
    gather: Callable[[Tensor], Tensor] | None = None,
) -> TripletShare:
    """The share of process ``rank`` for a batch gathered PML's way: its own ``n_local``
    rows first, then those of the other processes in rank order. The common order is rank
    order (process 0's rows, then process 1's, ...); each process takes its own rows as
    vertices. ``gather`` stacks a tensor of every process in rank order."""
    others = [r for r in range(world_size) if r != rank]
    blocks = [rank] + others
    positions = torch.cat([torch.arange(n_local, device=device) + r * n_local for r in blocks])
    return TripletShare(0, n_local, positions, reduce, gather)


def _runs(positions: Tensor) -> list[tuple[int, int, int]]:
    """``(local_start, common_start, length)`` of the runs of consecutive rows that stay
    consecutive in the common order (one per process for PML's gather)."""
    pos = positions.tolist()
    runs, start = [], 0
    for k in range(1, len(pos) + 1):
        if k == len(pos) or pos[k] != pos[k - 1] + 1:
            runs.append((start, pos[start], k - start))
            start = k
    return runs


#: Above this many runs the reordering is done by two gathers instead of run-by-run block copies.
MAX_BLOCK_RUNS = 16


def _reorder(src: Tensor, dst: Tensor, runs: list[tuple[int, int, int]], to_common: bool) -> None:
    """Copy the ``(N, N)`` ``src`` into ``dst`` (any dtype), rows and columns moved from this
    process's order to the common one (``to_common``) or back, one block per pair of runs."""
    for l_row, c_row, n_row in runs:
        for l_col, c_col, n_col in runs:
            local = (slice(l_row, l_row + n_row), slice(l_col, l_col + n_col))
            common = (slice(c_row, c_row + n_row), slice(c_col, c_col + n_col))
            dst[common if to_common else local].copy_(src[local if to_common else common])


def sum_shares(
    share: TripletShare, loss_sum: Tensor, d_h: Tensor | None, d_r: Tensor | None, dtype: torch.dtype = torch.float64
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """The loss sum (0-d) and ``(N, N)`` accumulators summed over the processes' shares, in
    this process's row order (float64; summed across processes in ``dtype``: the compute
    dtype, whose rounding the shares carry already)."""
    n = share.size
    with_grad = d_h is not None
    buf = torch.empty(1 + (2 * n * n if with_grad else 0), dtype=dtype, device=loss_sum.device)
    buf[0] = loss_sum
    if not with_grad:
        share.reduce(buf)
        return buf[0].to(torch.float64), None, None
    pos = share.positions.to(loss_sum.device)
    runs = _runs(share.positions.cpu())
    common = buf[1:].view(2, n, n)
    if len(runs) <= MAX_BLOCK_RUNS:  # block copies: one pass over each matrix each way
        for k, m in enumerate((d_h, d_r)):
            _reorder(m, common[k], runs, to_common=True)
        share.reduce(buf)
        back = torch.empty(2, n, n, dtype=torch.float64, device=loss_sum.device)
        for k in range(2):
            _reorder(common[k], back[k], runs, to_common=False)
        return buf[0].to(torch.float64), back[0], back[1]
    order = torch.argsort(pos)  # row of this process at each common position
    for k, m in enumerate((d_h, d_r)):
        common[k].copy_(m.index_select(0, order).index_select(1, order))
    share.reduce(buf)
    back = [common[k].index_select(0, pos).index_select(1, pos).to(torch.float64) for k in range(2)]
    return buf[0].to(torch.float64), back[0], back[1]
