"""sum_shares: the N x N accumulators are summed in the order common to all processes and
returned in this process's order (checked against the permutation written out entry by entry)."""

import pytest
import torch

from rkd_pml.functional.angle_share import TripletShare, rank_share, sum_shares


def _common(m: torch.Tensor, positions: list[int]) -> torch.Tensor:
    """``m`` in this process's order, moved entry by entry to the common order."""
    n = len(positions)
    out = torch.empty(n, n, dtype=m.dtype)
    for i in range(n):
        for j in range(n):
            out[positions[i], positions[j]] = m[i, j]
    return out


@pytest.mark.parametrize(
    "share_of",
    [
        lambda reduce: rank_share(5, 2, 4, reduce),  # PML's gather: own rows first (block copies)
        lambda reduce: TripletShare(0, 5, torch.randperm(20, generator=torch.Generator().manual_seed(3)), reduce),
    ],
    ids=["pml-order", "any-permutation"],
)
def test_accumulators_are_summed_in_the_common_order(share_of):
    gen = torch.Generator().manual_seed(0)
    d_h, d_r = (torch.randn(20, 20, generator=gen, dtype=torch.float64) for _ in range(2))
    others = torch.randn(1 + 2 * 400, generator=gen, dtype=torch.float64)  # the other processes' sum
    seen = []

    def reduce(buf):
        seen.append(buf.clone())
        buf.add_(others)

    share = share_of(reduce)
    positions = share.positions.tolist()
    loss, got_h, got_r = sum_shares(share, torch.tensor(1.5, dtype=torch.float64), d_h, d_r)
    (sent,) = seen
    assert sent[0] == 1.5
    assert torch.equal(sent[1:].view(2, 20, 20)[0], _common(d_h, positions))
    assert torch.equal(sent[1:].view(2, 20, 20)[1], _common(d_r, positions))
    total = sent[1:].view(2, 20, 20) + others[1:].view(2, 20, 20)
    for k, got in enumerate((got_h, got_r)):
        back = torch.stack([torch.stack([total[k, positions[i], positions[j]] for j in range(20)]) for i in range(20)])
        assert got.dtype == torch.float64 and torch.equal(got, back)
    assert float(loss) == 1.5 + float(others[0])


def test_without_gradient_only_the_loss_is_summed():
    share = rank_share(3, 0, 2, lambda buf: buf.mul_(2.0))
    loss, d_h, d_r = sum_shares(share, torch.tensor(0.25, dtype=torch.float64), None, None)
    assert float(loss) == 0.5 and d_h is None and d_r is None
