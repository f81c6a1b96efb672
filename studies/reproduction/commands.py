"""What each command of ``python -m studies.reproduction`` does: the study, the curves, the dry run, --report-only.

:func:`main` reads the command line, plans the runs of the chosen grid and runs them (or, with
``--dry-run``, prints the budgets, the estimates of both grids and which runs would train);
``--curves`` runs the curves instead (:func:`curves_main`).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

from . import REPO
from .cli import DEFAULT_CURVES_OUT, DEFAULT_OUT, DEFAULT_QUICK_OUT, build_parser, recipe_from_args
from .cost import CostModel, measure_costs
from ..device import check_device, default_threads
from .curves import curve_recipe, describe_rule, plan_curve_jobs
from .formatting import display_path, fmt_duration, schedule_text
from .methods import STUDENT_METHODS
from .plan import Job, describe_grid, plan_jobs
from .recipe import Recipe
from .rendering import render, render_curves
from .scheduler import run_study
from .selection import choose_grid
from .study_dir import RECORDS, REPORT_MD, REPORT_PNG, read_records, read_study
from .worker import init_worker


def print_budgets(recipe: Recipe, source: dict[str, Any]) -> None:
    """Print where the budgets come from and the schedules of the teacher, the students and self-distillation."""
    kind = source.get("kind")
    if kind == "curves":
        where = f"chosen from the curves ({source.get('file')}, rule {source.get('rule')})"
    elif kind == "scale":
        where = f"--budget-scale {source['scale']:g} (teacher x{source['teacher_scale']:g})"
    elif kind == "quick":
        where = "--quick"
    else:
        where = "defaults (not chosen from curves: run --curves, then pass --budgets)"
    if source.get("explicit"):
        where += f"; given explicitly: {', '.join(source['explicit'])}"
    print(f"budgets: {where}")
    r = recipe
    teacher = schedule_text(r.teacher_iterations, r.teacher_evals, r.teacher_lr_drops, r.teacher_lr_gamma, r.teacher_lr,
                            brief=True)
    print(f"  teacher:  {teacher}{', one per seed' if r.teacher_per_seed else ', one (seed 0) for every seed'}")
    print(f"  students: {schedule_text(r.iterations, r.evals, r.lr_drops, r.lr_gamma, r.lr, brief=True)}")
    print(f"  self-distillation: {schedule_text(r.self_iterations, r.evals, r.lr_drops, r.lr_gamma, r.lr, brief=True)}")
    print(f"  data: {recipe.dataset} {recipe.root or ''} at {recipe.image_size} px, validation {recipe.val_fraction:g} "
          f"of the training classes; precision {recipe.precision}{', channels-last' if recipe.channels_last else ''}")


def make_cost_model(args: argparse.Namespace, recipe: Recipe, out: Path,
                    source: dict[str, Any] | None = None) -> tuple[CostModel, str]:
    """The cost model of the estimates: the per-step and per-evaluation guesses (or ``--measure-steps``
    timings), scaled by the runs of this study and of the curves its budgets come from."""
    if args.measure_steps:
        with tempfile.TemporaryDirectory(prefix="rkd-measure-") as tmp:
            init_worker(args.threads)
            per_it, per_eval = measure_costs(recipe, args.measure_steps, tmp, args.device)
        cost = CostModel(recipe, per_it, per_eval)
        how = (f"timed {args.measure_steps} steps of each kind of run here on {args.device}, one process at a time: "
               "seconds per step "
               + ", ".join(f"{g} {v:.3f}" for g, v in per_it.items() if g != "self-long")
               + "; per evaluation " + ", ".join(f"{g} {v:.1f}" for g, v in per_eval.items() if g != "self-long"))
    else:
        cost = CostModel(recipe)
        how = "the cost model's per-step and per-evaluation seconds (timed on this shared 2-core machine)"
    n = cost.calibrate(read_records(out).values())
    if n:
        how += f", scaled by {n} finished run(s) of this study"
    if source and source.get("kind") == "curves" and source.get("curves"):
        curves = Path(source["curves"])
        curves = curves if curves.is_absolute() else REPO / curves
        m = cost.calibrate(read_records(curves).values())
        if m:
            how += f", scaled by the {m} curve run(s) in {display_path(curves)}"
    return cost, how


def dry_run(args: argparse.Namespace, recipe: Recipe, source: dict[str, Any], grid: dict[str, Any],
            jobs: list[Job], out: Path, cost: CostModel, how: str) -> None:
    """Print the budgets, the estimates of both grids, the grid that runs and (``--list``) every run; write nothing."""
    records = read_records(out)
    print_budgets(recipe, source)
    print(f"estimates ({args.workers} worker(s) x {args.threads} thread(s); {how}):")
    for name, est in grid["estimates"].items():
        print(f"  {name} grid ({describe_grid(name)}): {est['runs']} runs, about "
              f"{fmt_duration(est['hours'] * 3600)}")
    print(f"grid that runs: {grid['name']} ({grid['reason']})")
    groups: dict[str, int] = {}
    for j in jobs:
        groups[j.group] = groups.get(j.group, 0) + 1
    left = cost.total(jobs, args.workers, records)
    done = sum(j.key in records for j in jobs)
    print(f"this command: {len(jobs)} runs (" + ", ".join(f"{g} {n}" for g, n in sorted(groups.items())) + f"), "
          f"{done} recorded, {len(jobs) - done} to run, about {fmt_duration(left)} with {args.workers} worker(s)")
    if args.list:
        for j in jobs:
            print(f"{'done' if j.key in records else 'todo'}  {j.key:<30} ~{cost.cost(j):6.0f}s")


def main(argv: list[str] | None = None, program: str = "python -m studies.reproduction") -> int:
    """Run the command ``argv`` (default: this process's arguments) of the study (it records the
    command as ``<program> <arguments>``); return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list and not args.dry_run:
        parser.error("--list lists the runs of --dry-run: add --dry-run (without it the study would train)")
    if args.command is None:
        shown = [*shlex.split(program), *(sys.argv[1:] if argv is None else argv)]
        args.command = " ".join(shlex.quote(a) for a in shown)
    default_out = DEFAULT_CURVES_OUT if args.curves else (DEFAULT_QUICK_OUT if args.quick else DEFAULT_OUT)
    out = Path(args.out or (REPO / default_out)).resolve()
    docs = Path(args.docs).resolve() if args.docs else out
    args.report_md = str(Path(args.report_md).resolve()) if args.report_md else str(docs / REPORT_MD)
    args.report_png = str(Path(args.report_png).resolve()) if args.report_png else str(docs / REPORT_PNG)
    if args.workers is None:
        args.workers = 1 if args.quick else 2
    if not args.report_only:  # before any folder is created
        args.device = check_device(args.device)
        args.threads = args.threads or default_threads(args.device, args.workers)
    if args.report_only:
        if not (out / RECORDS).is_file():
            raise SystemExit(f"no records in {out}: run the study first")
        study = read_study(out) or {}
        (render_curves if study.get("mode") == "curves" else render)(args, out)
        return 0
    recipe, source = recipe_from_args(args)
    if args.curves:
        return curves_main(args, recipe, out)
    study = read_study(out)
    cost, how = make_cost_model(args, recipe, out, source)
    grid = choose_grid(args, recipe, cost, args.workers, study)
    sel = grid["selection"]
    jobs = plan_jobs(recipe, sel["seeds"], sel["sizes"], sel["methods"], sel["l2"])
    if args.dry_run:
        dry_run(args, recipe, source, grid, jobs, out, cost, how)
        return 0
    meta = {"mode": "study", "grid": grid, "budgets": source}
    return run_study(args, recipe, jobs, out, meta, render, cost)


def curves_main(args: argparse.Namespace, study_recipe: Recipe, out: Path) -> int:
    """Curves: one teacher and one student per method at a long budget, constant learning rate."""
    recipe = curve_recipe(study_recipe, args.curve_scale, args.curve_teacher_scale, args.curve_evals)
    recipe.validate()
    methods = args.methods or STUDENT_METHODS
    jobs = plan_curve_jobs(recipe, methods, args.curve_dim)
    meta = {"mode": "curves", "study_recipe": study_recipe.to_dict(),
            "curves": {"scale": args.curve_scale, "teacher_scale": args.curve_teacher_scale,
                       "evals": args.curve_evals, "dim": args.curve_dim, "methods": list(methods)}}
    if args.dry_run:
        cost, how = make_cost_model(args, recipe, out)
        print(f"curves: {len(jobs)} runs: " + ", ".join(j.key for j in jobs))
        teacher = schedule_text(recipe.teacher_iterations, recipe.teacher_evals, (), 1.0, recipe.teacher_lr, brief=True)
        print(f"  teacher:  {teacher}")
        print(f"  students: {schedule_text(recipe.iterations, recipe.evals, (), 1.0, recipe.lr, brief=True)}")
        print(f"  budget rule: {describe_rule(args.budget_rule, args.plateau_points, args.plateau_smooth)}")
        print(f"about {fmt_duration(cost.total(jobs, args.workers, read_records(out)))} with {args.workers} worker(s) "
              f"({how})")
        return 0
    return run_study(args, recipe, jobs, out, meta, render_curves)
