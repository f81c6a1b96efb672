#!/usr/bin/env python
"""Reproduction study of the RKD paper's metric-learning claims on real data (Omniglot by default).

Every run goes through the package's own training jobs (``rkd_pml.training.train_teacher``,
``train_baseline`` and ``distill``); this script plans the runs, executes them in a few worker
processes, records each finished run and renders the report (``python -m studies.reproduction.report``).
The code is the package ``studies.reproduction`` (its docstring lists the modules).

The study (defaults; see ``--help``):

* data: any Omniglot-layout folder or ``.zip`` (default: the 136 characters of
  ``images_background_small1.zip``) or ``--dataset folder --root DIR`` at 32 px; the first half
  of the classes trains, the second half (never seen in training) is the test set, and half of
  the training classes (``--val-fraction 0.5``) are a class-disjoint validation split that
  selects the epoch;
* teacher: timm ``resnet10t`` -> Linear(512) -> L2, triplet loss on distance-weighted triplets,
  one per seed; lr x0.5 after 25/40, 30/40 and 35/40 of its budget (the paper's schedule);
* students: timm ``test_resnet`` at embedding sizes 16, 32, 64, 128 trained with triplet loss (no
  teacher), FitNet, DarkRank, RKD-D, RKD-A, RKD-DA, RKD-DA + triplet and RKD-DA + FitNet, each
  without and with L2 on the student, all on one budget with lr x0.1 after 50 % and 75 % of it;
  self-distillation (student = the teacher's architecture and size, RKD-DA, no L2) at twice the
  teacher's budget, the paper's ratio;
* the grid: the full one above when its estimated wall time is at most 6 hours, else the reduced
  one (d = 16 and 64; both L2 variants for triplet and RKD-DA only); ``--grid`` chooses;
* evaluation of the validation and the test split at the end of every epoch (20 per student
  run, 40 per teacher run), so every run records its curves.

Budgets come from curves (``--curves``): one teacher and one student per method trained at a long
budget with a constant learning rate; the budget is placed where the validation Recall@1 stops
improving (``reproduction.curves.plateau``). Typical session::

    python -m studies.reproduction --curves                       # curves.png, budgets.json
    python -m studies.reproduction --budgets studies/reproduction/results/reproduce-curves/budgets.json --dry-run
    python -m studies.reproduction --budgets studies/reproduction/results/reproduce-curves/budgets.json
    python -m studies.reproduction --report-only --docs studies/reproduction   # RESULTS.md + figures

Outputs in ``--out`` (default ``studies/reproduction/results/reproduce-converged``)::

    study.json       the recipe (must match to resume), grid, budgets' source, data file, sessions
    records.jsonl    one JSON line per finished run, appended and flushed when the run ends
    runs/<key>/      the run directories written by the training jobs
    logs/<key>.log   the training log of each run
    RESULTS.md       the report (and its figure), unless ``--docs DIR`` puts them in DIR

Starting the same command again skips every recorded run and continues unfinished ones from
their last checkpoint.
"""

from __future__ import annotations

import sys

from .cli import _methods, build_parser, recipe_from_args
from .commands import main as run_command
from .methods import METHODS
from .plan import GRIDS, Job, job_config, plan_jobs
from .recipe import Recipe
from .study_dir import append_record, open_study, read_records, read_study

#: the study's plan and files, for the tests and for other scripts
__all__ = ["GRIDS", "METHODS", "Job", "Recipe", "_methods", "append_record", "build_parser", "job_config", "main",
           "open_study", "plan_jobs", "read_records", "read_study", "recipe_from_args"]


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m studies.reproduction`` with the arguments ``argv`` (default: the command line)."""
    return run_command(argv)


if __name__ == "__main__":
    sys.exit(main())
