"""``distill --compat-weight W``: a student trained so that its queries search a teacher-indexed
gallery (RKD plus W x mean ||s_i - t_i||^2 on the embeddings as each model outputs them).

References: the objective against a float64 transcription of RKD-DA and of the coordinate term
written out here; the trained students against each other on the asymmetric Recall@1 that
``evaluate --gallery-model TEACHER`` reports (a plain RKD student matches relations, not
coordinates, so its queries land at chance in the teacher's index)."""

from __future__ import annotations

import contextlib
import io
import itertools
import json

import pytest
import torch

from rkd_pml.cli import main
from rkd_pml.training import distill, train_teacher
from rkd_pml.training.config import DistillConfig
from rkd_pml.training.objective import build_objective


def huber(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x.abs() < 1, 0.5 * x * x, x.abs() - 0.5)


def rkd_distance_reference(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """RKD-D: Huber of the pairwise distances, each model's divided by its mean over pairs i != j."""
    n = len(s)
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    ds = torch.stack([(s[i] - s[j]).norm() for i, j in pairs])
    dt = torch.stack([(t[i] - t[j]).norm() for i, j in pairs])
    return huber(ds / ds.mean() - dt / dt.mean()).mean()


def rkd_angle_reference(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """RKD-A: Huber of cos(angle x_i x_j x_k) over the triplets of distinct indices, j the vertex."""
    def cos(x, i, j, k):
        a, b = x[i] - x[j], x[k] - x[j]
        return (a @ b) / (a.norm() * b.norm())

    triplets = list(itertools.permutations(range(len(s)), 3))
    return torch.stack([huber(cos(s, i, j, k) - cos(t, i, j, k)) for i, j, k in triplets]).mean()


def test_objective_is_rkd_plus_weighted_coordinate_term():
    g = torch.Generator().manual_seed(3)
    n, d = 9, 5
    student = torch.randn(n, d, generator=g, dtype=torch.float64) * 2.0
    teacher = torch.nn.functional.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    labels = torch.arange(n) % 3
    rkd = 1.0 * rkd_distance_reference(student, teacher) + 2.0 * rkd_angle_reference(student, teacher)
    coordinate = sum(((student[i] - teacher[i]) ** 2).sum() for i in range(n)) / n  # mean_i ||s_i - t_i||^2
    for compat_weight, distill_weight in ((0.7, 1.0), (3.0, 0.5)):
        cfg = DistillConfig(teacher="t", embedding_dim=d, compat_weight=compat_weight, distill_weight=distill_weight)
        cfg.validate()
        total, parts = build_objective(cfg, d, d)(student, labels, teacher)
        expected = distill_weight * rkd + compat_weight * coordinate
        assert total.dtype == torch.float64
        assert float(total) == pytest.approx(float(expected), rel=1e-10)
        assert parts["compat"] == pytest.approx(float(coordinate), rel=1e-10)
    # off by default: RKD alone, no coordinate term
    total, parts = build_objective(DistillConfig(teacher="t", embedding_dim=d), d, d)(student, labels, teacher)
    assert float(total) == pytest.approx(float(rkd), rel=1e-10) and "compat" not in parts


def test_gradient_is_that_of_the_written_out_objective():
    """The student's gradient is that of the float64 transcription; none reaches the teacher."""
    g = torch.Generator().manual_seed(4)
    student = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    objective = build_objective(DistillConfig(teacher="t", embedding_dim=4, compat_weight=2.0), 4, 4)
    objective(student, torch.arange(6) % 2, teacher)[0].backward()
    s = student.detach().clone().requires_grad_(True)
    t = teacher.detach()
    reference = rkd_distance_reference(s, t) + 2.0 * rkd_angle_reference(s, t) + 2.0 * ((s - t) ** 2).sum(dim=1).mean()
    (expected,) = torch.autograd.grad(reference, s)
    assert torch.allclose(student.grad, expected, rtol=1e-9, atol=1e-12)
    assert teacher.grad is None


@pytest.mark.parametrize("changes,needle", [
    (dict(compat_weight=-1.0), "compat_weight"),
    (dict(compat_weight=2e6), "compat_weight"),
    (dict(compat_weight=1.0, loss="triplet", teacher=None), "compat_weight (1.0)"),
])
def test_bad_values_are_refused_by_name(changes, needle):
    with pytest.raises(ValueError, match=r"^" + needle.replace("(", r"\(").replace(")", r"\)")):
        DistillConfig(**{"teacher": "t", **changes}).validate()


def test_mismatched_widths_refused_in_one_line_before_any_folder(teacher_dir, tmp_path, capsys):
    out = tmp_path / "s"
    with pytest.raises(SystemExit) as exc:
        main(["distill", "--teacher", teacher_dir, "--student", "test_resnet", "--embedding-dim", "16",
              "--compat-weight", "1", "--out", str(out), "--epochs", "1", "--iters", "2", "--batch-size", "20",
              "--m-per-class", "5", "--no-progress"])
    assert exc.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("rkd-pml: error:")]
    assert len(lines) == 1
    assert "--compat-weight" in lines[0] and "--embedding-dim (16)" in lines[0] and "(8)" in lines[0]
    assert not out.exists()


def _evaluate_against(run, gallery) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["evaluate", str(run), "--gallery-model", str(gallery), "--no-progress", "--json", "-"]) == 0
    return json.loads(out.getvalue())


def test_compatible_student_searches_the_teachers_index_better(tiny, tmp_path, capsys):
    """A teacher (resnet10t, 8-d, L2, 10 steps) and two 8-d L2 students of it trained alike for 60
    steps, RKD-DA alone and RKD-DA + 10 x the coordinate term: the second one's queries find
    their class in the teacher's index more often. The setting is recorded and kept on resume."""
    teacher = tmp_path / "teacher"
    train_teacher(model="resnet10t", embedding_dim=8, out=str(teacher), **dict(tiny, iterations_per_epoch=10))
    students = {name: tmp_path / name for name in ("rkd", "compat")}
    for name, weight in (("rkd", 0.0), ("compat", 10.0)):
        distill(teacher=str(teacher), student="test_resnet", embedding_dim=8, l2_normalize=True, compat_weight=weight,
                out=str(students[name]), **dict(tiny, iterations_per_epoch=60, lr=1e-2))
    rkd, compat = (_evaluate_against(students[name], teacher) for name in ("rkd", "compat"))
    assert compat["asymmetric_recall@1"] > rkd["asymmetric_recall@1"]
    assert json.loads((students["compat"] / "config.json").read_text())["compat_weight"] == 10.0
    assert json.loads((students["rkd"] / "config.json").read_text())["compat_weight"] == 0.0
    assert "compat" in json.loads((students["compat"] / "metrics.jsonl").read_text().splitlines()[0])
    # a resume with another --compat-weight is refused, naming the setting and both values
    capsys.readouterr()
    with pytest.raises(ValueError, match=r"compat_weight: 10\.0 -> 0\.0"):
        distill(teacher=str(teacher), student="test_resnet", embedding_dim=8, l2_normalize=True, compat_weight=0.0,
                out=str(students["compat"]), resume=True, **dict(tiny, iterations_per_epoch=60, lr=1e-2))
