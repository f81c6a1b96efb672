"""DarkRankLoss against the hard DarkRank formula written out per anchor, plus PML behaviour."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pytorch_metric_learning.distances import CosineSimilarity, LpDistance
from pytorch_metric_learning.reducers import AvgNonZeroReducer, MeanReducer, SumReducer

from rkd_pml.functional import official
from rkd_pml.losses.darkrank import DarkRankLoss




def _logsumexp(values):
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def reference_per_anchor(student, teacher, alpha=3.0, beta=3.0, list_length=4):
    """Per-anchor hard DarkRank losses, by explicit loops in float64 (Python floats)."""
    s = student.detach().double().tolist()
    t = teacher.detach().double().tolist()
    n = len(s)
    length = min(list_length, n - 1)
    out = []
    for i in range(n):
        others = [j for j in range(n) if j != i]
        t_dist = {j: math.dist(t[i], t[j]) for j in others}
        order = sorted(others, key=lambda j: (t_dist[j], j))[:length]
        scores = [-alpha * math.dist(s[i], s[j]) ** beta for j in order]
        nll = 0.0
        for k in range(length):
            nll -= scores[k] - _logsumexp(scores[k:])
        out.append(nll)
    return torch.tensor(out, dtype=torch.float64)


def batch(n=10, ds=5, dt=7, scale=0.4, dtype=torch.float64):
    return torch.randn(n, ds, dtype=dtype) * scale, torch.randn(n, dt, dtype=dtype) * scale


@pytest.mark.parametrize(
    "params", [{}, {"alpha": 1.5, "beta": 2.0, "list_length": 3}, {"alpha": 0.7, "beta": 0.5, "list_length": 6}]
)
def test_matches_loop_formula(params):
    s, t = batch()
    loss = DarkRankLoss(**params)(s, ref_emb=t)
    expected = reference_per_anchor(s, t, **params).mean()
    assert loss.dtype == torch.float64
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)


def test_matches_published_formulation():
    s, t = batch(n=16)
    torch.testing.assert_close(DarkRankLoss()(s, ref_emb=t), official.hard_darkrank(s, t), rtol=1e-8, atol=1e-10)


def test_gradient_matches_published_formulation():
    s, t = batch(n=12)
    s1 = s.clone().requires_grad_(True)
    s2 = s.clone().requires_grad_(True)
    DarkRankLoss()(s1, ref_emb=t).backward()
    official.hard_darkrank(s2, t).backward()
    torch.testing.assert_close(s1.grad, s2.grad, rtol=1e-7, atol=1e-10)


def test_gradcheck():
    s, t = batch(n=6, ds=3, dt=4)
    s.requires_grad_(True)
    loss_fn = DarkRankLoss(beta=2.5, list_length=3)
    assert torch.autograd.gradcheck(lambda x: loss_fn(x, ref_emb=t), (s,))


def test_normalize_embeddings_option():
    s, t = batch()
    loss = DarkRankLoss(distance=LpDistance(normalize_embeddings=True))(s, ref_emb=t)
    unit = lambda x: x / x.norm(dim=1, keepdim=True)  # noqa: E731
    torch.testing.assert_close(loss, reference_per_anchor(unit(s), unit(t)).mean(), rtol=1e-10, atol=1e-12)


def test_float32_and_half_inputs():
    s, t = batch(dtype=torch.float32)
    loss32 = DarkRankLoss()(s, ref_emb=t)
    assert loss32.dtype == torch.float32
    torch.testing.assert_close(loss32.double(), reference_per_anchor(s, t).mean(), rtol=1e-5, atol=1e-6)
    sh = s.half().requires_grad_(True)
    loss16 = DarkRankLoss()(sh, ref_emb=t.half())
    assert loss16.dtype == torch.float32 and torch.isfinite(loss16)
    loss16.backward()
    assert torch.isfinite(sh.grad).all()


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_small_batches_shorten_the_list(n):
    s, t = batch(n=n)
    loss = DarkRankLoss(list_length=4)(s, ref_emb=t)
    torch.testing.assert_close(loss, reference_per_anchor(s, t, list_length=4).mean(), rtol=1e-10, atol=1e-12)
    if n == 2:
        assert loss.item() == 0.0


def test_single_example_gives_zero_that_backpropagates():
    s = torch.randn(1, 5, requires_grad=True)
    loss = DarkRankLoss()(s, ref_emb=torch.randn(1, 3))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(s.grad, torch.zeros_like(s))


def test_reducers_get_per_anchor_losses():
    s, t = batch(n=9)
    per_anchor = reference_per_anchor(s, t)
    for reducer, expected in [
        (MeanReducer(), per_anchor.mean()),
        (SumReducer(), per_anchor.sum()),
        (AvgNonZeroReducer(), per_anchor[per_anchor > 0].mean()),
    ]:
        loss = DarkRankLoss(reducer=reducer)(s, ref_emb=t)
        torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)


def test_avg_non_zero_with_all_losses_zero():
    # N = 2: every list has one item, so every anchor's loss is exactly 0 and AvgNonZero
    # falls back to PML's zero loss, which still back-propagates.
    s, t = batch(n=2)
    loss = DarkRankLoss(reducer=AvgNonZeroReducer())(s.requires_grad_(True), ref_emb=t)
    assert loss.item() == 0.0
    loss.backward()


@pytest.mark.parametrize("beta", [3.0, 1.0, 0.5])
def test_duplicates_give_finite_gradients(beta):
    s, t = batch(n=8, dtype=torch.float32)
    s[3] = s[1]
    s[5] = s[1]
    t[3] = t[1]
    s.requires_grad_(True)
    loss = DarkRankLoss(beta=beta)(s, ref_emb=t)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()


def test_fully_collapsed_student_and_teacher_stay_finite():
    s = torch.ones(6, 4, requires_grad=True)
    loss = DarkRankLoss()(s, ref_emb=torch.ones(6, 3))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()


def test_extreme_scales_stay_finite():
    for scale in (1e-20, 1e15, 1e30):
        s, t = batch(n=6, dtype=torch.float32, scale=scale)
        s.requires_grad_(True)
        loss = DarkRankLoss()(s, ref_emb=t)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(s.grad).all(), scale


def test_teacher_gets_no_gradient():
    s, t = batch()
    s.requires_grad_(True)
    t.requires_grad_(True)
    DarkRankLoss()(s, ref_emb=t).backward()
    assert t.grad is None and s.grad is not None


def test_labels_are_accepted_and_ignored():
    s, t = batch()
    labels = torch.arange(10) % 3
    torch.testing.assert_close(DarkRankLoss()(s, labels, ref_emb=t), DarkRankLoss()(s, ref_emb=t))


def test_errors():
    s, t = batch()
    with pytest.raises(ValueError, match="teacher"):
        DarkRankLoss()(s)
    with pytest.raises(ValueError, match="one row per student"):
        DarkRankLoss()(s, ref_emb=t[:-1])
    idx = torch.arange(3)
    with pytest.raises(ValueError, match="does not take an indices_tuple"):
        DarkRankLoss()(s, torch.zeros(10), (idx, idx, idx), ref_emb=t)
    with pytest.raises(ValueError, match="labels"):
        DarkRankLoss()(s, torch.zeros(9), ref_emb=t)
    with pytest.raises(ValueError, match="Euclidean"):
        DarkRankLoss(distance=CosineSimilarity())
    with pytest.raises(ValueError, match="Euclidean"):
        DarkRankLoss(distance=LpDistance(power=2))
    for bad in ({"alpha": 0}, {"beta": -1.0}, {"beta": float("nan")}, {"list_length": 0}, {"list_length": 2.5}):
        with pytest.raises(ValueError):
            DarkRankLoss(**bad)


def test_training_reduces_loss():
    torch.manual_seed(1)
    x = torch.randn(32, 12)
    teacher = torch.randn(32, 16)
    student = torch.nn.Linear(12, 6)
    loss_fn = DarkRankLoss(distance=LpDistance(normalize_embeddings=True))
    opt = torch.optim.Adam(student.parameters(), lr=0.05)
    losses = []
    for _ in range(100):
        loss = loss_fn(student(x), ref_emb=teacher)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10


@settings(max_examples=25, deadline=None)
@given(
    data=st.data(),
    n=st.integers(1, 7),
    beta=st.sampled_from([0.5, 1.0, 3.0]),
)
def test_property_finite_and_non_negative(data, n, beta):
    # Values on a coarse grid: many duplicate rows and tied teacher distances.
    grid = st.integers(-2, 2)
    s = torch.tensor(data.draw(st.lists(st.lists(grid, min_size=3, max_size=3), min_size=n, max_size=n)))
    t = torch.tensor(data.draw(st.lists(st.lists(grid, min_size=2, max_size=2), min_size=n, max_size=n)))
    s = (0.5 * s.float()).requires_grad_(True)
    loss = DarkRankLoss(beta=beta)(s, ref_emb=t.float())
    loss.backward()
    assert torch.isfinite(loss) and loss.item() >= 0.0
    assert torch.isfinite(s.grad).all()
