"""SimilarityPreservingLoss against the SP formula written out with loops in float64."""

import math

import pytest
import torch

from rkd_pml.losses.similarity_preserving import SimilarityPreservingLoss


def _normalised_gram(x):
    n = len(x)
    gram = [[sum(a * b for a, b in zip(x[i], x[j])) for j in range(n)] for i in range(n)]
    return [[g / math.sqrt(sum(v * v for v in row)) for g in row] for row in gram]


def reference(student, teacher):
    """||G~_t - G~_s||_F^2 / b^2, G~ the batch Gram matrix A A^T with rows L2-normalised."""
    gs, gt = _normalised_gram(student.double().tolist()), _normalised_gram(teacher.double().tolist())
    b = len(gs)
    return sum((gt[i][j] - gs[i][j]) ** 2 for i in range(b) for j in range(b)) / b**2


@pytest.mark.parametrize("n", [2, 10])
def test_matches_loop_formula(n):
    s, t = torch.randn(n, 5, dtype=torch.float64) + 0.3, torch.randn(n, 7, dtype=torch.float64) * 2
    loss = SimilarityPreservingLoss()(s, ref_emb=t)
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(reference(s, t), rel=1e-10, abs=1e-14)


def test_gram_is_not_centred():
    """Shifting one model's batch changes its Gram matrix and so the loss (SP does not centre)."""
    s, t = torch.randn(8, 4, dtype=torch.float64), torch.randn(8, 4, dtype=torch.float64)
    shifted = SimilarityPreservingLoss()(s + 2.0, ref_emb=t).item()
    assert shifted == pytest.approx(reference(s + 2.0, t), rel=1e-10)
    assert abs(shifted - SimilarityPreservingLoss()(s, ref_emb=t).item()) > 1e-3
