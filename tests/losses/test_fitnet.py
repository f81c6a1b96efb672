"""FitNetEmbeddingLoss against the regression written out element by element, plus PML behaviour."""

import pytest
import torch
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.reducers import AvgNonZeroReducer, MeanReducer, SumReducer

from rkd_pml.losses.fitnet import FitNetEmbeddingLoss




def reference_per_example(student, teacher, weight):
    """mean_k (sum_j W[k, j] s[i, j] - t[i, k]) ** 2 for every row i, by explicit loops."""
    s, t, w = student.double().tolist(), teacher.double().tolist(), weight.detach().double().tolist()
    out = []
    for i in range(len(s)):
        errors = []
        for k in range(len(t[0])):
            mapped = sum(w[k][j] * s[i][j] for j in range(len(s[0])))
            errors.append((mapped - t[i][k]) ** 2)
        out.append(sum(errors) / len(errors))
    return torch.tensor(out, dtype=torch.float64)


def make(n=8, ds=5, dt=7, dtype=torch.float64):
    loss_fn = FitNetEmbeddingLoss(ds, dt)
    with torch.no_grad():  # a larger map than the initial one, so the test is not trivial
        loss_fn.regressor.weight.normal_()
    return loss_fn.to(dtype), torch.randn(n, ds, dtype=dtype), torch.randn(n, dt, dtype=dtype)


def test_initialisation_and_parameters():
    loss_fn = FitNetEmbeddingLoss(5, 7)
    w = loss_fn.regressor.weight
    top = float(w.detach().abs().max())
    assert w.shape == (7, 5) and loss_fn.regressor.bias is None
    assert 0.001 < top <= 0.005
    params = list(loss_fn.parameters())
    assert len(params) == 1 and params[0] is w
    assert set(loss_fn.state_dict()) == {"regressor.weight"}


def test_matches_element_formula():
    loss_fn, s, t = make()
    loss = loss_fn(s, ref_emb=t)
    expected = reference_per_example(s, t, loss_fn.regressor.weight).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)
    # Mean over rows of per-row means is the plain mean squared error over all entries.
    mse = torch.nn.functional.mse_loss(s @ loss_fn.regressor.weight.T, t)
    torch.testing.assert_close(loss, mse, rtol=1e-10, atol=1e-12)


def test_float32_weights_with_half_and_double_inputs():
    loss_fn = FitNetEmbeddingLoss(5, 7)
    s, t = torch.randn(8, 5), torch.randn(8, 7)
    expected = reference_per_example(s, t, loss_fn.regressor.weight).mean()
    loss32 = loss_fn(s, ref_emb=t)
    assert loss32.dtype == torch.float32
    torch.testing.assert_close(loss32.double(), expected, rtol=1e-5, atol=1e-6)
    loss64 = loss_fn(s.double(), ref_emb=t.double())
    assert loss64.dtype == torch.float64
    sh = s.half().requires_grad_(True)
    loss16 = loss_fn(sh, ref_emb=t.half())
    assert loss16.dtype == torch.float32 and torch.isfinite(loss16)
    loss16.backward()
    assert torch.isfinite(sh.grad).all()


def test_reducers_get_per_example_losses():
    loss_fn, s, t = make()
    s[2] = 0.0  # one row with exactly zero error
    t[2] = 0.0
    per_row = reference_per_example(s, t, loss_fn.regressor.weight)
    assert per_row[2] == 0.0
    for reducer, expected in [
        (MeanReducer(), per_row.mean()),
        (SumReducer(), per_row.sum()),
        (AvgNonZeroReducer(), per_row[per_row > 0].mean()),
    ]:
        loss_fn.reducer = reducer
        torch.testing.assert_close(loss_fn(s, ref_emb=t), expected, rtol=1e-10, atol=1e-12)


def test_gradients_duplicates_and_teacher():
    loss_fn, s, t = make(dtype=torch.float32)
    s[3] = s[1]
    t[3] = t[1]
    s.requires_grad_(True)
    t.requires_grad_(True)
    loss_fn(s, ref_emb=t).backward()
    assert torch.isfinite(s.grad).all()
    assert torch.isfinite(loss_fn.regressor.weight.grad).all()
    assert t.grad is None


def test_gradcheck():
    loss_fn, s, t = make(n=4, ds=3, dt=2)
    s.requires_grad_(True)
    w = loss_fn.regressor.weight
    assert torch.autograd.gradcheck(lambda x, _w: loss_fn(x, ref_emb=t), (s, w))


def test_optimizer_over_student_and_loss_updates_the_map():
    torch.manual_seed(2)
    student = torch.nn.Linear(6, 4)
    loss_fn = FitNetEmbeddingLoss(4, 9)
    opt = torch.optim.SGD([*student.parameters(), *loss_fn.parameters()], lr=0.1)
    before_map = loss_fn.regressor.weight.detach().clone()
    before_student = student.weight.detach().clone()
    loss = loss_fn(student(torch.randn(16, 6)), ref_emb=torch.randn(16, 9))
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert not torch.equal(loss_fn.regressor.weight.detach(), before_map)
    assert not torch.equal(student.weight.detach(), before_student)


def _train(include_map: bool, steps: int = 100) -> list[float]:
    torch.manual_seed(1)
    x = torch.randn(32, 12)
    with torch.no_grad():  # a fixed random teacher
        teacher = torch.nn.Linear(12, 16)(x)
    student = torch.nn.Linear(12, 6)
    loss_fn = FitNetEmbeddingLoss(6, 16)
    params = [*student.parameters()] + ([*loss_fn.parameters()] if include_map else [])
    opt = torch.optim.Adam(params, lr=0.02)
    losses = []
    for _ in range(steps):
        loss = loss_fn(student(x), ref_emb=teacher)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_training_reduces_loss():
    losses = _train(include_map=True)
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10
    # Left out of the optimizer, the map stays at its tiny initialisation and the
    # student alone cannot fit the teacher.
    frozen = _train(include_map=False)
    assert sum(frozen[-10:]) / 10 > 3 * sum(losses[-10:]) / 10


def test_labels_are_accepted_and_ignored():
    loss_fn, s, t = make()
    torch.testing.assert_close(loss_fn(s, torch.arange(8) % 2, ref_emb=t), loss_fn(s, ref_emb=t))


def test_errors():
    loss_fn, s, t = make()
    with pytest.raises(ValueError, match="teacher"):
        loss_fn(s)
    with pytest.raises(ValueError, match="one row per student"):
        loss_fn(s, ref_emb=t[:-1])
    with pytest.raises(ValueError, match="student_dim=5"):
        loss_fn(torch.randn(8, 4, dtype=torch.float64), ref_emb=t)
    with pytest.raises(ValueError, match="teacher_dim=7"):
        loss_fn(s, ref_emb=torch.randn(8, 6, dtype=torch.float64))
    idx = torch.arange(3)
    with pytest.raises(ValueError, match="does not take an indices_tuple"):
        loss_fn(s, torch.zeros(8), (idx, idx, idx), ref_emb=t)
    with pytest.raises(ValueError, match="labels"):
        loss_fn(s, torch.zeros(7), ref_emb=t)
    with pytest.raises(ValueError, match="no distance"):
        FitNetEmbeddingLoss(5, 7, distance=LpDistance())
    for bad in ((0, 7), (5, -1), (2.5, 7), (True, 7)):
        with pytest.raises(ValueError):
            FitNetEmbeddingLoss(*bad)
