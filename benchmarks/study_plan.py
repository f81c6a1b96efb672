"""What the reproduction study trains: methods, recipe, runs, grids, budgets and their cost.

The names of the study's plan in one module, for scripts that import ``study_plan``; the code is
in the package ``benchmarks/reproduction`` (:mod:`reproduction.methods`, :mod:`reproduction.recipe`,
:mod:`reproduction.plan`, :mod:`reproduction.curves`, :mod:`reproduction.cost`).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # ``import reproduction``
    sys.path.insert(0, str(HERE))

from reproduction.cost import (  # noqa: E402
    GUESS_SECONDS_PER_EVAL,
    GUESS_SECONDS_PER_ITERATION,
    RUN_OVERHEAD_SECONDS,
    CostModel,
    guess_cost,
    measure_costs,
    schedule_length,
)
from reproduction.curves import (  # noqa: E402
    BUDGET_RULES,
    CURVE_DIM,
    CURVE_EVALS,
    CURVE_SCALE,
    CURVE_TEACHER_SCALE,
    PLATEAU_POINTS,
    PLATEAU_SMOOTH,
    budget_from_plateau,
    choose_budgets,
    curve_recipe,
    describe_rule,
    moving_average,
    plan_curve_jobs,
    plateau,
)
from reproduction.methods import (  # noqa: E402
    COMBINED_FITNET_LOSS,
    DEFAULT_METHODS,
    LEGACY_DEFAULT_METHODS,
    METHODS,
    PAPER_METHODS,
    SELF_METHODS,
    STUDENT_METHODS,
    Method,
    RKDFitNetLoss,
    register_losses,
)
from reproduction.plan import (  # noqa: E402
    DEFAULT_SEEDS,
    GRID_LIMIT_HOURS,
    GRIDS,
    L2_CHOICES,
    QUICK_SELECTION,
    Job,
    describe_grid,
    job_config,
    job_schedule,
    l2_variants,
    plan_jobs,
    teacher_seed,
    train,
)
from reproduction.recipe import (  # noqa: E402
    BASE_STUDENT_ITERATIONS,
    BASE_TEACHER_ITERATIONS,
    QUICK,
    STUDENT_DROPS,
    TEACHER_DROPS,
    Recipe,
    milestones,
    round_up,
    schedule,
)

__all__ = [
    "BASE_STUDENT_ITERATIONS", "BASE_TEACHER_ITERATIONS", "BUDGET_RULES", "COMBINED_FITNET_LOSS", "CURVE_DIM",
    "CURVE_EVALS", "CURVE_SCALE", "CURVE_TEACHER_SCALE", "DEFAULT_METHODS", "DEFAULT_SEEDS", "GRIDS",
    "GRID_LIMIT_HOURS", "GUESS_SECONDS_PER_EVAL", "GUESS_SECONDS_PER_ITERATION", "L2_CHOICES",
    "LEGACY_DEFAULT_METHODS", "METHODS", "PAPER_METHODS", "PLATEAU_POINTS", "PLATEAU_SMOOTH", "QUICK",
    "QUICK_SELECTION", "RUN_OVERHEAD_SECONDS", "SELF_METHODS", "STUDENT_DROPS", "STUDENT_METHODS", "TEACHER_DROPS",
    "CostModel", "Job", "Method", "RKDFitNetLoss", "Recipe", "budget_from_plateau", "choose_budgets", "curve_recipe",
    "describe_grid", "describe_rule", "guess_cost", "job_config", "job_schedule", "l2_variants", "measure_costs",
    "milestones", "moving_average", "plan_curve_jobs", "plan_jobs", "plateau", "register_losses", "round_up",
    "schedule", "schedule_length", "teacher_seed", "train",
]
