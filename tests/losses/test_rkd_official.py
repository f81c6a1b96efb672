"""RKD losses against the official formulation: exact factors, float64, loss and gradient."""

import importlib.util
import os

import pytest
import torch

from rkd_pml import RKDAngleLoss, RKDDistanceLoss, RKDLoss

_spec = importlib.util.spec_from_file_location(
    "official_rkd", os.path.join(os.path.dirname(__file__), "official_rkd.py")
)
official = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(official)

TOL = 1e-10


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _loss_and_grad(fn, student, teacher):
    s = student.clone().requires_grad_(True)
    loss = fn(s, teacher)
    (grad,) = torch.autograd.grad(loss, s)
    return loss.detach(), grad


@pytest.mark.parametrize("n,ds,dt", [(3, 2, 2), (7, 4, 9), (16, 8, 5), (33, 16, 64)])
def test_distance_is_official_times_n_over_n_minus_1(n, ds, dt):
    student, teacher = torch.randn(n, ds, dtype=torch.float64), torch.randn(n, dt, dtype=torch.float64) * 3
    ours, g_ours = _loss_and_grad(lambda s, t: RKDDistanceLoss()(s, ref_emb=t), student, teacher)
    ref, g_ref = _loss_and_grad(official.official_distance_loss, student, teacher)
    factor = n / (n - 1)
    assert _rel_err(ours, ref * factor) < TOL
    assert _rel_err(g_ours, g_ref * factor) < TOL


@pytest.mark.parametrize("n,ds,dt", [(3, 2, 2), (7, 4, 9), (16, 8, 5), (33, 16, 64)])
def test_angle_is_official_times_n2_over_n1_n2(n, ds, dt):
    student, teacher = torch.randn(n, ds, dtype=torch.float64), torch.randn(n, dt, dtype=torch.float64)
    ours, g_ours = _loss_and_grad(lambda s, t: RKDAngleLoss()(s, ref_emb=t), student, teacher)
    ref, g_ref = _loss_and_grad(official.official_angle_loss, student, teacher)
    factor = n * n / ((n - 1) * (n - 2))
    assert _rel_err(ours, ref * factor) < TOL
    assert _rel_err(g_ours, g_ref * factor) < TOL


def test_weighted_sum_matches_official_terms():
    n = 12
    student, teacher = torch.randn(n, 6, dtype=torch.float64), torch.randn(n, 10, dtype=torch.float64)
    fn = RKDLoss(distance_weight=1.0, angle_weight=2.0)
    ours, g_ours = _loss_and_grad(lambda s, t: fn(s, ref_emb=t), student, teacher)

    def reference(s, t):
        return official.official_distance_loss(s, t) * n / (n - 1) + 2.0 * official.official_angle_loss(
            s, t
        ) * n * n / ((n - 1) * (n - 2))

    ref, g_ref = _loss_and_grad(reference, student, teacher)
    assert _rel_err(ours, ref) < TOL
    assert _rel_err(g_ours, g_ref) < TOL


@pytest.mark.parametrize("loss_cls", [RKDDistanceLoss, RKDAngleLoss, RKDLoss])
def test_gradcheck_float64(loss_cls):
    teacher = torch.randn(6, 5, dtype=torch.float64)
    student = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    fn = loss_cls()
    assert torch.autograd.gradcheck(lambda s: fn(s, ref_emb=teacher), (student,), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("loss_cls", [RKDDistanceLoss, RKDAngleLoss, RKDLoss])
def test_teacher_never_receives_gradient(loss_cls):
    teacher = torch.randn(8, 5, requires_grad=True)
    student = torch.randn(8, 3, requires_grad=True)
    loss_cls()(student, ref_emb=teacher).backward()
    assert teacher.grad is None
    assert student.grad is not None and torch.isfinite(student.grad).all()
