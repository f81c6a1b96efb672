"""RKD alone moves a student's relational structure towards a fixed teacher's."""

import torch

from rkd_pml import RKDLoss


def _relational_gap(student: torch.Tensor, teacher: torch.Tensor) -> float:
    """Mean absolute difference of mean-normalised pairwise distances (independent of the loss)."""
    ds, dt = torch.cdist(student, student), torch.cdist(teacher, teacher)
    n = len(student)
    off = ~torch.eye(n, dtype=torch.bool)
    return float((ds[off] / ds[off].mean() - dt[off] / dt[off].mean()).abs().mean())


def test_student_learns_a_random_teachers_relations():
    torch.manual_seed(0)
    inputs = torch.randn(64, 16)
    teacher = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 24))
    student = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8))
    with torch.no_grad():
        target = teacher(inputs)
    loss_fn = RKDLoss()
    opt = torch.optim.Adam(student.parameters(), lr=3e-3)
    first = float(loss_fn(student(inputs), ref_emb=target).detach())
    gap_before = _relational_gap(student(inputs).detach(), target)
    for _ in range(300):
        opt.zero_grad()
        loss = loss_fn(student(inputs), ref_emb=target)
        loss.backward()
        opt.step()
    last = float(loss.detach())
    assert last < first / 5
    assert _relational_gap(student(inputs).detach(), target) < gap_before / 2
