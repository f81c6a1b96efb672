"""RKD losses against the official formulation: exact factors, float64, loss and gradient."""

import pytest
import torch

from rkd_pml import RKDAngleLoss, RKDDistanceLoss, RKDLoss
from rkd_pml.functional import official

TOL = 1e-10


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _loss_and_grad(fn, student, teacher):
    s = student.clone().requires_grad_(True)
    loss = fn(s, teacher)
    (grad,) = torch.autograd.grad(loss, s)
    return loss.detach(), grad


@pytest.mark.parametrize("n,ds,dt", [(3, 2, 2), (7, 4, 9), (16, 8, 5), (33, 16, 64)])
def test_distance_is_official_times_n_over_n_minus_1(n, ds, dt):
    student, teacher = torch.randn(n, ds, dtype=torch.float64), torch.randn(n, dt, dtype=torch.float64) * 3
    ours, g_ours = _loss_and_grad(lambda s, t: RKDDistanceLoss()(s, ref_emb=t), student, teacher)
    ref, g_ref = _loss_and_grad(official.rkd_distance, student, teacher)
    factor = n / (n - 1)
    assert _rel_err(ours, ref * factor) < TOL
    assert _rel_err(g_ours, g_ref * factor) < TOL


@pytest.mark.parametrize("n,ds,dt", [(3, 2, 2), (7, 4, 9), (16, 8, 5), (33, 16, 64)])
def test_angle_is_official_times_n2_over_n1_n2(n, ds, dt):
    student, teacher = torch.randn(n, ds, dtype=torch.float64), torch.randn(n, dt, dtype=torch.float64)
    ours, g_ours = _loss_and_grad(lambda s, t: RKDAngleLoss()(s, ref_emb=t), student, teacher)
    ref, g_ref = _loss_and_grad(official.rkd_angle, student, teacher)
    factor = n * n / ((n - 1) * (n - 2))
    assert _rel_err(ours, ref * factor) < TOL
    assert _rel_err(g_ours, g_ref * factor) < TOL


def test_weighted_sum_matches_official_terms():
    n = 12
    student, teacher = torch.randn(n, 6, dtype=torch.float64), torch.randn(n, 10, dtype=torch.float64)
    fn = RKDLoss(distance_weight=1.0, angle_weight=2.0)
    ours, g_ours = _loss_and_grad(lambda s, t: fn(s, ref_emb=t), student, teacher)

    def reference(s, t):
        return official.rkd_distance(s, t) * n / (n - 1) + 2.0 * official.rkd_angle(
            s, t
        ) * n * n / ((n - 1) * (n - 2))

    ref, g_ref = _loss_and_grad(reference, student, teacher)
    assert _rel_err(ours, ref) < TOL
    assert _rel_err(g_ours, g_ref) < TOL


@pytest.mark.parametrize("loss_cls", [RKDDistanceLoss, RKDAngleLoss, RKDLoss])
def test_gradcheck_float64(loss_cls):
    teacher = torch.randn(6, 5, dtype=torch.float64)
    student = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    fn = loss_cls()
    assert torch.autograd.gradcheck(lambda s: fn(s, ref_emb=teacher), (student,), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("loss_cls", [RKDDistanceLoss, RKDAngleLoss, RKDLoss])
def test_teacher_never_receives_gradient(loss_cls):
    teacher = torch.randn(8, 5, requires_grad=True)
    student = torch.randn(8, 3, requires_grad=True)
    loss_cls()(student, ref_emb=teacher).backward()
    assert teacher.grad is None
    assert student.grad is not None and torch.isfinite(student.grad).all()


# ------------------------------------------------------------- exact duplicate rows


def _duplicate_pairs(x: torch.Tensor) -> set:
    n = len(x)
    return {(a, b) for a in range(n) for b in range(n) if a != b and torch.equal(x[a], x[b])}


def _with_duplicates(where: str, n: int = 10):
    s, t = torch.randn(n, 4, dtype=torch.float64), torch.randn(n, 6, dtype=torch.float64)
    if where in ("student", "both"):
        s[1], s[7], s[8] = s[0], s[4], s[4]
    if where in ("teacher", "both"):
        t[1], t[7] = t[0], t[4]
    if where == "different":
        s[1], t[2] = s[0], t[0]
    return s, t


@pytest.mark.parametrize("where", ["student", "teacher", "both", "different"])
def test_angle_with_exact_duplicates_differs_by_the_official_b_equals_c_entries(where):
    s, t = _with_duplicates(where)
    n = len(s)
    ours, g_ours = _loss_and_grad(lambda x, y: RKDAngleLoss()(x, ref_emb=y), s, t)
    ref, g_ref = _loss_and_grad(official.rkd_angle, s, t)
    # Entries (a, b, b) of the official mean: cosine 1, or 0 where b duplicates a; a pair
    # that is a duplicate in one model only adds a Huber error of exactly 1/2.
    k = len(_duplicate_pairs(s) ^ _duplicate_pairs(t))
    assert k > 0
    factor = (n - 1) * (n - 2) / n**2
    assert float(ref) == pytest.approx(factor * float(ours) + k / (2 * n**3), rel=1e-12)
    assert float(ref) != pytest.approx(factor * float(ours), rel=1e-3)
    if where == "teacher":  # the constant has no gradient: the gradients agree
        assert _rel_err(g_ref, factor * g_ours) < TOL
    else:  # F.normalize's 1 / eps at the student's zero differences
        assert float(g_ref.abs().max()) > 1e6
        assert float(g_ours.abs().max()) < 10.0


@pytest.mark.parametrize("where", ["student", "teacher", "both"])
def test_distance_with_exact_duplicates_is_close_to_the_official_identity(where):
    s, t = _with_duplicates(where)
    n = len(s)
    ours, g_ours = _loss_and_grad(lambda x, y: RKDDistanceLoss()(x, ref_emb=y), s, t)
    ref, g_ref = _loss_and_grad(official.rkd_distance, s, t)
    # the official clamp gives a duplicate pair a distance of 1e-6 instead of 0
    assert abs(float(ref) - float(ours) * (n - 1) / n) < 1e-5 * float(ref)
    assert _rel_err(g_ref, g_ours * (n - 1) / n) < 1e-5
