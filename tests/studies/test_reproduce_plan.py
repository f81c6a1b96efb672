"""Tests of the reproduction study's planning and records without training: the dry run's
estimates of the full and the reduced grid, the jobs' plan and schedules, the curves' budget rule,
the refusals, and the reports of the recorded studies. The end-to-end runs: test_reproduce_smoke.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "studies" / "reproduction" / "results"


def test_dry_run_estimates_both_grids_and_says_which_runs(reproduce, tiny_zip, tmp_path, capsys):
    out = tmp_path / "dry"
    common = ["--root", str(tiny_zip), "--out", str(out), "--dry-run"]
    assert reproduce.main(common) == 0
    text = capsys.readouterr().out
    assert "full grid (d = 16, 32, 64, 128" in text and "198 runs" in text
    assert "reduced grid (d = 16, 64" in text and "66 runs" in text
    assert "grid that runs: reduced (the full grid's estimate" in text and "exceeds 6 h" in text
    assert "self-distillation: 4800 iterations" in text and "teacher:  2400 iterations" in text
    assert not out.exists()  # a dry run writes nothing

    assert reproduce.main([*common, "--grid-limit-hours", "1000", "--fast", "--budget-scale", "2", "--list"]) == 0
    text = capsys.readouterr().out
    assert "grid that runs: full" in text and "precision bf16, channels-last" in text
    assert "students: 240 iterations" in text and "teacher:  1600 iterations" in text
    assert "todo  rkd-da-fitnet-l2-d128-s2" in text and "todo  teacher-s2" in text

    assert reproduce.main(["--curves", *common]) == 0
    text = capsys.readouterr().out
    assert "curves: 9 runs" in text and "rkd-da-triplet-nol2-d64-s0" in text and "constant lr" in text


def test_other_recipe_in_the_same_directory_is_refused(reproduce, tmp_path):
    out = tmp_path / "study"
    reproduce.open_study(out, reproduce.Recipe(dataset="digits", iterations=4, evals=2))
    with pytest.raises(SystemExit, match="another recipe"):
        reproduce.open_study(out, reproduce.Recipe(dataset="digits", iterations=8, evals=2))


def test_plan_covers_the_study(reproduce):
    recipe = reproduce.Recipe()
    full = reproduce.plan_jobs(recipe, (0, 1, 2), **{k: v for k, v in reproduce.GRIDS["full"].items()})
    groups = [j.group for j in full]
    assert len(full) == 3 + 3 + 8 * 2 * 4 * 3  # a teacher and a self-distilled student per seed
    assert groups.count("teacher") == 3 and groups.count("self") == 3 and groups.count("baseline") == 24
    assert len({j.key for j in full}) == len(full)
    assert {j.teacher_key for j in full if j.seed == 1 and j.teacher_key} == {"teacher-s1"}
    reduced = reproduce.plan_jobs(recipe, (0, 1, 2), **reproduce.GRIDS["reduced"])
    assert len(reduced) == 3 + 3 + (2 * 2 + 6) * 2 * 3
    l2 = {(j.method, j.l2) for j in reduced if j.kind == "student" and j.method != "self"}
    assert l2 == {("triplet", True), ("triplet", False), ("rkd-da", True), ("rkd-da", False), ("fitnet", True),
                  ("darkrank", True), ("rkd-d", False), ("rkd-a", False), ("rkd-da-triplet", False),
                  ("rkd-da-fitnet", False)}
    shared = reproduce.plan_jobs(reproduce.Recipe(teacher_per_seed=False), (0, 1), (16,), ("rkd-da",), (False,))
    assert [j.teacher_key for j in shared if j.kind == "student"] == ["teacher-s0", "teacher-s0"]


def test_schedules_self_distillation_and_combined_losses(reproduce, tmp_path):
    recipe = reproduce.Recipe()
    assert "self-long" not in reproduce._methods("all")
    jobs = reproduce.plan_jobs(recipe, (0,), (64,), ("self", "self-long", "rkd-da-triplet", "rkd-da-fitnet"), (False,))
    cfg = {j.method: reproduce.job_config(j, recipe, tmp_path) for j in jobs}
    teacher = cfg["teacher"]
    schedule = (teacher.epochs, teacher.iterations_per_epoch, teacher.lr_milestones, teacher.lr_gamma)
    assert schedule == (40, 60, (25, 30, 35), 0.5)
    student = cfg["rkd-da-triplet"]
    assert student.epochs * student.iterations_per_epoch == recipe.iterations
    assert (student.epochs, student.lr_milestones, student.lr_gamma) == (20, (10, 15), 0.1)  # x0.1 after 50 % and 75 %
    assert (student.loss, student.student_metric_loss) == ("rkd", "triplet")
    assert cfg["rkd-da-fitnet"].loss == "rkd-fitnet"
    selfd = cfg["self"]
    assert selfd.epochs * selfd.iterations_per_epoch == 2 * recipe.teacher_iterations  # the paper's ratio
    assert (selfd.student, selfd.embedding_dim, selfd.l2_normalize) == ("resnet10t", 512, False)
    assert selfd.lr_milestones == (10, 15)
    long = cfg["self-long"]
    for name in ("epochs", "iterations_per_epoch", "lr", "lr_milestones", "lr_gamma"):
        assert getattr(long, name) == getattr(teacher, name), name
    fast, _ = reproduce.recipe_from_args(reproduce.build_parser().parse_args(["--dataset", "digits", "--fast"]))
    assert (fast.precision, fast.channels_last) == ("bf16", True)

    from rkd_pml.losses.registry import build_distillation_loss, distillation_loss_names

    assert "rkd-fitnet" in distillation_loss_names()
    loss = build_distillation_loss("rkd-fitnet", student.loss_options, 8, 16)
    s, t = torch.randn(12, 8, requires_grad=True), torch.nn.functional.normalize(torch.randn(12, 16), dim=1)
    value = loss(s, None, None, ref_emb=t)
    value.backward()
    assert value.item() > 0 and s.grad.abs().sum() > 0 and loss.fitnet.regressor.weight.grad is not None
    assert any(p is loss.fitnet.regressor.weight for p in loss.parameters())  # reaches the optimizer


def test_plateau_rule_and_budgets(reproduce, reproduction_report, tmp_path):
    from studies.reproduction import curves as study_plan

    its = list(range(100, 4100, 100))
    rising = [[i, min(0.9, 0.5 + 0.4 * i / 1500), 0.5] for i in its]  # flat from 1500 on
    p = study_plan.plateau(rising, points=0.5, smooth=1)
    assert p["converged"] and 1300 <= p["iteration"] <= 1500
    never = [[i, 0.1 + 0.2 * i / 4000, 0.1] for i in its]
    assert not study_plan.plateau(never, smooth=1)["converged"]

    study_recipe = reproduce.Recipe(dataset="digits")
    curve = study_plan.curve_recipe(study_recipe, scale=20, teacher_scale=5)
    assert (curve.iterations, curve.teacher_iterations, curve.lr_drops, curve.teacher_lr_drops) == (2400, 4000, (), ())
    out = tmp_path / "curves"
    reproduce.open_study(out, curve, {"mode": "curves", "study_recipe": study_recipe.to_dict(), "curves": {"dim": 64}})
    s_its = list(range(60, 2460, 60))
    recs = [{"key": "teacher-s0", "kind": "teacher", "method": "teacher", "l2": True, "curve": rising}]
    for method, flat_at in (("triplet", 600), ("rkd-da", 900)):
        recs.append({"key": f"{method}-nol2-d64-s0", "kind": "student", "method": method, "l2": False,
                     "curve": [[i, min(0.8, 0.4 + 0.4 * i / flat_at), 0.4] for i in s_its]})
    for r in recs:
        reproduce.append_record(out, r)
    budgets = reproduction_report.render_curves(out, rule="first-drop", points=0.5, smooth=1)
    assert (out / "budgets.json").is_file() and (out / "curves.png").stat().st_size > 0 and (out / "CURVES.md").is_file()
    # teacher: plateau near 1500 / first drop 0.625, rounded up to 40 epochs; students: the slower method, / 0.5
    assert budgets["teacher_iterations"] % 40 == 0 and 2000 <= budgets["teacher_iterations"] <= 2440
    assert budgets["students_by_method"]["rkd-da"] > budgets["students_by_method"]["triplet"]
    assert budgets["iterations"] == budgets["students_by_method"]["rkd-da"] and 1600 <= budgets["iterations"] <= 1800
    assert budgets["self_iterations"] == 2 * budgets["teacher_iterations"]
    docs = tmp_path / "docs"
    assert reproduction_report.main(["--out", str(out), "--docs", str(docs), "--plateau-smooth", "1"]) == 0
    assert (docs / "curves.png").stat().st_size > 0 and f"Records: `{out}`" in (docs / "CURVES.md").read_text()
    assert not (docs / "budgets.json").exists() and (out / "budgets.json").is_file()

    args = reproduce.build_parser().parse_args(["--dataset", "digits", "--budgets", str(out / "budgets.json")])
    recipe, source = reproduce.recipe_from_args(args)
    assert (recipe.iterations, recipe.teacher_iterations) == (budgets["iterations"], budgets["teacher_iterations"])
    assert source["kind"] == "curves"


def test_the_first_studys_report_still_renders(reproduction_report, tmp_path):
    report = reproduction_report
    study = RESULTS / "reproduce"
    if not (study / "records.jsonl").is_file():
        pytest.skip("the first study's records are not in this checkout")
    md = report.render_report(study, tmp_path / "RESULTS.md", tmp_path / "fig.png")
    text = md.read_text()
    assert "Status: complete: all 151 planned runs recorded." in text
    assert "every student trains 120 iterations" in text and "RKD-DA + FitNet" not in text
    assert not (study / "RESULTS.md").exists()


def test_importing_the_studies_registers_no_loss():
    import subprocess
    import sys

    code = ("from rkd_pml.losses.registry import DISTILLATION_LOSSES as L; before = dict(L); "
            "import studies.reproduction.__main__, studies.reproduction.report, studies.classification.__main__, "
            "studies.fewshot.__main__, studies.speed_quality.__main__; assert L == before, set(L) ^ set(before)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_list_without_dry_run_is_refused(reproduce, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        reproduce.main(["--quick", "--out", str(tmp_path / "s"), "--list"])
    assert exc.value.code == 2
    assert "--list" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_a_continued_study_keeps_why_and_how_long_its_grid_was_chosen(reproduce):
    from studies.reproduction.cli import build_parser
    from studies.reproduction.cost import CostModel
    from studies.reproduction.selection import choose_grid, command_narrowing

    recipe = reproduce.Recipe()
    args = build_parser().parse_args(["--sizes", "64"])
    started = {"name": "reduced", "reason": "the full grid's estimate (18.7 h) exceeds 6 h",
               "estimates": {"full": {"runs": 198, "hours": 18.7}, "reduced": {"runs": 66, "hours": 7.0}},
               "workers": 2}
    second = choose_grid(args, recipe, CostModel(recipe), 2, {"grid": started})
    assert second["name"] == "reduced"
    assert second["first"] == {k: started[k] for k in ("reason", "estimates", "workers")}
    assert second["estimates"]["reduced"]["runs"] == 36  # this command's (narrowed) selection
    third = choose_grid(args, recipe, CostModel(recipe), 2, {"grid": second})
    assert third["first"] == second["first"]
    assert third["reason"].count("started with") == 1
    assert command_narrowing("python benchmarks/reproduce.py --fast --sizes 64 --workers 2") == "--sizes 64"
    assert command_narrowing("python benchmarks/reproduce.py --fast") is None
    assert command_narrowing("python -m studies.reproduction --fast --sizes 64 --workers 2") == "--sizes 64"
    assert command_narrowing("python -m studies.reproduction --fast") is None


def test_the_first_study_is_the_learning_speed_table(reproduction_report, tmp_path):
    report = reproduction_report
    first = RESULTS / "reproduce"
    converged = RESULTS / "reproduce-converged"
    if not (first / "records.jsonl").is_file() or not (converged / "records.jsonl").is_file():
        pytest.skip("the studies' records are not in this checkout")
    md = report.render_report(converged, tmp_path / "RESULTS.md", tmp_path / "fig.png", learning_speed=first)
    text = md.read_text()
    section = text[text.index("## Learning speed: every student at 120 iterations"):text.index("## Caveats")]
    assert "from one teacher (seed 0) shared by every seed trained 800 iterations" in section
    assert "| FitNet | no | **57.5 ± 1.8** | **61.4 ± 4.2** |" in section  # the first study's val-selected figures
    assert "--learning-speed studies/reproduction/results/reproduce`" in text
    with pytest.raises(SystemExit, match="--learning-speed"):
        report.render_report(converged, tmp_path / "R.md", tmp_path / "f.png", learning_speed=tmp_path / "none")
