"""Every loss is finite, with a finite gradient, at any finite scale of student and teacher
(1e-30 .. 1e30) in float32, bfloat16 and float64; the scale-invariant RKD losses keep
their value."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rkd_pml import RKDAngleLoss, RKDDistanceLoss, RKDLoss
from rkd_pml._pml import LpDistance
from rkd_pml.functional import fused
from rkd_pml.losses import DarkRankLoss, FitNetEmbeddingLoss

DTYPES = [torch.float32, torch.bfloat16, torch.float64]
N, DS, DT = 9, 4, 6


def _compiled_available() -> bool:
    try:
        fused.compiled_kernel(torch.device("cpu"), torch.float32, fused.tile_size("cpu"), True)
    except fused.CompiledKernelUnavailable:
        return False
    return True


#: Scale-invariant losses: name -> (loss, whether to pass mined triplets).
INVARIANT = {
    "rkd_d": (lambda: RKDDistanceLoss(), False),
    "rkd_a_eager": (lambda: RKDAngleLoss(backend="eager"), False),
    "rkd_a_compiled": (lambda: RKDAngleLoss(backend="compiled"), False),
    "rkd_da": (lambda: RKDLoss(backend="eager"), False),
    "rkd_da_mined": (lambda: RKDLoss(), True),
    "rkd_da_normalized": (lambda: RKDLoss(backend="eager", distance=LpDistance(normalize_embeddings=True)), False),
}
MINED = (torch.tensor([0, 1, 2, 3, 5]), torch.tensor([1, 2, 3, 4, 7]), torch.tensor([8, 6, 0, 2, 1]))


def _inputs(seed, dtype, s_scale, t_scale):
    g = torch.Generator().manual_seed(seed)
    s = (torch.randn(N, DS, generator=g, dtype=torch.float64) * s_scale).to(dtype)
    t = (torch.randn(N, DT, generator=g, dtype=torch.float64) * t_scale).to(dtype)
    return s, t


def _loss_and_grad(loss_fn, s, t, mined=False):
    x = s.clone().requires_grad_(True)
    loss = loss_fn(x, None, MINED if mined else None, ref_emb=t)
    (grad,) = torch.autograd.grad(loss, x)
    return loss.detach(), grad


def _finite(loss, grad):
    return bool(torch.isfinite(loss)) and bool(torch.isfinite(grad).all())


@settings(max_examples=30, deadline=None)
@given(
    name=st.sampled_from(sorted(INVARIANT)),
    dtype=st.sampled_from(DTYPES),
    log_s=st.floats(-30, 30),
    log_t=st.floats(-30, 30),
    seed=st.integers(0, 2**16),
)
def test_property_scale_invariant_losses_finite_and_unchanged(name, dtype, log_s, log_t, seed):
    if name == "rkd_a_compiled" and not _compiled_available():
        return
    make, mined = INVARIANT[name]
    s, t = _inputs(seed, dtype, 10.0**log_s, 10.0**log_t)
    loss, grad = _loss_and_grad(make(), s, t, mined)
    assert _finite(loss, grad), (name, dtype, log_s, log_t)
    # The same (rounded) inputs brought back to scale 1 in float64: the value is unchanged,
    # up to the float32 arithmetic of the angle term.
    ref, _ = _loss_and_grad(make(), s.double() / 10.0**log_s, t.double() / 10.0**log_t, mined)
    assert float(loss) == pytest.approx(float(ref), rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("name", sorted(INVARIANT))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [-100, -64, 64, 100])
def test_power_of_two_scales_change_nothing_bit_for_bit(name, dtype, k):
    if name == "rkd_a_compiled" and not _compiled_available():
        pytest.skip("torch.compile unavailable")
    make, mined = INVARIANT[name]
    s, t = _inputs(k + 200, dtype, 1.0, 1.0)
    base, base_grad = _loss_and_grad(make(), s, t, mined)
    loss, grad = _loss_and_grad(make(), s * 2.0**k, t * 2.0 ** (-k), mined)
    assert torch.equal(loss, base)
    assert torch.equal(grad, base_grad * 2.0 ** (-k))  # the gradient of a scale-invariant loss


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("s_scale,t_scale", [(1e19, 1.0), (1e-20, 1.0), (1.0, 1e20), (1e30, 1e-30), (1e-30, 1e30)])
def test_reported_scales(dtype, s_scale, t_scale):
    """Student x1e19 or x1e-20 and teacher x1e20 gave NaN or Inf on the fused angle path."""
    s, t = _inputs(1, dtype, 1.0, 1.0)
    ref, _ = _loss_and_grad(RKDLoss(), s.double(), t.double())
    loss, grad = _loss_and_grad(RKDLoss(), (s.double() * s_scale).to(dtype), (t.double() * t_scale).to(dtype))
    assert _finite(loss, grad)
    assert float(loss) == pytest.approx(float(ref), rel=2e-2 if dtype == torch.bfloat16 else 1e-4)


@settings(max_examples=20, deadline=None)
@given(
    normalize=st.booleans(),
    dtype=st.sampled_from(DTYPES),
    log_s=st.floats(-30, 30),
    log_t=st.floats(-30, 30),
    seed=st.integers(0, 2**16),
)
def test_property_darkrank_finite(normalize, dtype, log_s, log_t, seed):
    s, t = _inputs(seed, dtype, 10.0**log_s, 10.0**log_t)
    loss, grad = _loss_and_grad(DarkRankLoss(distance=LpDistance(normalize_embeddings=normalize)), s, t)
    assert _finite(loss, grad) and float(loss) >= 0.0
    if normalize:  # L2-normalised, DarkRank is scale invariant too
        ref, _ = _loss_and_grad(DarkRankLoss(distance=LpDistance(normalize_embeddings=True)), s.double(), t.double())
        assert float(loss) == pytest.approx(float(ref), rel=1e-4, abs=1e-6)


@settings(max_examples=20, deadline=None)
@given(dtype=st.sampled_from(DTYPES), log_s=st.floats(-30, 15), log_t=st.floats(-30, 15), seed=st.integers(0, 2**16))
def test_property_fitnet_finite_where_its_squared_errors_fit(dtype, log_s, log_t, seed):
    """FitNet regresses raw embeddings (not scale invariant): finite while its squared
    errors fit float32, i.e. norms up to about 1e18."""
    s, t = _inputs(seed, dtype, 10.0**log_s, 10.0**log_t)
    loss_fn = FitNetEmbeddingLoss(DS, DT)
    loss, grad = _loss_and_grad(loss_fn, s, t)
    assert _finite(loss, grad) and float(loss) >= 0.0
