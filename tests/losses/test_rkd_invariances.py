"""Invariances RKD's potentials are built to have."""

import math

import pytest
import torch

from rkd_pml import RKDAngleLoss, RKDDistanceLoss, RKDLoss

LOSSES = [RKDDistanceLoss, RKDAngleLoss, RKDLoss]


def _pair(n=10, ds=4, dt=7):
    return torch.randn(n, ds, dtype=torch.float64), torch.randn(n, dt, dtype=torch.float64)


def _rotation(d: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64))
    return q


@pytest.mark.parametrize("loss_cls", LOSSES)
def test_scaling_the_teacher_changes_nothing(loss_cls):
    s, t = _pair()
    fn = loss_cls()
    assert torch.allclose(fn(s, ref_emb=t), fn(s, ref_emb=t * 37.5), rtol=1e-12, atol=0)


@pytest.mark.parametrize("loss_cls", LOSSES)
@pytest.mark.parametrize("side", ["student", "teacher"])
def test_translation_and_rotation_change_nothing(loss_cls, side):
    s, t = _pair()
    fn = loss_cls()
    base = fn(s, ref_emb=t)
    if side == "student":
        moved = fn(s @ _rotation(s.shape[1]) + torch.randn(s.shape[1], dtype=torch.float64) * 5, ref_emb=t)
    else:
        moved = fn(s, ref_emb=t @ _rotation(t.shape[1]) + torch.randn(t.shape[1], dtype=torch.float64) * 5)
    assert torch.allclose(base, moved, rtol=1e-10, atol=0)


@pytest.mark.parametrize("loss_cls", LOSSES)
def test_permuting_the_batch_changes_nothing(loss_cls):
    s, t = _pair(n=11)
    perm = torch.randperm(11)
    fn = loss_cls()
    assert torch.allclose(fn(s, ref_emb=t), fn(s[perm], ref_emb=t[perm]), rtol=1e-12, atol=0)


@pytest.mark.parametrize("loss_cls", LOSSES)
def test_student_equal_to_teacher_gives_zero(loss_cls):
    t = torch.randn(9, 5, dtype=torch.float64)
    s = t.clone().requires_grad_(True)
    loss = loss_cls()(s, ref_emb=t)
    loss.backward()
    assert float(loss.detach()) == pytest.approx(0.0, abs=1e-14)
    assert float(s.grad.abs().max()) < 1e-12


def test_distance_loss_of_a_known_configuration():
    # Teacher: unit square corners; student: the same square stretched 2x along one axis.
    t = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    s = t * torch.tensor([2.0, 1.0], dtype=torch.float64)
    # Ordered distinct pairs: 4 sides + 2 diagonals, each twice.
    t_d = [1, 1, 1, 1, math.sqrt(2), math.sqrt(2)]
    s_d = [2, 1, 2, 1, math.sqrt(5), math.sqrt(5)]
    mu_t, mu_s = sum(t_d) / 6, sum(s_d) / 6
    diffs = [a / mu_s - b / mu_t for a, b in zip(s_d, t_d)]
    expected = sum(0.5 * x * x if abs(x) < 1 else abs(x) - 0.5 for x in diffs) / 6
    assert float(RKDDistanceLoss()(s, ref_emb=t)) == pytest.approx(expected, rel=1e-12)
