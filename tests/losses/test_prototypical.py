"""The prototypical loss against its formula written out: -log softmax(-||q - mean(supports)||^2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rkd_pml._pml import MeanReducer
from rkd_pml.losses.prototypical import PrototypicalLoss, split_support_query


def _reference(query, query_labels, support, support_labels):
    """Plain loops: class means of the supports, then the mean cross-entropy of the queries."""
    classes = sorted(set(support_labels.tolist()))
    protos = torch.stack([support[support_labels == c].mean(0) for c in classes])
    total = 0.0
    for q, y in zip(query, query_labels.tolist()):
        d2 = torch.stack([((q - p) ** 2).sum() for p in protos])
        logits = -d2
        total = total - (logits[classes.index(y)] - torch.logsumexp(logits, 0))
    return total / len(query)


def test_explicit_supports_match_the_formula():
    g = torch.Generator().manual_seed(0)
    support, query = torch.randn(12, 5, generator=g, dtype=torch.float64), torch.randn(9, 5, generator=g, dtype=torch.float64)
    support_labels = torch.tensor([3, 3, 3, 7, 7, 7, 1, 1, 1, 9, 9, 9])  # class 9: supports only
    query_labels = torch.tensor([7, 1, 3, 3, 1, 7, 7, 1, 3])
    loss = PrototypicalLoss()(query, query_labels, ref_emb=support, ref_labels=support_labels)
    assert loss.item() == pytest.approx(_reference(query, query_labels, support, support_labels).item(), rel=1e-10)


def test_one_batch_with_shots_matches_the_formula_and_its_gradient():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(15, 4, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([2, 0, 1, 0, 2, 1, 1, 0, 2, 2, 0, 1, 0, 1, 2])
    # first 2 rows of each class (batch order) are supports: class 0 rows 1, 3; 1: 2, 5; 2: 0, 4
    is_support = torch.zeros(15, dtype=torch.bool)
    is_support[[1, 3, 2, 5, 0, 4]] = True
    assert torch.equal(split_support_query(labels, 2), is_support)
    loss = PrototypicalLoss(shots=2)(x, labels)
    ref = _reference(x[~is_support], labels[~is_support], x[is_support], labels[is_support])
    assert loss.item() == pytest.approx(ref.item(), rel=1e-10)
    (grad,) = torch.autograd.grad(loss, x)
    (ref_grad,) = torch.autograd.grad(ref, x)
    torch.testing.assert_close(grad, ref_grad)


def test_known_value_of_a_two_class_episode():
    # prototypes 0 and 2 (1-D); one query at 0 of class 0: distances 0 and 4
    # loss = -log(e^0 / (e^0 + e^-4)) = log(1 + e^-4)
    support = torch.tensor([[-1.0], [1.0], [2.0], [2.0]], dtype=torch.float64)
    loss = PrototypicalLoss()(torch.zeros(1, 1, dtype=torch.float64), torch.tensor([0]), ref_emb=support,
                              ref_labels=torch.tensor([0, 0, 1, 1]))
    assert loss.item() == pytest.approx(float(np.log1p(np.exp(-4.0))), rel=1e-12)


def test_query_on_a_prototype_has_a_finite_gradient():
    x = torch.tensor([[1.0, 2.0], [1.0, 2.0], [5.0, 5.0], [6.0, 5.0]], requires_grad=True)
    loss = PrototypicalLoss(shots=1)(x, torch.tensor([0, 0, 1, 1]))
    loss.backward()
    assert torch.isfinite(x.grad).all()


def test_is_a_pml_loss_with_a_reducer():
    loss = PrototypicalLoss(shots=1, reducer=MeanReducer())
    x, labels = torch.randn(6, 3), torch.tensor([0, 0, 1, 1, 2, 2])
    assert loss(x, labels).dim() == 0


def test_errors_say_what_is_missing():
    x, labels = torch.randn(6, 3), torch.tensor([0, 0, 1, 1, 2, 2])
    with pytest.raises(ValueError, match="shots="):
        PrototypicalLoss()(x, labels)
    with pytest.raises(ValueError, match="shots"):
        PrototypicalLoss(shots=0)
    with pytest.raises(ValueError, match="no queries"):
        PrototypicalLoss(shots=2)(x, labels)
    with pytest.raises(ValueError, match="at least shots=3"):
        PrototypicalLoss(shots=3)(x, labels)
    with pytest.raises(ValueError, match="query label 5 has no supports"):
        PrototypicalLoss()(x[:2], torch.tensor([0, 5]), ref_emb=x, ref_labels=labels)
    with pytest.raises(ValueError, match="ref_labels"):
        PrototypicalLoss()(x[:2], labels[:2], ref_emb=x)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_inputs_are_refused(bad):
    # a NaN query or support used to give a NaN loss
    x, labels = torch.randn(6, 3), torch.tensor([0, 0, 1, 1, 2, 2])
    y = x.clone()
    y[3, 1] = bad
    with pytest.raises(ValueError, match=r"embeddings \(queries\) contains NaN or Inf"):
        PrototypicalLoss(shots=1)(y, labels)
    with pytest.raises(ValueError, match=r"embeddings \(queries\) contains NaN or Inf"):
        PrototypicalLoss()(y[2:5], labels[2:5], ref_emb=x, ref_labels=labels)
    with pytest.raises(ValueError, match=r"ref_emb \(supports\) contains NaN or Inf"):
        PrototypicalLoss()(x[:3], labels[:3], ref_emb=y, ref_labels=labels)
