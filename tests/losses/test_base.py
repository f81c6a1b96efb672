"""The contract every distillation loss gets from DistillationLoss: checks, teacher detach,
the dtype rule and the indices_tuple policy, the same for RKD, DarkRank and FitNet."""

import pytest
import torch
from pytorch_metric_learning.reducers import SumReducer

from rkd_pml import RKDAngleLoss, RKDDistanceLoss, RKDLoss
from rkd_pml.losses import DarkRankLoss, DistillationLoss, FitNetEmbeddingLoss, RelationalDistillationLoss

DS, DT = 3, 5
MAKERS = {
    "rkd_d": RKDDistanceLoss,
    "rkd_a": RKDAngleLoss,
    "rkd_da": RKDLoss,
    "darkrank": DarkRankLoss,
    "fitnet": lambda: FitNetEmbeddingLoss(DS, DT),
}


def test_hierarchy():
    assert issubclass(RelationalDistillationLoss, DistillationLoss)
    for make in MAKERS.values():
        assert isinstance(make(), DistillationLoss)
    assert DarkRankLoss.indices_tuple_refusal and FitNetEmbeddingLoss.indices_tuple_refusal
    assert RelationalDistillationLoss.indices_tuple_refusal is None


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_teacher_is_detached(name):
    s, t = torch.randn(8, DS, requires_grad=True), torch.randn(8, DT, requires_grad=True)
    MAKERS[name]()(s, ref_emb=t).backward()
    assert t.grad is None and s.grad is not None and torch.isfinite(s.grad).all()


@pytest.mark.parametrize("name", sorted(MAKERS))
@pytest.mark.parametrize(
    "dtype,expected",
    [
        (torch.float16, torch.float32),
        (torch.bfloat16, torch.float32),
        (torch.float32, torch.float32),
        (torch.float64, torch.float64),
    ],
)
def test_dtype_rule(name, dtype, expected):
    loss_fn = MAKERS[name]()
    if dtype == torch.float64:
        loss_fn = loss_fn.double()
    s = torch.randn(8, DS).to(dtype).requires_grad_(True)
    loss = loss_fn(s, ref_emb=torch.randn(8, DT).to(dtype))
    loss.backward()
    assert loss.dtype == expected
    assert s.grad.dtype == dtype and torch.isfinite(s.grad).all()


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_shared_call_checks(name):
    loss_fn = MAKERS[name]()
    s = torch.randn(6, DS)
    with pytest.raises(ValueError, match="needs the teacher's embeddings"):
        loss_fn(s)
    with pytest.raises(ValueError, match="one row per student"):
        loss_fn(s, ref_emb=torch.randn(5, DT))
    with pytest.raises(ValueError, match="labels must be a 1-D tensor of length 6"):
        loss_fn(s, torch.zeros(5), ref_emb=torch.randn(6, DT))
    with pytest.raises(ValueError, match="NaN or Inf"):
        loss_fn(s, ref_emb=torch.full((6, DT), float("nan")))


def test_subclass_gets_the_contract():
    """A minimal loss written on the base: mean squared difference of the Gram matrices."""

    class GramLoss(DistillationLoss):
        indices_tuple_refusal = "it compares whole Gram matrices."
        uses_distance = False

        def compute_loss(self, embeddings, labels, indices_tuple, ref_emb, ref_labels):
            assert embeddings.dtype == torch.float32 and not ref_emb.requires_grad
            diff = embeddings @ embeddings.T - ref_emb @ ref_emb.T
            return self.per_example(diff.pow(2).mean(dim=1))

    s = torch.randn(4, 3).half().requires_grad_(True)
    t = torch.randn(4, 3).half().requires_grad_(True)
    loss = GramLoss(reducer=SumReducer())(s, ref_emb=t)
    sf, tf = s.detach().float(), t.detach().float()
    expected = (sf @ sf.T - tf @ tf.T).pow(2).mean(dim=1).sum()
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert t.grad is None and s.grad.dtype == torch.float16
    idx = torch.tensor([0])
    with pytest.raises(ValueError, match="GramLoss does not take an indices_tuple: it compares whole Gram"):
        GramLoss()(s, None, (idx, idx, idx), ref_emb=t)
    with pytest.raises(ValueError, match="GramLoss compares embeddings directly and uses no distance"):
        GramLoss(distance=object())
