"""PKTLoss against the PKT formula written out with loops in float64."""

import math

import pytest
import torch

from rkd_pml.losses.pkt import PKT_EPS, PKTLoss


def _probabilities(x):
    """p_j|i = K_ij / sum_{k != i} K_ik with the cosine kernel K = (cos + 1) / 2, p_i|i = 0."""
    n = len(x)
    norms = [math.sqrt(sum(v * v for v in row)) for row in x]
    kernel = [
        [0.0 if i == j else (sum(a * b for a, b in zip(x[i], x[j])) / (norms[i] * norms[j]) + 1.0) / 2.0 for j in range(n)]
        for i in range(n)
    ]
    return [[kernel[i][j] / sum(kernel[i][k] for k in range(n) if k != i) for j in range(n)] for i in range(n)]


def reference(student, teacher, eps=1e-7):
    p = _probabilities(teacher.double().tolist())
    q = _probabilities(student.double().tolist())
    n = len(p)
    per_anchor = [
        sum(p[i][j] * math.log((p[i][j] + eps) / (q[i][j] + eps)) for j in range(n) if j != i) for i in range(n)
    ]
    return sum(per_anchor) / n


@pytest.mark.parametrize("n", [3, 10])
def test_matches_loop_formula(n):
    s, t = torch.randn(n, 5, dtype=torch.float64), torch.randn(n, 7, dtype=torch.float64) * 3
    loss = PKTLoss()(s, ref_emb=t)
    assert loss.dtype == torch.float64 and PKT_EPS == 1e-7
    assert loss.item() == pytest.approx(reference(s, t), rel=1e-10, abs=1e-12)


def test_identical_relations_give_zero_and_two_points_give_zero():
    t = torch.randn(6, 4, dtype=torch.float64)
    assert PKTLoss()(t * 5.0, ref_emb=t).item() == pytest.approx(0.0, abs=1e-15)
    assert PKTLoss()(torch.randn(2, 3), ref_emb=torch.randn(2, 5)).item() == 0.0


def test_antipodal_pair_is_finite():
    """Two antipodal rows: their kernel is 0, the epsilon keeps the logarithm finite."""
    s = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], dtype=torch.float64)
    loss = PKTLoss()(s, ref_emb=t)
    loss.backward()
    assert math.isfinite(loss.item()) and torch.isfinite(s.grad).all()
    assert loss.item() == pytest.approx(reference(s.detach(), t), rel=1e-10)
