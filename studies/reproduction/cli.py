"""The command line of ``python -m studies.reproduction``: its options, and the recipe and budgets they give.

:func:`build_parser` is the parser (also used to re-read the commands recorded in study.json);
:func:`recipe_from_args` turns the options into the study's recipe and says where its budgets
come from (the defaults, ``--budgets`` from curves, ``--budget-scale``, or explicit iterations).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from . import REPO
from .curves import (
    BUDGET_RULES,
    CURVE_DIM,
    CURVE_EVALS,
    CURVE_SCALE,
    CURVE_TEACHER_SCALE,
    PLATEAU_POINTS,
    PLATEAU_SMOOTH,
)
from ..device import add_device_option
from .formatting import display_path
from .methods import DEFAULT_METHODS, METHODS
from .plan import GRID_LIMIT_HOURS, L2_CHOICES, describe_grid
from .recipe import BASE_STUDENT_ITERATIONS, BASE_TEACHER_ITERATIONS, QUICK, Recipe, round_up
from .study_dir import REPORT_MD, REPORT_PNG

DEFAULT_OUT = "studies/reproduction/results/reproduce-converged"
DEFAULT_CURVES_OUT = "studies/reproduction/results/reproduce-curves"
DEFAULT_QUICK_OUT = "studies/reproduction/results/reproduce-quick"
OMNIGLOT_ZIP = REPO.parent / "shared" / "data" / "omniglot" / "images_background_small1.zip"


def _ints(text: str) -> tuple[int, ...]:
    """``--seeds`` and ``--sizes``: comma-separated integers."""
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _fractions(text: str) -> tuple[float, ...]:
    """``--lr-drops`` and ``--teacher-lr-drops``: comma-separated fractions."""
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated fractions, got {text!r}") from None


def _methods(text: str) -> tuple[str, ...]:
    """``--methods``: comma-separated method names, or ``all`` (:data:`DEFAULT_METHODS`)."""
    names = tuple(x.strip().lower() for x in text.split(",") if x.strip())
    if "all" in names:
        return DEFAULT_METHODS
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)} or all")
    return names


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m studies.reproduction``."""
    d = Recipe()
    p = argparse.ArgumentParser(
        prog="python -m studies.reproduction",
        description="Reproduce the RKD paper's metric-learning claims on Omniglot-layout or folder data (resumable).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", default=None,
                   help=f"study directory (default {DEFAULT_OUT}; --curves: {DEFAULT_CURVES_OUT}; "
                        f"--quick: {DEFAULT_QUICK_OUT})")
    p.add_argument("--quick", action="store_true",
                   help="tiny study: tiny models and iterations, one seed, one size, triplet/RKD-DA/self")
    p.add_argument("--curves", action="store_true",
                   help="train one teacher and one student per method at a long budget with a constant learning "
                        "rate, record their curves, and write curves.png and budgets.json (the budgets for the study)")
    sel = p.add_argument_group("which runs")
    sel.add_argument("--grid", choices=("auto", "full", "reduced"), default="auto",
                     help=f"full: {describe_grid('full')}; reduced: {describe_grid('reduced')}; "
                          "auto: full when its estimated wall time is within --grid-limit-hours, else reduced "
                          "(a study keeps the grid it started with)")
    sel.add_argument("--grid-limit-hours", type=float, default=GRID_LIMIT_HOURS)
    sel.add_argument("--seeds", type=_ints, default=None, help="comma-separated seeds (default 0,1,2)")
    sel.add_argument("--sizes", type=_ints, default=None, help="student embedding sizes (default: the grid's)")
    sel.add_argument("--methods", type=_methods, default=None,
                     help=f"comma-separated, from {', '.join(METHODS)} or all (default: every method but self-long, "
                          "self-distillation on the teacher's schedule)")
    sel.add_argument("--l2", choices=L2_CHOICES, default=None,
                     help="student L2 variants of every method (default: the grid's; paper: the paper row's "
                          "setting; self-distillation: off)")
    rec = p.add_argument_group("recipe (must be the same to resume a study)")
    rec.add_argument("--dataset", default=d.dataset, help="omniglot (a folder or .zip in its layout) or folder")
    rec.add_argument("--root", default=None, help=f"data location (omniglot default: {OMNIGLOT_ZIP})")
    rec.add_argument("--image-size", type=int, default=d.image_size)
    rec.add_argument("--train-transform", default=d.train_transform, choices=("paper", "random_resized_crop", "none"))
    rec.add_argument("--val-fraction", type=float, default=None,
                     help=f"fraction of the training classes held out to select the epoch (default {d.val_fraction})")
    rec.add_argument("--batch-size", type=int, default=None, help=f"default {d.batch_size}")
    rec.add_argument("--m-per-class", type=int, default=None, help=f"default {d.m_per_class}")
    rec.add_argument("--fast", action="store_true", help="bf16 autocast and channels-last models (faster on CPUs with bf16)")
    rec.add_argument("--teacher-model", default=None, help=f"default {d.teacher_model}")
    rec.add_argument("--teacher-dim", type=int, default=None, help=f"default {d.teacher_dim}")
    rec.add_argument("--teacher-lr", type=float, default=d.teacher_lr)
    rec.add_argument("--teacher-lr-drops", type=_fractions, default=None,
                     help="lr x0.5 after these fractions of the teacher's budget (default 0.625,0.75,0.875)")
    rec.add_argument("--shared-teacher", action="store_true",
                     help="one teacher (seed 0) for every seed instead of one per seed")
    rec.add_argument("--teacher-per-seed", action="store_true", help=argparse.SUPPRESS)  # the default now
    rec.add_argument("--student-model", default=None, help=f"default {d.student_model}")
    rec.add_argument("--lr", type=float, default=d.lr, help="students' Adam learning rate")
    rec.add_argument("--lr-drops", type=_fractions, default=None,
                     help="students: lr x0.1 after these fractions of the budget (default 0.5,0.75)")
    bud = p.add_argument_group("budgets (iterations of batch --batch-size)")
    bud.add_argument("--budgets", default=None, metavar="FILE",
                     help="budgets.json written by --curves: the teacher's and the students' iterations")
    bud.add_argument("--budget-scale", type=float, default=None,
                     help=f"students {BASE_STUDENT_ITERATIONS} x S and teacher {BASE_TEACHER_ITERATIONS} x S iterations "
                          "(the first study's budgets times S)")
    bud.add_argument("--teacher-budget-scale", type=float, default=None, help="the teacher's scale (default --budget-scale)")
    bud.add_argument("--teacher-iterations", type=int, default=None, help=f"default {d.teacher_iterations}")
    bud.add_argument("--student-iterations", "--iterations", dest="iterations", type=int, default=None,
                     help=f"iterations per student run (default {d.iterations})")
    bud.add_argument("--self-scale", type=float, default=None,
                     help=f"self-distillation trains this many times the teacher's iterations (default {d.self_scale:g})")
    bud.add_argument("--evals", type=int, default=None,
                     help=f"evaluations (epochs) per student run (default {d.evals})")
    bud.add_argument("--teacher-evals", type=int, default=None,
                     help=f"evaluations (epochs) per teacher run (default {d.teacher_evals})")
    bud.add_argument("--eval-every", type=int, default=None, help="students: evaluate every N iterations (sets --evals)")
    bud.add_argument("--teacher-eval-every", type=int, default=None, help="teacher: evaluate every N iterations")
    cur = p.add_argument_group("curves (--curves) and the budget rule")
    cur.add_argument("--curve-scale", type=float, default=CURVE_SCALE,
                     help=f"students' curve budget: {BASE_STUDENT_ITERATIONS} x this")
    cur.add_argument("--curve-teacher-scale", type=float, default=CURVE_TEACHER_SCALE,
                     help=f"teacher's curve budget: {BASE_TEACHER_ITERATIONS} x this")
    cur.add_argument("--curve-evals", type=int, default=CURVE_EVALS, help="evaluations per curve run")
    cur.add_argument("--curve-dim", type=int, default=CURVE_DIM, help="students' embedding size in the curves")
    cur.add_argument("--budget-rule", choices=BUDGET_RULES, default="first-drop",
                     help="first-drop: the first lr drop falls where the curve plateaus; end: the budget ends there")
    cur.add_argument("--plateau-points", type=float, default=PLATEAU_POINTS,
                     help="plateau: the best validation Recall@1 rises less than this over the rest of the run")
    cur.add_argument("--plateau-smooth", type=int, default=PLATEAU_SMOOTH,
                     help="average the validation curve over this many evaluations first")
    exe = p.add_argument_group("execution")
    exe.add_argument("--workers", type=int, default=None, help="parallel worker processes (default 2; --quick 1)")
    add_device_option(exe)
    exe.add_argument("--threads", type=int, default=None,
                     help="torch threads per worker (default 1 on the CPU; on a GPU the cores shared by the workers, "
                          "at most 4 each)")
    exe.add_argument("--keep-checkpoints", action="store_true",
                     help="keep the students' checkpoints (deleted once a run is recorded)")
    exe.add_argument("--dry-run", action="store_true",
                     help="print the budgets, the estimated wall time of the full and the reduced grid, and which runs")
    exe.add_argument("--list", action="store_true", help="with --dry-run: list every run")
    exe.add_argument("--measure-steps", type=int, default=0, metavar="N",
                     help="time N training steps of each kind of run for the estimates (and the grid choice of a "
                          "new study) instead of the cost model's figures")
    exe.add_argument("--report-only", action="store_true", help="render the report from the records and exit")
    exe.add_argument("--docs", default=None, metavar="DIR",
                     help=f"write the report ({REPORT_MD}) and its figures into DIR (default: the study directory)")
    exe.add_argument("--report-md", default=None, help=f"report path (default DOCS/{REPORT_MD})")
    exe.add_argument("--report-png", default=None, help=f"figure path (default DOCS/{REPORT_PNG})")
    exe.add_argument("--render-every", type=int, default=12,
                     help="re-render the report every N recorded runs (0: at the end only)")
    exe.add_argument("--command", default=None, help=argparse.SUPPRESS)
    return p


def _resolve_root(args: argparse.Namespace) -> str | None:
    """The data location, absolute (None for ``digits``); SystemExit when it does not exist."""
    root = args.root
    if root is None and args.dataset == "omniglot":
        root = os.environ.get("RKD_PML_OMNIGLOT", str(OMNIGLOT_ZIP))
    if root is not None and args.dataset != "digits":
        root = str(Path(root).resolve())
        if not Path(root).exists():
            raise SystemExit(f"data not found: {root} (pass --root, or --dataset digits)")
    return root if args.dataset != "digits" else None


def read_budgets(path: str | os.PathLike) -> dict[str, Any]:
    """The budgets of a finished curves directory (its budgets.json); SystemExit while they are not ready."""
    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"no budgets file {path}: run the curves first (python -m studies.reproduction --curves)")
    budgets = json.loads(path.read_text())
    if not budgets.get("teacher_iterations") or not budgets.get("iterations"):
        raise SystemExit(f"{path} has no budgets yet: the curves have not finished")
    if not budgets.get("complete", True):
        raise SystemExit(f"{path}: the curves are not complete (start the --curves command again to finish them)")
    return budgets


def recipe_from_args(args: argparse.Namespace) -> tuple[Recipe, dict[str, Any]]:
    """The recipe of the command line, and where its budgets come from."""
    d = Recipe()
    base: dict[str, Any] = dict(QUICK) if args.quick else {}
    evals = args.evals or base.get("evals", d.evals)
    teacher_evals = args.teacher_evals or base.get("teacher_evals", d.teacher_evals)
    its = base.get("iterations", d.iterations)
    t_its = base.get("teacher_iterations", d.teacher_iterations)
    source: dict[str, Any] = {"kind": "quick" if args.quick else "defaults"}
    if args.budgets:
        b = read_budgets(args.budgets)
        its, t_its = int(b["iterations"]), int(b["teacher_iterations"])
        source = {"kind": "curves", "file": display_path(Path(args.budgets)), "rule": b.get("rule"),
                  "plateau_points": b.get("plateau_points"), "plateau_smooth": b.get("plateau_smooth"),
                  "curves": display_path(Path(args.budgets).resolve().parent),
                  "teacher_iterations": t_its, "iterations": its}
    if args.budget_scale is not None:
        its = args.budget_scale * BASE_STUDENT_ITERATIONS
        t_its = (args.teacher_budget_scale or args.budget_scale) * BASE_TEACHER_ITERATIONS
        source = {"kind": "scale", "scale": args.budget_scale,
                  "teacher_scale": args.teacher_budget_scale or args.budget_scale}
    explicit = []
    if args.iterations is not None:
        its = args.iterations
        explicit.append("students")
    if args.teacher_iterations is not None:
        t_its = args.teacher_iterations
        explicit.append("teacher")
    if explicit:
        source = {**source, "explicit": explicit}
    if args.eval_every:
        if int(its) % args.eval_every:
            raise SystemExit(f"--eval-every {args.eval_every} must divide the students' {int(its)} iterations")
        evals = int(its) // args.eval_every
    if args.teacher_eval_every:
        if int(t_its) % args.teacher_eval_every:
            raise SystemExit(f"--teacher-eval-every {args.teacher_eval_every} must divide the teacher's {int(t_its)} "
                             "iterations")
        teacher_evals = int(t_its) // args.teacher_eval_every
    # budgets from curves or a scale are rounded up to whole epochs; explicit ones must divide
    if "students" not in explicit:
        its = round_up(its, evals)
    if "teacher" not in explicit:
        t_its = round_up(t_its, teacher_evals)
    overrides = {
        "batch_size": args.batch_size, "m_per_class": args.m_per_class, "teacher_model": args.teacher_model,
        "teacher_dim": args.teacher_dim, "student_model": args.student_model, "val_fraction": args.val_fraction,
        "lr_drops": args.lr_drops, "teacher_lr_drops": args.teacher_lr_drops, "self_scale": args.self_scale,
    }
    base.update({k: v for k, v in overrides.items() if v is not None})
    base.update(iterations=int(its), teacher_iterations=int(t_its), evals=int(evals), teacher_evals=int(teacher_evals))
    if args.fast:
        base.update(precision="bf16", channels_last=True)
    recipe = Recipe(
        dataset=args.dataset, root=_resolve_root(args), image_size=args.image_size,
        train_transform=args.train_transform, teacher_lr=args.teacher_lr,
        teacher_per_seed=not args.shared_teacher, lr=args.lr, **base,
    )
    if recipe.self_scale is not None and recipe.self_iterations % recipe.evals:
        recipe.self_scale = round_up(recipe.self_iterations, recipe.evals) / recipe.teacher_iterations
    recipe.validate()
    return recipe, source
