"""Smoke test of the reproduction study (benchmarks/reproduce.py) at tiny size.

The study runs on the bundled digits data (always available) with a few iterations, one
seed, one embedding size and two methods; the test checks the records, the rendered report,
and that starting the same command again trains nothing new.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    path = ROOT / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reproduce():
    return _load("reproduce")


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines() if line.strip()]


def _snapshot(out: Path) -> dict[str, float]:
    """Modification times of every file the training jobs wrote."""
    return {str(p): p.stat().st_mtime_ns for p in (out / "runs").rglob("*") if p.is_file()}


@pytest.mark.timeout(180)
def test_study_records_report_and_resume(reproduce, tmp_path, capsys):
    out = tmp_path / "study"
    md, png = tmp_path / "report" / "RESULTS.md", tmp_path / "report" / "figure.png"
    argv = [
        "--quick", "--dataset", "digits", "--out", str(out), "--seeds", "0", "--sizes", "8",
        "--methods", "triplet,rkd-da", "--iterations", "4", "--eval-every", "2",
        "--teacher-iterations", "2", "--teacher-eval-every", "2", "--batch-size", "16",
        "--workers", "1", "--render-every", "0", "--report-md", str(md), "--report-png", str(png),
    ]

    assert reproduce.main(argv) == 0
    first = capsys.readouterr().out
    records = _records(out)
    keys = {r["key"] for r in records}
    assert keys == {"teacher-s0", "triplet-l2-d8-s0", "triplet-nol2-d8-s0", "rkd-da-l2-d8-s0", "rkd-da-nol2-d8-s0"}
    for r in records:
        assert r["trained"] is True
        sel, best = r["selected"]["test"]["recall@1"], r["best_on_test"]["test"]["recall@1"]
        assert 0.0 <= sel <= best <= 1.0
        assert set(r["selected"]["test"]) >= {"recall@1", "recall@2", "recall@4", "recall@8"}
        assert r["selected"]["val"] is not None  # the epoch was chosen on the validation split
    students = [r for r in records if r["kind"] == "student"]
    assert all(r["iterations"] == 4 and [c[0] for c in r["curve"]] == [2, 4] for r in students)
    assert {r["teacher"] for r in students if r["method"] == "rkd-da"} == {"teacher-s0"}
    assert "[  5/5]" in first and "ETA" in first

    study = json.loads((out / "study.json").read_text())
    assert study["recipe"]["iterations"] == 4 and len(study["sessions"]) == 1
    assert study["sessions"][0]["machine"]["threads_per_worker"] == 1

    text = md.read_text()
    assert png.is_file() and png.stat().st_size > 0
    for expected in ("Recall@1 (%)", "d = 8", "Triplet (no teacher)", "RKD-DA", "Teacher (triplet)",
                     "best-on-test", "validation", "The paper's claims, checked", "figure.png", "Wall time"):
        assert expected in text, expected
    assert "–" not in text.split("## Recall@K")[0].split("Model selection")[1]  # every planned cell filled

    # the same command again: nothing new is trained, no run file is touched
    before = _snapshot(out)
    assert reproduce.main(argv) == 0
    second = capsys.readouterr().out
    assert "nothing to train" in second
    assert len(_records(out)) == 5
    assert _snapshot(out) == before
    assert len(json.loads((out / "study.json").read_text())["sessions"]) == 2

    # a run that finished but was not recorded (stopped in between) is collected, not retrained
    lines = (out / "records.jsonl").read_text().splitlines()
    (out / "records.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    assert reproduce.main(argv) == 0
    capsys.readouterr()
    recovered = {r["key"]: r for r in _records(out)}
    assert len(recovered) == 5
    assert recovered[json.loads(lines[-1])["key"]]["trained"] is False
    assert _snapshot(out) == before


def test_other_recipe_in_the_same_directory_is_refused(reproduce, tmp_path):
    out = tmp_path / "study"
    reproduce.open_study(out, reproduce.Recipe(dataset="digits", iterations=4, eval_every=2))
    with pytest.raises(SystemExit, match="another recipe"):
        reproduce.open_study(out, reproduce.Recipe(dataset="digits", iterations=8, eval_every=2))


def test_plan_covers_the_study(reproduce):
    recipe = reproduce.Recipe()
    jobs = reproduce.plan_jobs(recipe, (0, 1, 2), (16, 32, 64, 128), (*reproduce.STUDENT_METHODS, "self"),
                               (False, True))
    kinds = [j.group for j in jobs]
    assert len(jobs) == 1 + 3 + 6 * 2 * 4 * 3  # one shared teacher, self-distillation per seed
    assert kinds.count("teacher") == 1 and kinds.count("self") == 3 and kinds.count("baseline") == 24
    assert len({j.key for j in jobs}) == len(jobs)
    per_seed = reproduce.plan_jobs(reproduce.Recipe(teacher_per_seed=True), (0, 1), (16,), ("rkd-da",), (False,))
    assert [j.teacher_key for j in per_seed if j.kind == "student"] == ["teacher-s0", "teacher-s1"]


def test_self_distillation_at_the_teachers_budget_is_a_separate_variant(reproduce, tmp_path):
    recipe = reproduce.Recipe()
    assert "self-long" not in reproduce._methods("all")  # the default study is unchanged
    jobs = reproduce.plan_jobs(recipe, (0, 1), (16,), reproduce._methods("self-long"), (False, True))
    assert [j.key for j in jobs] == ["teacher-s0", "self-long-d512-s0", "self-long-d512-s1"]
    teacher, student = (reproduce.job_config(j, recipe, tmp_path) for j in jobs[:2])
    for name in ("epochs", "iterations_per_epoch", "lr", "lr_milestones", "lr_gamma", "eval_every", "embedding_dim"):
        assert getattr(student, name) == getattr(teacher, name), name
    assert (student.student, student.l2_normalize, student.loss) == (recipe.teacher_model, False, "rkd")
    command = "python benchmarks/reproduce.py --out study --methods self-long --seeds 0,1"
    assert reproduce.planned_keys(command, reproduce.asdict(recipe)) == [j.key for j in jobs]
