"""CorrelationCongruenceLoss against the CC formula written out with loops in float64, and its
Taylor series against the exact Gaussian RBF kernel."""

import math

import pytest
import torch

from rkd_pml.losses.correlation_congruence import CorrelationCongruenceLoss


def _unit(x):
    return [[v / math.sqrt(sum(w * w for w in row)) for v in row] for row in x]


def _taylor_correlation(x, gamma, order):
    f = _unit(x)
    n = len(f)
    out = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(n):
            dot = sum(a * b for a, b in zip(f[i], f[j]))
            out[i][j] = sum(math.exp(-2 * gamma) * (2 * gamma) ** p / math.factorial(p) * dot**p for p in range(order + 1))
    return out


def _rbf_correlation(x, gamma):
    f = _unit(x)
    return [[math.exp(-gamma * sum((a - b) ** 2 for a, b in zip(fi, fj))) for fj in f] for fi in f]


def _frobenius_over_b2(cs, ct):
    b = len(cs)
    return sum((ct[i][j] - cs[i][j]) ** 2 for i in range(b) for j in range(b)) / b**2


def reference(student, teacher, gamma=0.4, order=2):
    s, t = student.double().tolist(), teacher.double().tolist()
    return _frobenius_over_b2(_taylor_correlation(s, gamma, order), _taylor_correlation(t, gamma, order))


@pytest.mark.parametrize("params", [{}, {"gamma": 1.3, "order": 4}, {"gamma": 0.1, "order": 1}])
def test_matches_loop_formula(params):
    s, t = torch.randn(9, 5, dtype=torch.float64), torch.randn(9, 3, dtype=torch.float64)
    loss = CorrelationCongruenceLoss(**params)(s, ref_emb=t)
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(reference(s, t, **params), rel=1e-10, abs=1e-14)


def test_defaults_are_the_papers():
    loss = CorrelationCongruenceLoss()
    assert (loss.gamma, loss.order) == (0.4, 2)


def test_high_order_converges_to_the_exact_rbf_kernel():
    s, t = torch.randn(7, 4, dtype=torch.float64), torch.randn(7, 6, dtype=torch.float64)
    exact = _frobenius_over_b2(_rbf_correlation(s.tolist(), 0.4), _rbf_correlation(t.tolist(), 0.4))
    assert CorrelationCongruenceLoss(order=25)(s, ref_emb=t).item() == pytest.approx(exact, rel=1e-10)


@pytest.mark.parametrize("bad", [{"gamma": 0}, {"gamma": float("nan")}, {"order": 0}, {"order": 2.5}])
def test_bad_options_are_refused_by_name(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        CorrelationCongruenceLoss(**bad)
