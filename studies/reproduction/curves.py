"""The curves and the budget rule: long runs at a constant learning rate, and where they plateau.

:func:`curve_recipe` and :func:`plan_curve_jobs` give one teacher and one student per method at a
long budget with a constant learning rate; :func:`plateau` finds where the validation Recall@1
stops improving and :func:`choose_budgets` turns that into the study's budgets.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable, Sequence

from .methods import SELF_METHODS, STUDENT_METHODS
from .plan import Job, plan_jobs
from .recipe import BASE_STUDENT_ITERATIONS, BASE_TEACHER_ITERATIONS, Recipe, round_up

#: the long budget of the curves, in units of the first study's budgets (120 and 800 iterations)
CURVE_SCALE = 20
CURVE_TEACHER_SCALE = 5
CURVE_EVALS = 40
CURVE_DIM = 64
#: a run has converged at the first evaluation after which its best validation Recall@1 rises
#: less than this many points over the rest of the run
PLATEAU_POINTS = 0.5
#: the validation curve is averaged over this many consecutive evaluations before the rule
PLATEAU_SMOOTH = 3
#: "first-drop": the budget puts the first learning-rate drop at the plateau (budget = plateau /
#: first drop fraction), so the full learning rate runs until it stops paying; "end": the budget
#: ends at the plateau
BUDGET_RULES = ("first-drop", "end")


def curve_recipe(recipe: Recipe, scale: float = CURVE_SCALE, teacher_scale: float = CURVE_TEACHER_SCALE,
                 evals: int = CURVE_EVALS) -> Recipe:
    """The study's recipe at a long budget with a constant learning rate (no drops)."""
    return dataclasses.replace(
        recipe,
        iterations=round_up(scale * BASE_STUDENT_ITERATIONS, evals), evals=evals, lr_drops=(),
        teacher_iterations=round_up(teacher_scale * BASE_TEACHER_ITERATIONS, evals), teacher_evals=evals,
        teacher_lr_drops=(), teacher_per_seed=False, self_scale=None,
    )


def plan_curve_jobs(recipe: Recipe, methods: Iterable[str] = STUDENT_METHODS, dim: int = CURVE_DIM,
                    seed: int = 0) -> list[Job]:
    """One teacher and one student per method (the paper row's L2 setting) at width ``dim``."""
    methods = [m for m in methods if m not in SELF_METHODS]
    return plan_jobs(recipe, (seed,), (dim,), methods, "paper")


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """``values`` averaged over a centred window of ``window`` values (shorter at the ends)."""
    if window <= 1:
        return list(values)
    half = window // 2
    return [sum(values[max(0, i - half):i + half + 1]) / len(values[max(0, i - half):i + half + 1])
            for i in range(len(values))]


def plateau(curve: Sequence[Sequence[Any]], points: float = PLATEAU_POINTS, smooth: int = PLATEAU_SMOOTH) -> dict[str, Any]:
    """Where validation Recall@1 stops improving on a curve of ``[iteration, val R@1, test R@1]`` rows.

    The first evaluation after which the best (smoothed) validation Recall@1 rises less than
    ``points`` over the remaining evaluations. ``converged`` is False when that evaluation is
    the last one while the curve still rose by ``points`` or more over its last quarter."""
    rows = [r for r in curve if r[1] is not None]
    if not rows:
        return {"iteration": None, "converged": False, "best_val": None}
    its = [int(r[0]) for r in rows]
    val = moving_average([100.0 * float(r[1]) for r in rows], smooth)
    final_best = max(val)
    best = -math.inf
    chosen = len(rows) - 1
    for i, v in enumerate(val):
        best = max(best, v)
        if final_best - best < points:
            chosen = i
            break
    quarter = max(1, len(rows) // 4)
    late_gain = max(val) - max(val[:len(val) - quarter]) if len(val) > quarter else 0.0
    converged = not (chosen == len(rows) - 1 and late_gain >= points)
    return {"iteration": its[chosen], "index": chosen, "evaluations": len(rows), "converged": converged,
            "best_val": round(final_best, 2), "val_at_plateau": round(val[chosen], 2),
            "late_gain": round(late_gain, 2), "curve_iterations": its[-1]}


def budget_from_plateau(plateau_iteration: int, drops: Sequence[float], rule: str, limit: int) -> int:
    """The budget of a run whose curve plateaus at ``plateau_iteration`` under ``rule`` (at most ``limit``)."""
    first = min(drops) if drops else 1.0
    budget = math.ceil(plateau_iteration / first) if rule == "first-drop" else plateau_iteration
    return int(min(budget, limit) if limit else budget)


def choose_budgets(records: dict[str, dict[str, Any]], study_recipe: Recipe, curve: Recipe,
                   rule: str = "first-drop", points: float = PLATEAU_POINTS, smooth: int = PLATEAU_SMOOTH,
                   ) -> dict[str, Any]:
    """The teacher's and the students' budgets from the curve runs' records.

    Every student method gets the same budget: the largest of the methods' budgets, so no
    method is stopped before it plateaus. Rounded up to whole epochs of the study's recipe."""
    per_run: dict[str, Any] = {}
    teacher_budget, student_budgets = None, {}
    for key, rec in sorted(records.items()):
        p = plateau(rec.get("curve") or [], points, smooth)
        if p["iteration"] is None:
            continue
        if rec["kind"] == "teacher":
            b = budget_from_plateau(p["iteration"], study_recipe.teacher_lr_drops, rule, curve.teacher_iterations)
            b = round_up(b, study_recipe.teacher_evals)
            teacher_budget = b if teacher_budget is None else max(teacher_budget, b)
        else:
            b = round_up(budget_from_plateau(p["iteration"], study_recipe.lr_drops, rule, curve.iterations),
                         study_recipe.evals)
            student_budgets[rec["method"]] = b
        per_run[key] = {**p, "method": rec["method"], "budget": b,
                        "capped": b >= (curve.teacher_iterations if rec["kind"] == "teacher" else curve.iterations)}
    students = max(student_budgets.values()) if student_budgets else None
    return {
        "teacher_iterations": teacher_budget,
        "iterations": students,
        "self_iterations": (int(round(study_recipe.self_scale * teacher_budget))
                            if teacher_budget and study_recipe.self_scale else None),
        "rule": rule, "plateau_points": points, "plateau_smooth": smooth,
        "students_by_method": student_budgets,
        "per_run": per_run,
    }


def describe_rule(rule: str, points: float, smooth: int) -> str:
    """The budget rule in words (the dry run, budgets.json and the reports)."""
    what = (f"the first evaluation after which the best validation Recall@1 (averaged over {smooth} consecutive "
            f"evaluations) rises less than {points:g} points over the rest of the run")
    if rule == "first-drop":
        return (f"plateau = {what}; budget = plateau / (first learning-rate drop as a fraction of the budget), so the "
                "full learning rate runs until the curve stops improving and the drops refine from there")
    return f"plateau = {what}; budget = the plateau"
