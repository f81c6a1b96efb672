"""The cost model: the expected wall time of each run and of a study on a few workers.

The guesses are seconds per training step and per evaluation of each kind of run; they are
replaced by a short timing (:func:`measure_costs`, behind ``python -m studies.reproduction --dry-run
--measure-steps N``) and scaled by the runs that have finished (:meth:`CostModel.calibrate`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from .plan import Job, job_config, job_schedule, train
from .recipe import Recipe

#: seconds per training step and per evaluation (validation + test split) of one worker with one
#: torch thread, timed on the shared 2-core machine (1-minute load average about 6) at 32 px on
#: Omniglot (680 validation + 1,360 test images); refined by ``--measure-steps`` and by the runs
#: that finish
GUESS_SECONDS_PER_ITERATION = {
    "fp32": {"teacher": 0.50, "baseline": 0.13, "distill": 0.26, "self": 0.66, "self-long": 0.66},
    "bf16": {"teacher": 0.55, "baseline": 0.08, "distill": 0.18, "self": 0.53, "self-long": 0.53},
}
GUESS_SECONDS_PER_EVAL = {
    "fp32": {"teacher": 5.5, "baseline": 4.0, "distill": 4.0, "self": 5.5, "self-long": 5.5},
    "bf16": {"teacher": 5.2, "baseline": 3.0, "distill": 3.0, "self": 5.2, "self-long": 5.2},
}
#: seconds of a run that are neither training nor evaluation (data, models, files)
RUN_OVERHEAD_SECONDS = 3.0


def _guess_tables(recipe: Recipe) -> tuple[dict[str, float], dict[str, float]]:
    key = "fp32" if recipe.precision == "fp32" else "bf16"
    return GUESS_SECONDS_PER_ITERATION[key], GUESS_SECONDS_PER_EVAL[key]


def guess_cost(job: Job, recipe: Recipe, per_iteration: dict[str, float] | None = None,
               per_eval: dict[str, float] | None = None) -> float:
    """The guessed wall seconds of ``job``: steps and evaluations at the given (or guessed) seconds each."""
    s = job_schedule(job, recipe)
    evals = s["epochs"]
    its = evals * s["iterations_per_epoch"]
    gi, ge = _guess_tables(recipe)
    return (per_iteration or gi)[job.group] * its + (per_eval or ge)[job.group] * evals + RUN_OVERHEAD_SECONDS


class CostModel:
    """Expected wall seconds per run: the guess (or a measurement), scaled by what finished runs took."""

    def __init__(self, recipe: Recipe, per_iteration: dict[str, float] | None = None,
                 per_eval: dict[str, float] | None = None):
        self.recipe = recipe
        self.per_iteration, self.per_eval = per_iteration, per_eval
        self.actual: dict[str, float] = {}
        self.guessed: dict[str, float] = {}

    def base(self, job: Job) -> float:
        """The unscaled guess (or measurement) for ``job``."""
        return guess_cost(job, self.recipe, self.per_iteration, self.per_eval)

    def observe(self, job: Job, seconds: float) -> None:
        """Count a run of this session that took ``seconds``."""
        self.actual[job.group] = self.actual.get(job.group, 0.0) + seconds
        self.guessed[job.group] = self.guessed.get(job.group, 0.0) + self.base(job)

    def calibrate(self, records: Iterable[dict[str, Any]]) -> int:
        """Scale the guesses by finished runs of this study (their groups, budgets and evaluations)."""
        gi, ge = _guess_tables(self.recipe)
        gi, ge = self.per_iteration or gi, self.per_eval or ge
        n = 0
        for r in records:
            if not r.get("trained") or not r.get("wall_seconds") or not r.get("curve"):
                continue
            group = r.get("group") or r["kind"]
            if group not in gi:
                continue
            evals, its = len(r["curve"]), int(r["iterations"])
            guess = gi[group] * its + ge[group] * evals + RUN_OVERHEAD_SECONDS
            self.actual[group] = self.actual.get(group, 0.0) + float(r["wall_seconds"])
            self.guessed[group] = self.guessed.get(group, 0.0) + guess
            n += 1
        return n

    def scale(self, group: str) -> float:
        """What the runs of ``group`` took over their guesses (all groups together while it has none)."""
        if group in self.actual:
            return self.actual[group] / self.guessed[group]
        total_g = sum(self.guessed.values())
        return sum(self.actual.values()) / total_g if total_g else 1.0

    def cost(self, job: Job) -> float:
        """The expected wall seconds of ``job``."""
        return self.base(job) * self.scale(job.group)

    def total(self, jobs: Iterable[Job], workers: int, done: Iterable[str] = ()) -> float:
        """Wall seconds of the runs of ``jobs`` not in ``done`` on ``workers`` workers."""
        done = set(done)
        todo = [j for j in jobs if j.key not in done]
        return schedule_length([self.cost(j) for j in todo], todo, workers)

    def eta(self, pending: Iterable[Job], running: Iterable[tuple[Job, float]], workers: int) -> float:
        """Seconds left for the ``pending`` runs and the ``running`` ones (with their start times)."""
        now = time.time()
        left = sum(self.cost(j) for j in pending)
        left += sum(max(self.cost(j) - (now - t0), 0.05 * self.cost(j)) for j, t0 in running)
        return left / max(workers, 1)


def schedule_length(costs: Sequence[float], jobs: Sequence[Job], workers: int) -> float:
    """Wall time of running ``jobs`` in order on ``workers`` workers, a student starting once its
    teacher has finished (a simulation of the runner's submission order)."""
    jobs = list(jobs)
    keys = {j.key for j in jobs}
    workers = max(1, workers)
    free = [0.0] * workers
    done_at: dict[str, float] = {}
    pending = list(range(len(jobs)))
    end = 0.0
    while pending:
        w = min(range(workers), key=lambda i: free[i])
        t = free[w]
        pick = None
        for i in pending:
            tk = jobs[i].teacher_key
            if tk is None or tk not in keys or done_at.get(tk, math.inf) <= t:
                pick = i
                break
        if pick is None:  # wait for the earliest teacher among the pending runs' teachers
            t = min(done_at.get(jobs[i].teacher_key, math.inf) for i in pending)
            if not math.isfinite(t):
                t = max(free)
            free[w] = max(free[w], t)
            continue
        pending.remove(pick)
        free[w] = t + costs[pick]
        done_at[jobs[pick].key] = free[w]
        end = max(end, free[w])
    return end


def measure_costs(recipe: Recipe, steps: int, workdir: str,
                  device: str = "cpu") -> tuple[dict[str, float], dict[str, float]]:
    """Seconds per training step and per evaluation of each cost group, timed on a few steps.

    Trains a teacher, a baseline, an RKD-DA student and a self-distilled student for ``steps``
    iterations (after one warm-up epoch of the same length) with the recipe's data, models and
    precision, one evaluation each, on ``device``; the teacher of the distillation runs is the one just timed."""
    from rkd_pml.training import RunDir

    work = Path(workdir)
    probe = dataclasses.replace(recipe, iterations=2 * steps, evals=2, teacher_iterations=2 * steps,
                                teacher_evals=2, lr_drops=(), teacher_lr_drops=(), self_scale=None)
    jobs = [Job("teacher", "teacher", 0, recipe.teacher_dim, True),
            Job("student", "triplet", 0, 64, False),
            Job("student", "rkd-da", 0, 64, False, "teacher-s0"),
            Job("student", "self", 0, recipe.teacher_dim, False, "teacher-s0")]
    per_it, per_eval = {}, {}
    for job in jobs:
        cfg = job_config(job, probe, work, device).replace(overwrite=True)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            started = time.perf_counter()
            train(job, cfg)
            wall = time.perf_counter() - started
        history = RunDir(work / "runs" / job.key).read_metrics()
        step = [float(r["step_seconds"]) for r in history if "step_seconds" in r]
        per_it[job.group] = step[-1] if step else wall / (2 * steps)
        train_s = float(history[-1].get("train_seconds", 0.0)) if history else 0.0
        # what is not training: two evaluations and the setup of a run (data, models), counted apart
        per_eval[job.group] = max(0.2, (wall - train_s - RUN_OVERHEAD_SECONDS / 2) / 2)
    per_it["self-long"], per_eval["self-long"] = per_it["self"], per_eval["self"]
    return per_it, per_eval
