"""Second derivatives of the fused all-triplets angle loss (create_graph=True): gradgradcheck,
and Hessian-vector products against a plain per-triplet transcription and the mined path;
every distillation loss passes gradgradcheck."""

import pytest
import torch
from torch.nn import functional as F

from rkd_pml import RKDAngleLoss, RKDDistanceLoss, RKDLoss
from rkd_pml._pml import LpDistance, MeanReducer
from rkd_pml.functional import fused
from rkd_pml.functional.angle import all_distinct_triplets, rkd_angle_all_triplets_mean, rkd_angle_triplet_losses
from rkd_pml.functional.relations import relations
from rkd_pml.losses import DarkRankLoss, FitNetEmbeddingLoss


def _compiled_available() -> bool:
    try:
        fused.compiled_kernel(torch.device("cpu"), torch.float64, TILE, True)
    except fused.CompiledKernelUnavailable:
        return False
    return True


#: The CPU tile (the compiled kernel is built once per tile size); batches below it are one tile.
TILE = fused.tile_size("cpu")
COMPILED = pytest.param("compiled", TILE, marks=pytest.mark.skipif("not _compiled_available()"))


def plain_angle_mean(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean Huber error over distinct triplets, cosines from difference vectors written out
    (no relations, no tiles); smooth wherever no two rows coincide."""
    v, a, b = all_distinct_triplets(len(student), student.device)

    def cosines(x):
        u, w = x[a] - x[v], x[b] - x[v]
        return (u * w).sum(1) / (u.norm(dim=1) * w.norm(dim=1))

    with torch.no_grad():
        target = cosines(teacher)
    return F.smooth_l1_loss(cosines(student), target, reduction="mean", beta=1.0)


def per_triplet_mean(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """The package's per-triplet (mined) path over all distinct triplets: plain autograd."""
    v, a, b = all_distinct_triplets(len(student), student.device)
    return rkd_angle_triplet_losses(relations(student), relations(teacher), v, a, b).mean()


def fused_mean(backend: str, tile: int):
    return lambda s, t: rkd_angle_all_triplets_mean(relations(s), relations(t), backend=backend, tile=tile)


def hvp(fn, student, teacher, direction):
    s = student.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(fn(s, teacher), s, create_graph=True)
    (out,) = torch.autograd.grad((grad * direction).sum(), s)
    return out.double()


def rel(a, b):
    return float((a - b).norm() / b.norm())


def batch(n, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, 4, generator=g, dtype=torch.float64)
    t = torch.randn(n, 6, generator=g, dtype=torch.float64)
    v = torch.randn(n, 4, generator=g, dtype=torch.float64)
    return s.to(dtype), t.to(dtype), v.to(dtype)


# The Hessian-vector product is always the eager kernel's; the backend computes the forward
# pass and the first derivative. Tile 3 at N = 7: diagonal and off-diagonal tiles, padding.
@pytest.mark.parametrize("backend,tile", [("eager", TILE), ("eager", 3), COMPILED])
@pytest.mark.parametrize("n", [5, 7])
def test_gradgradcheck_float64(backend, n, tile):
    s, t, _ = batch(n, seed=n)
    fn = fused_mean(backend, tile)
    assert torch.autograd.gradgradcheck(lambda x: fn(x, t), (s.requires_grad_(True),), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend,tile", [("eager", TILE), ("eager", 4), COMPILED])
@pytest.mark.parametrize("n", [6, 11])
def test_hvp_matches_plain_transcription(backend, n, tile):
    s, t, v = batch(n, seed=100 + n)
    assert rel(hvp(fused_mean(backend, tile), s, t, v), hvp(plain_angle_mean, s, t, v)) < 1e-10


def test_hvp_with_duplicates_matches_the_per_triplet_path():
    s, t, v = batch(13, seed=3)
    s[4] = s[1]  # student duplicates: no gradient through the pair, at any order
    t[7] = t[2]  # teacher duplicates: constant zero cosines
    assert rel(hvp(fused_mean("eager", 4), s, t, v), hvp(per_triplet_mean, s, t, v)) < 1e-10


def test_hvp_float32_is_accurate():
    s, t, v = batch(40, seed=4, dtype=torch.float32)
    got = hvp(fused_mean("eager", 16), s, t, v)
    assert rel(got, hvp(plain_angle_mean, s.double(), t.double(), v.double())) < 1e-5


class _SameMean(MeanReducer):
    """A MeanReducer in all but type: sends the loss down the per-triplet path."""


@pytest.mark.parametrize("loss_cls", [RKDAngleLoss, RKDLoss])
def test_gradient_penalty_through_the_losses(loss_cls):
    s, t, v = batch(9, seed=5)
    fused_loss, triplet_loss = loss_cls(backend="eager"), loss_cls(reducer=_SameMean())

    def penalty(loss_fn):
        x = s.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_fn(x, ref_emb=t), x, create_graph=True)
        (out,) = torch.autograd.grad(grad.pow(2).sum(), x)
        return out

    assert rel(penalty(fused_loss), penalty(triplet_loss)) < 1e-10


def test_first_order_is_the_same_with_and_without_create_graph():
    s, t, _ = batch(8, seed=6)
    fn = fused_mean("eager", TILE)
    x = s.clone().requires_grad_(True)
    (plain,) = torch.autograd.grad(fn(x, t), x)
    (graph,) = torch.autograd.grad(fn(x, t), x, create_graph=True)
    assert torch.equal(plain, graph.detach())


def test_third_order_is_refused():
    s, t, v = batch(6, seed=7)
    x = s.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(fused_mean("eager", TILE)(x, t), x, create_graph=True)
    with pytest.raises(RuntimeError, match="first and second derivatives only"):
        torch.autograd.grad((grad * v).sum(), x, create_graph=True)


@pytest.mark.parametrize(
    "make",
    [
        RKDDistanceLoss,
        lambda: RKDLoss(backend="eager"),
        lambda: RKDLoss(backend="eager", distance=LpDistance(normalize_embeddings=True)),
        lambda: DarkRankLoss(beta=2.5, list_length=3),
        lambda: FitNetEmbeddingLoss(4, 6).double(),
    ],
)
def test_every_loss_is_twice_differentiable(make):
    s, t, _ = batch(6, seed=8)
    loss_fn = make()
    assert torch.autograd.gradgradcheck(lambda x: loss_fn(x, ref_emb=t), (s.requires_grad_(True),), eps=1e-6, atol=1e-6)
