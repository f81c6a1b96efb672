"""The command line of ``python -m studies.relational``: the recipe, the runs, the dry run, the study.

The recipe is the converged reproduction study's (``--converged DIR``, its ``study.json``) with
the students as wide as the teacher (``--dim``, default the teacher's width) and their seeds
offset from the teacher's; ``--quick`` is a tiny recipe that tests the pipeline in seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from ..device import add_device_option, check_device, default_threads
from ..reproduction.cli import OMNIGLOT_ZIP
from ..reproduction.commands import print_budgets
from ..reproduction.cost import CostModel
from ..reproduction.formatting import display_path, fmt_duration
from ..reproduction.methods import METHODS
from ..reproduction.plan import Job, plan_jobs
from ..reproduction.recipe import QUICK, Recipe
from ..reproduction.scheduler import run_study
from ..reproduction.study_dir import STUDY, read_records
from . import (CONVERGED, DEFAULT_OUT, DEFAULT_QUICK_OUT, DEFAULT_REPORT, RELATIONAL_METHODS, REPORT_MD,
               STUDENT_SEED_OFFSET)

PROGRAM = "python -m studies.relational"


def _list(text: str, kind=str) -> tuple:
    try:
        return tuple(kind(x.strip()) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m studies.relational``."""
    p = argparse.ArgumentParser(prog=PROGRAM, formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                description="Relational distillation losses and teacher-compatible students on "
                                            "Omniglot at the converged reproduction recipe (resumable).")
    p.add_argument("--out", default=None, help=f"study directory (default {display_path(DEFAULT_OUT)}; --quick: "
                                               f"{display_path(DEFAULT_QUICK_OUT)})")
    p.add_argument("--report-md", default=None,
                   help=f"the report (default {display_path(DEFAULT_REPORT)} for the default --out, else OUT/{REPORT_MD})")
    p.add_argument("--quick", action="store_true", help="tiny recipe and one seed: a test of the pipeline, not a result")
    p.add_argument("--converged", default=str(CONVERGED), metavar="DIR",
                   help="the reproduction study whose recipe (study.json) and budgets this study repeats")
    p.add_argument("--root", default=None,
                   help=f"the data (default $RKD_PML_OMNIGLOT, else {OMNIGLOT_ZIP})")
    p.add_argument("--image-size", type=int, default=None, help="default: the recipe's")
    p.add_argument("--dim", type=int, default=None,
                   help="teacher and student embedding width (default: the recipe's teacher width)")
    p.add_argument("--seeds", type=lambda t: _list(t, int), default=None, help="study seeds (default 0,1,2; --quick 0)")
    p.add_argument("--methods", type=_list, default=None, help=f"comma-separated, from {', '.join(RELATIONAL_METHODS)}")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default 2; --quick 1)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per worker (CPU default 1)")
    add_device_option(p)
    p.add_argument("--dry-run", action="store_true", help="print the plan and the estimate; train nothing")
    p.add_argument("--list", action="store_true", help="with --dry-run: every run and its estimate")
    p.add_argument("--report-only", action="store_true", help="render the report from the records; train nothing")
    p.add_argument("--render-every", type=int, default=1, help="re-render the report every N recorded runs (0: at the end)")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep the students' epoch checkpoints")
    p.add_argument("--command", default=None, help=argparse.SUPPRESS)
    return p


def _root(args: argparse.Namespace) -> str:
    root = Path(args.root or os.environ.get("RKD_PML_OMNIGLOT") or OMNIGLOT_ZIP).resolve()
    if not root.exists():
        raise SystemExit(f"--root {root}: no such file or folder (the Omniglot zip or folder)")
    return str(root)


def recipe_from_args(args: argparse.Namespace) -> tuple[Recipe, dict[str, Any]]:
    """The recipe and where its budgets come from; SystemExit naming the option at bad input."""
    if args.quick:
        recipe, source = Recipe(**QUICK), {"kind": "quick"}
    else:
        study = Path(args.converged) / STUDY
        if not study.is_file():
            raise SystemExit(f"--converged {args.converged}: no {STUDY} (the reproduction study whose recipe to repeat)")
        converged = json.loads(study.read_text())
        recipe = Recipe.from_dict(converged["recipe"])
        source = {**(converged.get("budgets") or {"kind": "defaults"}), "recipe_of": display_path(Path(args.converged))}
    changes: dict[str, Any] = {"root": _root(args), "dataset": "omniglot", "student_seed_offset": STUDENT_SEED_OFFSET}
    if args.image_size is not None:
        changes["image_size"] = args.image_size
    if args.dim is not None:
        if args.dim < 1:
            raise SystemExit(f"--dim must be at least 1, got {args.dim}")
        changes["teacher_dim"] = args.dim
    recipe = dataclasses.replace(recipe, **changes)
    recipe.validate()
    return recipe, source


def plan(args: argparse.Namespace, recipe: Recipe) -> list[Job]:
    """The runs: a teacher per seed, then every method's student at the teacher's width."""
    methods = args.methods or RELATIONAL_METHODS
    unknown = [m for m in methods if m not in RELATIONAL_METHODS or m not in METHODS]
    if unknown:
        raise SystemExit(f"--methods: unknown {', '.join(unknown)}; choose from {', '.join(RELATIONAL_METHODS)}")
    seeds = args.seeds or ((0,) if args.quick else (0, 1, 2))
    return plan_jobs(recipe, seeds, (recipe.teacher_dim,), methods, "paper")


def cost_model(recipe: Recipe, out: Path, converged: Path) -> tuple[CostModel, str]:
    """The reproduction's cost model, scaled by the runs that finished here and in the converged study."""
    cost = CostModel(recipe)
    how = "the cost model's per-step and per-evaluation seconds"
    n = cost.calibrate(read_records(out).values())
    m = 0 if n else cost.calibrate(read_records(converged).values())
    if n:
        how += f", scaled by {n} finished run(s) of this study"
    elif m:
        how += f", scaled by the {m} runs of {display_path(converged)} (same recipe and machine)"
    return cost, how


def dry_run(args: argparse.Namespace, recipe: Recipe, source: dict[str, Any], jobs: list[Job], out: Path) -> None:
    """Print the recipe, the runs and the estimate; write nothing."""
    print_budgets(recipe, source)
    cost, how = cost_model(recipe, out, Path(args.converged))
    records = read_records(out)
    students = [j for j in jobs if j.kind == "student"]
    print(f"  width {recipe.teacher_dim} for the teacher and every student; teachers seeds "
          f"{', '.join(str(j.seed) for j in jobs if j.kind == 'teacher')}, students seeds "
          f"{', '.join(sorted({str(j.seed) for j in students}))}")
    print("  methods: " + "; ".join(f"{METHODS[m].label} (L2 {'yes' if METHODS[m].paper_l2 else 'no'})"
                                    for m in dict.fromkeys(j.method for j in students)))
    left = cost.total(jobs, args.workers, records)
    done = sum(j.key in records for j in jobs)
    print(f"this command: {len(jobs)} runs ({len(jobs) - len(students)} teachers, {len(students)} students), "
          f"{done} recorded, {len(jobs) - done} to run, about {fmt_duration(left)} "
          f"({left / 3600:.1f} h) with {args.workers} worker(s) x {args.threads} thread(s) on {args.device} ({how})")
    if args.list:
        for j in jobs:
            print(f"{'done' if j.key in records else 'todo'}  {j.key:<34} ~{cost.cost(j):6.0f}s")


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m studies.relational`` with ``argv`` (default: the command line)."""
    from .report import render

    args = build_parser().parse_args(argv)
    if args.command is None:
        args.command = " ".join(shlex.quote(a) for a in [*shlex.split(PROGRAM), *(sys.argv[1:] if argv is None else argv)])
    out = Path(args.out).resolve() if args.out else (DEFAULT_QUICK_OUT if args.quick else DEFAULT_OUT)
    args.report_md = str(Path(args.report_md).resolve() if args.report_md else
                         (DEFAULT_REPORT if out == DEFAULT_OUT else out / REPORT_MD))
    if args.report_only:
        if not (out / STUDY).is_file():
            raise SystemExit(f"--out {out}: no study there yet (run it first)")
        render(args, out)
        return 0
    args.workers = args.workers or (1 if args.quick else 2)
    args.device = check_device(args.device)
    args.threads = args.threads or default_threads(args.device, args.workers)
    recipe, source = recipe_from_args(args)
    jobs = plan(args, recipe)
    if args.dry_run:
        dry_run(args, recipe, source, jobs, out)
        return 0
    meta = {"mode": "relational", "budgets": source,
            "selection": {"seeds": sorted({j.seed for j in jobs if j.kind == "teacher"}),
                          "methods": list(dict.fromkeys(j.method for j in jobs if j.kind == "student"))}}
    return run_study(args, recipe, jobs, out, meta, render, cost_model(recipe, out, Path(args.converged))[0])
