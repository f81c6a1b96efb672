"""Bad arguments to the distillation losses fail at construction or at the call, with an
error naming the argument and what it accepts, never deep inside PML or at step 1."""

import math

import numpy as np
import pytest
import torch

from rkd_pml import RKDAngleLoss, RKDDistanceLoss, RKDLoss
from rkd_pml.losses import DarkRankLoss, FitNetEmbeddingLoss

NAN, INF = float("nan"), float("inf")
NOT_NUMBERS = ["2", None, True, [1.0], torch.tensor(1.0), 1j]


@pytest.mark.parametrize("name", ["distance_weight", "angle_weight"])
@pytest.mark.parametrize("value", [NAN, INF, -INF, -1.0, -1e-300] + NOT_NUMBERS)
def test_rkd_weights(name, value):
    with pytest.raises(ValueError, match=rf"{name} must be a finite, non-negative real number.*got"):
        RKDLoss(**{name: value})


@pytest.mark.parametrize("name", ["alpha", "beta"])
@pytest.mark.parametrize("value", [0, 0.0, -3.0, NAN, INF] + NOT_NUMBERS)
def test_darkrank_alpha_beta(name, value):
    with pytest.raises(ValueError, match=rf"{name} must be a finite, positive real number.*got"):
        DarkRankLoss(**{name: value})


@pytest.mark.parametrize("value", [0, -2, 2.5, 4.0, NAN, "4", None, True])
def test_darkrank_list_length(value):
    with pytest.raises(ValueError, match=r"list_length must be an integer >= 1, got"):
        DarkRankLoss(list_length=value)


@pytest.mark.parametrize("which", [0, 1])
@pytest.mark.parametrize("value", [0, -1, 2.5, 8.0, NAN, "8", None, False])
def test_fitnet_widths(which, value):
    args = [5, 7]
    args[which] = value
    name = ["student_dim", "teacher_dim"][which]
    with pytest.raises(ValueError, match=rf"{name} must be an integer >= 1, got"):
        FitNetEmbeddingLoss(*args)


@pytest.mark.parametrize("loss_cls", [RKDDistanceLoss, RKDAngleLoss, RKDLoss])
@pytest.mark.parametrize("value", ["Eager", "cuda", None, 1, ("eager",)])
def test_backend(loss_cls, value):
    with pytest.raises(ValueError, match=r"backend must be one of \('auto', 'triton', 'compiled', 'eager'\), got"):
        loss_cls(backend=value)


def _all_losses():
    return [RKDLoss, DarkRankLoss, lambda **kw: FitNetEmbeddingLoss(3, 5, **kw)]


@pytest.mark.parametrize("make", _all_losses())
def test_pml_arguments(make):
    with pytest.raises(ValueError, match="reducer must be None or a PML object"):
        make(reducer="mean")
    with pytest.raises(ValueError, match="embedding_regularizer must be None or a PML object"):
        make(embedding_regularizer="l2")
    with pytest.raises(ValueError, match="embedding_reg_weight must be a finite"):
        make(embedding_reg_weight=NAN)
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['distance_wieght'\]"):
        make(distance_wieght=1.0)


def test_accepted_numbers_are_stored_as_python_numbers():
    loss = RKDLoss(distance_weight=np.float32(0.5), angle_weight=0)
    assert loss.distance_weight == 0.5 and loss.angle_weight == 0.0
    assert type(loss.distance_weight) is float
    dark = DarkRankLoss(alpha=2, beta=np.float64(1.5), list_length=np.int64(3))
    assert (dark.alpha, dark.beta, dark.list_length) == (2.0, 1.5, 3) and type(dark.list_length) is int
    fit = FitNetEmbeddingLoss(np.int32(3), 4)
    assert fit.regressor.weight.shape == (4, 3)


# ------------------------------------------------------------------------ call arguments

N = 6


def _call(loss_fn, indices):
    return loss_fn(torch.randn(N, 3), torch.arange(N) % 2, indices, ref_emb=torch.randn(N, 4))


def _mask(*positions):
    m = torch.zeros(N, dtype=torch.bool)
    m[list(positions)] = True
    return m


@pytest.mark.parametrize("loss_cls", [RKDDistanceLoss, RKDAngleLoss, RKDLoss])
@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8])
def test_mask_indices_tuple(loss_cls, dtype):
    masks = tuple(_mask(i, i + 1).to(dtype) for i in range(3))
    with pytest.raises(ValueError, match=r"indices_tuple\[0\] must be a 1-D tensor of integer indices.*boolean mask"):
        _call(loss_cls(), masks)


@pytest.mark.parametrize(
    "indices,pattern",
    [
        (torch.tensor([[0, 1], [2, 3], [4, 5]]), r"indices_tuple must be a tuple.*got Tensor"),
        ({"a": torch.tensor([0])}, r"indices_tuple must be a tuple.*got dict"),
        (([0, 1], [2, 3], [4, 5]), r"indices_tuple\[0\] must be a 1-D tensor.*got list"),
        ((torch.tensor([[0]]), torch.tensor([1]), torch.tensor([2])), r"indices_tuple\[0\].*shape \(1, 1\)"),
        ((torch.tensor([0]), torch.tensor([1.0]), torch.tensor([2])), r"indices_tuple\[1\].*torch.float32"),
        ((torch.tensor([0]), torch.tensor([1]), torch.tensor([N])), r"indices_tuple\[2\] has indices outside"),
    ],
)
def test_malformed_indices_tuple(indices, pattern):
    with pytest.raises(ValueError, match=pattern):
        _call(RKDLoss(), indices)


@pytest.mark.parametrize("loss_fn", [DarkRankLoss(), FitNetEmbeddingLoss(3, 4)])
def test_losses_without_tuples_refuse_masks_too(loss_fn):
    with pytest.raises(ValueError, match=r"does not take an indices_tuple: it .*indices_tuple=None"):
        _call(loss_fn, (_mask(0), _mask(1), _mask(2)))


def test_int32_indices_are_accepted():
    a, p, n = torch.tensor([0, 1], dtype=torch.int32), torch.tensor([2, 3]), torch.tensor([4, 5])
    loss = _call(RKDLoss(), (a, p, n))
    assert math.isfinite(float(loss))
