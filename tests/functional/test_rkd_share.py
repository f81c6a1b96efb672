"""RKD-D and RKD-A shared out by rows (:mod:`rkd_pml.functional.rkd_share`) equal the whole.

P threads stand for P processes: each holds the batch in its own row order (its rows first,
as PML gathers them), evaluates its share through ``shared_rkd_means`` and sums the shares
with the others through a barrier (the all-reduce). The reference is the whole batch in one
call of the plain loss (autograd through the relations), a second method.
"""

from __future__ import annotations

import threading

import pytest
import torch

from rkd_pml import RKDLoss
from rkd_pml.functional.angle_share import rank_share
from rkd_pml.functional.relations import centred_batch
from rkd_pml.functional.rkd_share import shared_rkd_means

N = 30


def _batch(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Student ``(N, 6)`` and teacher ``(N, 9)`` with an exact duplicate (rows 2 and 21), a
    duplicate within the tolerance (rows 5 and 27) and a near pair 1e-3 apart (rows 9, 14)."""
    g = torch.Generator().manual_seed(7)
    s = torch.randn(N, 6, generator=g, dtype=torch.float64) * 3 + 1
    t = torch.randn(N, 9, generator=g, dtype=torch.float64)
    s[21], t[21] = s[2], t[2]
    s[27] = s[5] * (1 + 1e-9)
    s[14] = s[9] + 1e-3
    return s.to(dtype), t.to(dtype)


class _Sum:
    """In-place sum of one tensor per thread (an all-reduce among threads), and the rows of
    every thread stacked in rank order (an all-gather)."""

    def __init__(self, p: int):
        self.barrier, self.parts = threading.Barrier(p), {}

    def _exchange(self, rank: int, tensor: torch.Tensor) -> list[torch.Tensor]:
        self.parts[rank] = tensor.clone()
        self.barrier.wait()
        parts = [self.parts[r] for r in sorted(self.parts)]
        self.barrier.wait()
        return parts

    def reduce_for(self, rank: int):
        def reduce(buf: torch.Tensor) -> None:
            buf.copy_(sum(self._exchange(rank, buf)))

        return reduce

    def gather_for(self, rank: int):
        return lambda rows: torch.cat(self._exchange(rank, rows))


def _shared(s, t, p, weights=(1.0, 2.0), gather=True):
    """Loss ``w_d D + w_a A`` and its gradient ``(N, D)`` in global row order, from each thread."""
    n_local = N // p
    summer, results, errors = _Sum(p), {}, []

    def run(rank):
        try:
            share = rank_share(n_local, rank, p, summer.reduce_for(rank), gather=summer.gather_for(rank) if gather else None)
            pos = share.positions  # local row k holds global row pos[k]
            x = s.index_select(0, pos).detach().requires_grad_(True)
            teacher = (*centred_batch(t.index_select(0, pos)), t.dtype)
            y, scale = centred_batch(x)
            d, a = shared_rkd_means(y, scale, x.dtype, teacher, share, backend="eager")
            loss = weights[0] * d + weights[1] * a
            (grad,) = torch.autograd.grad(loss, x)
            results[rank] = (float(loss.detach()), grad.index_select(0, torch.argsort(pos)))
        except Exception as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
            summer.barrier.abort()

    threads = [threading.Thread(target=run, args=(r,)) for r in range(p)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        raise errors[0]
    return results


def _whole(s, t, weights=(1.0, 2.0)):
    x = s.detach().to(torch.float64).requires_grad_(True)
    loss = RKDLoss(distance_weight=weights[0], angle_weight=weights[1], backend="eager")(x, ref_emb=t.to(torch.float64))
    (grad,) = torch.autograd.grad(loss, x)
    return float(loss.detach()), grad


@pytest.mark.parametrize("p", [1, 2, 3])
@pytest.mark.parametrize("weights", [(1.0, 2.0), (1.0, 0.0), (0.0, 1.0)], ids=["DA", "D", "A"])
@pytest.mark.parametrize("gather", [True, False], ids=["own-rows", "all-rows"])
def test_float64_shares_equal_the_whole_batch(p, weights, gather):
    """With a gather each thread forms the relations of its own rows and receives the others';
    without one it forms them all."""
    s, t = _batch(torch.float64)
    ref_loss, ref_grad = _whole(s, t, weights)
    for loss, grad in _shared(s, t, p, weights, gather).values():
        assert loss == pytest.approx(ref_loss, rel=1e-12, abs=0)
        assert float((grad - ref_grad).abs().max()) <= 1e-10 * float(ref_grad.abs().max())


@pytest.mark.parametrize("gather", [True, False], ids=["own-rows", "all-rows"])
def test_float32_shares_are_as_accurate_as_the_whole_float32_loss(gather):
    """float32 embeddings (angle arithmetic in float32): the shared loss and gradient are as
    close to the float64 ones of the same embeddings as the single-process float32 loss is
    (about 4e-7 and 8e-5 relative here: the near pair 1e-3 apart costs float32 digits)."""
    s, t = _batch(torch.float32)
    ref_loss, ref_grad = _whole(s, t)
    x = s.clone().requires_grad_(True)
    whole = RKDLoss(backend="eager")(x, ref_emb=t)
    (whole_grad,) = torch.autograd.grad(whole, x)
    loss_err = abs(float(whole.detach()) - ref_loss) / ref_loss
    grad_err = float((whole_grad.double() - ref_grad).norm() / ref_grad.norm())
    assert 0 < loss_err < 1e-6 and 0 < grad_err < 2e-4
    for loss, grad in _shared(s, t, 2, gather=gather).values():
        assert abs(loss - ref_loss) / ref_loss <= 1.1 * loss_err
        assert float((grad.double() - ref_grad).norm() / ref_grad.norm()) <= 1.1 * grad_err


@pytest.mark.parametrize("p", [2, 3])
def test_collapsed_student_shares_equal_the_whole_batch(p):
    """Every student row the same: no mean distance to differentiate through (the shares skip
    the sum over all pairs that goes with it), the loss is the teacher's alone and the
    gradient is zero, as in the whole batch."""
    s, t = _batch(torch.float64)
    s = s[:1].expand(N, -1).clone()
    ref_loss, ref_grad = _whole(s, t)
    assert ref_loss > 0 and float(ref_grad.abs().max()) == 0.0
    for loss, grad in _shared(s, t, p).values():
        assert loss == pytest.approx(ref_loss, rel=1e-12, abs=0)
        assert float(grad.abs().max()) == 0.0
