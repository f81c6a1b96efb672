"""Bad input to the RKD losses: a clear error naming the problem and the shapes."""

import pytest
import torch

from rkd_pml import RKDAngleLoss, RKDDistanceLoss, RKDLoss

LOSSES = [RKDDistanceLoss, RKDAngleLoss, RKDLoss]


@pytest.mark.parametrize("loss_cls", LOSSES)
def test_missing_teacher(loss_cls):
    with pytest.raises(ValueError, match="teacher"):
        loss_cls()(torch.randn(4, 3))


@pytest.mark.parametrize("loss_cls", LOSSES)
def test_row_count_mismatch_names_both_shapes(loss_cls):
    with pytest.raises(ValueError, match=r"8 rows.*\(8, 3\).*6.*\(6, 5\)"):
        loss_cls()(torch.randn(8, 3), ref_emb=torch.randn(6, 5))


@pytest.mark.parametrize(
    "student,teacher,error,pattern",
    [
        (torch.randn(8), torch.randn(8, 2), ValueError, "2-D"),
        (torch.randn(8, 3), torch.randn(8, 2, 1), ValueError, "2-D"),
        (torch.randn(0, 3), torch.randn(0, 2), ValueError, "empty"),
        (torch.randn(4, 0), torch.randn(4, 2), ValueError, "empty"),
        (torch.ones(4, 3, dtype=torch.long), torch.randn(4, 2), TypeError, "floating"),
        (torch.randn(4, 3), torch.ones(4, 2, dtype=torch.int32), TypeError, "floating"),
        (torch.tensor([[0.0, float("nan")], [1.0, 2.0]]), torch.randn(2, 2), ValueError, "NaN or Inf"),
        (torch.randn(2, 2), torch.tensor([[0.0, float("inf")], [1.0, 2.0]]), ValueError, "NaN or Inf"),
    ],
)
def test_malformed_embeddings(student, teacher, error, pattern):
    with pytest.raises(error, match=pattern):
        RKDLoss()(student, ref_emb=teacher)


def test_labels_of_the_wrong_length():
    with pytest.raises(ValueError, match="length 5"):
        RKDLoss()(torch.randn(5, 3), torch.arange(4), ref_emb=torch.randn(5, 2))


@pytest.mark.parametrize(
    "indices,pattern",
    [
        ((torch.tensor([0]), torch.tensor([5]), torch.tensor([1])), r"outside \[0, 5\)"),
        ((torch.tensor([-1]), torch.tensor([2]), torch.tensor([1])), r"outside \[0, 5\)"),
        ((torch.tensor([0, 1]), torch.tensor([2]), torch.tensor([1])), "equal lengths"),
        ((torch.tensor([0]), torch.tensor([2])), "indices_tuple must be"),
        ((torch.tensor([0.0]), torch.tensor([2]), torch.tensor([1])), "integer"),
    ],
)
def test_bad_indices_tuple(indices, pattern):
    with pytest.raises(ValueError, match=pattern):
        RKDLoss()(torch.randn(5, 3), None, indices, ref_emb=torch.randn(5, 2))


def test_negative_weights_are_refused():
    with pytest.raises(ValueError, match="non-negative"):
        RKDLoss(distance_weight=-1.0)
