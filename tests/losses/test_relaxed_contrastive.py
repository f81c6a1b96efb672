"""RelaxedContrastiveLoss against the relaxed contrastive formula written out with loops in float64."""

import math

import pytest
import torch

from rkd_pml.losses.relaxed_contrastive import RelaxedContrastiveLoss


def reference(student, teacher, sigma=1.0, delta=1.0):
    """(1/N) sum_i sum_{j != i} w_ij (d_ij/mu_i)^2 + (1 - w_ij) max(0, delta - d_ij/mu_i)^2, with
    w_ij = exp(-||t_i - t_j||^2 / sigma) on L2-normalised teacher rows and mu_i = (1/N) sum_k d_ik."""
    s, t = student.double().tolist(), teacher.double().tolist()
    t = [[v / math.sqrt(sum(u * u for u in row)) for v in row] for row in t]
    n = len(s)
    total = 0.0
    for i in range(n):
        dist = [math.dist(s[i], s[k]) for k in range(n)]
        mu = sum(dist) / n
        for j in range(n):
            if j == i:
                continue
            w = math.exp(-sum((a - b) ** 2 for a, b in zip(t[i], t[j])) / sigma)
            d = dist[j] / mu
            total += w * d**2 + (1 - w) * max(0.0, delta - d) ** 2
    return total / n


@pytest.mark.parametrize("params", [{}, {"sigma": 0.5, "delta": 1.3}, {"sigma": 2.0, "delta": 0.4}])
def test_matches_loop_formula(params):
    s, t = torch.randn(10, 5, dtype=torch.float64), torch.randn(10, 7, dtype=torch.float64) * 4
    loss = RelaxedContrastiveLoss(**params)(s, ref_emb=t)
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(reference(s, t, **params), rel=1e-10)


def test_defaults_are_the_papers():
    loss = RelaxedContrastiveLoss()
    assert (loss.sigma, loss.delta) == (1.0, 1.0)


def test_student_duplicates_keep_their_push_term():
    """A duplicate pair of the student has distance 0: its term is (1 - w) delta^2, as in the formula."""
    s = torch.randn(6, 3, dtype=torch.float64)
    s[4] = s[1]
    t = torch.randn(6, 4, dtype=torch.float64)
    assert RelaxedContrastiveLoss()(s, ref_emb=t).item() == pytest.approx(reference(s, t), rel=1e-10)


@pytest.mark.parametrize("bad", [{"sigma": 0}, {"sigma": -1.0}, {"delta": float("inf")}, {"delta": "1"}])
def test_bad_options_are_refused_by_name(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        RelaxedContrastiveLoss(**bad)
