"""Shares of the all-triplets angle term (triplets grouped by vertex) add up to the whole."""

import pytest
import torch

from rkd_pml.functional import fused
from rkd_pml.functional.angle_share import rank_share
from rkd_pml.functional.angle_tiles import angle_sums
from rkd_pml.functional.relations import relations

#: Two CPU tiles of end points (64), with padding.
N = 70


def _compiled_available() -> bool:
    try:
        fused.compiled_kernel(torch.device("cpu"), torch.float64, fused.tile_size("cpu"), True)
    except fused.CompiledKernelUnavailable:
        return False
    return True


needs_compile = pytest.mark.skipif("not _compiled_available()", reason="torch.compile unavailable")


@pytest.mark.parametrize("backend", ["eager", pytest.param("compiled", marks=needs_compile)])
@pytest.mark.parametrize("need_grad", [True, False])
def test_vertex_shares_add_up_to_the_whole(backend, need_grad):
    g = torch.Generator().manual_seed(3)
    s, t = relations(torch.randn(N, 7, generator=g, dtype=torch.float64)), relations(
        torch.randn(N, 9, generator=g, dtype=torch.float64)
    )
    args = (s.half_sq_dist, s.inv_dist, t.half_sq_dist, t.inv_dist)
    kw = dict(need_grad=need_grad, backend=backend, compute_dtype=torch.float64)
    whole = angle_sums(*args, **kw)
    bounds = [0, 5, 40, 64, N]  # uneven, one across the tile boundary
    parts = [angle_sums(*args, vertices=(a, b), **kw) for a, b in zip(bounds, bounds[1:])]
    assert float(whole[0]) > 0
    assert float(sum(p[0] for p in parts)) == pytest.approx(float(whole[0]), rel=1e-12)
    if need_grad:
        for k in (1, 2):
            total = sum(p[k] for p in parts)
            assert torch.allclose(total, whole[k], rtol=1e-11, atol=1e-13 * float(whole[k].abs().max()))
    # Each share's loss is its vertices' own: the triplets at vertex a alone, written out.
    a = 2
    h_s, r_s, h_t, r_t = (m.clone() for m in args)
    cos = lambda h, r: (h[a, :, None] + h[a, None, :] - h) * r[a, :, None] * r[a, None, :]  # noqa: E731
    e = cos(h_s, r_s) - cos(h_t, r_t)
    huber = torch.where(e.abs() < 1, 0.5 * e * e, e.abs() - 0.5)
    keep = torch.ones(N, N, dtype=torch.bool)
    keep[a, :] = keep[:, a] = False
    keep.fill_diagonal_(False)
    single = angle_sums(*args, vertices=(a, a + 1), **kw)[0]
    assert float(single) == pytest.approx(float(huber[keep].sum()), rel=1e-12)


def test_rank_share_positions_follow_the_gathered_order():
    """PML gathers this process's rows first, then the others' in rank order."""
    share = rank_share(3, 1, 3, reduce=lambda buf: None)
    assert share.positions.tolist() == [3, 4, 5, 0, 1, 2, 6, 7, 8]
    assert (share.start, share.stop, share.size) == (0, 3, 9)
