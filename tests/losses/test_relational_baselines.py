"""What PKT, SP, CC and relaxed contrastive share with RKD: exact float64 gradients, finite and
scale-invariant values at any norm and with duplicates, O(N^2) memory, a teacher without
gradient, small batches, and PML's call conventions."""

import math

import pytest
import torch
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.reducers import SumReducer
from torch.utils._python_dispatch import TorchDispatchMode

from rkd_pml import CorrelationCongruenceLoss, PKTLoss, RelaxedContrastiveLoss, SimilarityPreservingLoss

LOSSES = {
    "pkt": PKTLoss,
    "sp": SimilarityPreservingLoss,
    "cc": CorrelationCongruenceLoss,
    "relaxed-contrastive": RelaxedContrastiveLoss,
}
SCALES = [1e-3, 1e-1, 1.0, 1e2, 1e4]


@pytest.fixture(params=sorted(LOSSES))
def loss_cls(request):
    return LOSSES[request.param]


def test_float64_gradients_are_exact(loss_cls):
    s = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    t = torch.randn(5, 4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: loss_cls()(x, ref_emb=t), (s,))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_finite_and_scale_invariant_at_every_scale(loss_cls, dtype):
    """All four losses are invariant to the scale of either model (cosines, row-normalised
    matrices, distances over their mean): the value at every scale is the value at scale 1."""
    s0, t0 = torch.randn(12, 6, dtype=torch.float64), torch.randn(12, 8, dtype=torch.float64)
    expected = loss_cls()(s0, ref_emb=t0).item()
    for s_scale in SCALES:
        for t_scale in SCALES:
            s = (s0 * s_scale).to(dtype).requires_grad_()
            loss = loss_cls()(s, ref_emb=(t0 * t_scale).to(dtype))
            loss.backward()
            assert math.isfinite(loss.item()) and torch.isfinite(s.grad).all()
            tol = 1e-9 if dtype == torch.float64 else 1e-4
            assert loss.item() == pytest.approx(expected, rel=tol, abs=tol)


@pytest.mark.parametrize("scale", SCALES)
def test_duplicates_and_zero_rows_are_finite(loss_cls, scale):
    s = torch.randn(8, 5) * scale
    s[3] = s[1]
    s[6] = s[1]
    s[7] = 0.0
    t = torch.randn(8, 4) * scale
    t[2] = t[5]
    for student in (s, t[:, :4].clone()):  # duplicates in both models at once, too
        x = student.clone().requires_grad_()
        loss = loss_cls()(x, ref_emb=t)
        loss.backward()
        assert math.isfinite(loss.item()) and torch.isfinite(x.grad).all()


def test_all_rows_equal_is_finite(loss_cls):
    s = torch.ones(5, 3, requires_grad=True)
    loss = loss_cls()(s, ref_emb=torch.ones(5, 2))
    loss.backward()
    assert math.isfinite(loss.item()) and torch.isfinite(s.grad).all()


class _LargestTensor(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(value, torch.Tensor):
                self.largest = max(self.largest, value.numel())
        return out


def test_memory_is_quadratic(loss_cls):
    """No tensor of forward or backward is larger than a few N x N matrices (no N^3 tensor)."""
    n, dim = 96, 4
    s = torch.randn(n, dim, requires_grad=True)
    with _LargestTensor() as mode:
        loss_cls()(s, ref_emb=torch.randn(n, dim)).backward()
    assert n * n <= mode.largest <= 2 * n * n


def test_teacher_gets_no_gradient(loss_cls):
    s = torch.randn(6, 3, requires_grad=True)
    t = torch.randn(6, 5, requires_grad=True)
    loss_cls()(s, ref_emb=t).backward()
    assert t.grad is None and s.grad is not None and s.grad.abs().sum() > 0


def test_single_example_gives_a_zero_that_backpropagates(loss_cls):
    s = torch.randn(1, 3, requires_grad=True)
    loss = loss_cls()(s, ref_emb=torch.randn(1, 5))
    assert loss.item() == 0.0
    loss.backward()
    assert s.grad is not None and torch.equal(s.grad, torch.zeros_like(s))


def test_reducer_sees_one_loss_per_anchor(loss_cls):
    """The default mean and PML's SumReducer differ by exactly N: one element loss per anchor."""
    s, t = torch.randn(7, 3, dtype=torch.float64), torch.randn(7, 4, dtype=torch.float64)
    mean = loss_cls()(s, ref_emb=t)
    total = loss_cls(reducer=SumReducer())(s, ref_emb=t)
    torch.testing.assert_close(total, 7 * mean, rtol=1e-12, atol=0)


def test_half_precision_is_upcast(loss_cls):
    s, t = torch.randn(6, 3), torch.randn(6, 4)
    half = loss_cls()(s.to(torch.bfloat16), ref_emb=t.to(torch.bfloat16))
    assert half.dtype == torch.float32
    ref = loss_cls()(s.to(torch.bfloat16).float(), ref_emb=t.to(torch.bfloat16).float())
    torch.testing.assert_close(half, ref)


def test_call_errors(loss_cls):
    s, t = torch.randn(4, 3), torch.randn(4, 2)
    name = loss_cls.__name__
    with pytest.raises(ValueError, match=f"{name} needs the teacher"):
        loss_cls()(s)
    with pytest.raises(ValueError, match="one row per student"):
        loss_cls()(s, ref_emb=t[:3])
    with pytest.raises(ValueError, match=f"{name} does not take an indices_tuple"):
        loss_cls()(s, indices_tuple=(torch.tensor([0]), torch.tensor([1]), torch.tensor([2])), ref_emb=t)
    with pytest.raises(ValueError, match="uses no distance"):
        loss_cls(distance=LpDistance())
    with pytest.raises(TypeError, match="unexpected keyword"):
        loss_cls(margin=0.1)
