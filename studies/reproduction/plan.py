"""The runs of a study: jobs and their keys, the grids, and each run's training config.

A run's key (``teacher-s0``, ``rkd-da-nol2-d64-s0``, ``self-d512-s0``) names its record and its
run directory; :func:`plan_jobs` lists a study's runs in submission order, :func:`job_config` is
the package's training config of one run and :func:`train` runs it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .methods import DEFAULT_METHODS, METHODS, SELF_METHODS
from .recipe import Recipe


@dataclass(frozen=True)
class Job:
    """One run of the study: a teacher, or a student of one method, seed, width and L2 setting."""

    kind: str  # "teacher" | "student"
    method: str  # "teacher", one of METHODS
    seed: int
    dim: int
    l2: bool
    teacher_key: str | None = None

    @property
    def key(self) -> str:
        """The run's name: its record's key and its run directory's name."""
        if self.kind == "teacher":
            return f"teacher-s{self.seed}"
        if self.method in SELF_METHODS:
            return f"{self.method}-d{self.dim}-s{self.seed}"
        return f"{self.method}-{'l2' if self.l2 else 'nol2'}-d{self.dim}-s{self.seed}"

    @property
    def group(self) -> str:
        """Cost class: teacher, baseline (no teacher forward), distill, self, self-long."""
        if self.kind == "teacher":
            return "teacher"
        if self.method in SELF_METHODS:
            return self.method
        return METHODS[self.method].job


def job_schedule(job: Job, recipe: Recipe) -> dict[str, Any]:
    """The teacher's schedule for the teacher and "self-long"; the students' for the others, at
    ``self_iterations`` for "self"."""
    if job.kind == "teacher" or job.method == "self-long":
        return recipe.teacher_schedule()
    if job.method == "self":
        return recipe.student_schedule(recipe.self_iterations)
    return recipe.student_schedule()


def teacher_seed(recipe: Recipe, seed: int) -> int:
    """The seed of the teacher that the students of ``seed`` distil from."""
    return seed if recipe.teacher_per_seed else 0


def student_seed(recipe: Recipe, seed: int) -> int:
    """The training seed of the students of study seed ``seed`` (their records and keys carry it)."""
    return seed + recipe.student_seed_offset


#: which student L2 variants a method trains: "both", "off", "on" or "paper" (the paper row's setting)
L2_CHOICES = ("both", "off", "on", "paper")


def l2_variants(method: str, spec: str | dict[str, str]) -> tuple[bool, ...]:
    """The student L2 settings that ``method`` trains under ``spec`` (one of :data:`L2_CHOICES`, or one per method)."""
    if isinstance(spec, dict):
        spec = spec.get(method, spec.get("*", "both"))
    if spec == "paper":
        return (METHODS[method].paper_l2,) if method in METHODS else (False,)
    return {"both": (False, True), "off": (False,), "on": (True,)}[spec]


def plan_jobs(recipe: Recipe, seeds: Iterable[int], sizes: Iterable[int], methods: Iterable[str],
              l2: Iterable[bool] | str | dict[str, str]) -> list[Job]:
    """All runs of the study, in submission order (teachers, then seed by seed, longest first).

    A student of study seed s trains with :func:`student_seed` and distils the teacher of
    :func:`teacher_seed`.

    ``l2``: the student L2 variants of every method (booleans), or a spec of :data:`L2_CHOICES`
    (one for all, or per method with "*" for the others)."""
    seeds, sizes, methods = list(seeds), list(sizes), list(methods)
    if not isinstance(l2, (str, dict)):
        l2 = tuple(l2)
    teachers = sorted({teacher_seed(recipe, s) for s in seeds})
    jobs = [Job("teacher", "teacher", s, recipe.teacher_dim, True) for s in teachers]
    for seed in seeds:
        tkey = Job("teacher", "teacher", teacher_seed(recipe, seed), recipe.teacher_dim, True).key
        s_seed = student_seed(recipe, seed)
        for method in SELF_METHODS:
            if method in methods:
                jobs.append(Job("student", method, s_seed, recipe.teacher_dim, False, tkey))
        for dim in sorted(sizes, reverse=True):
            for method in methods:
                if method in SELF_METHODS:
                    continue
                variants = l2 if isinstance(l2, tuple) else l2_variants(method, l2)
                for v in variants:
                    jobs.append(Job("student", method, s_seed, dim, v,
                                    None if METHODS[method].job == "baseline" else tkey))
    return jobs


#: the grids: sizes, methods and L2 variants (per method; "*" for the others)
GRIDS: dict[str, dict[str, Any]] = {
    "full": dict(sizes=(16, 32, 64, 128), methods=DEFAULT_METHODS, l2={"*": "both"}),
    "reduced": dict(sizes=(16, 64), methods=DEFAULT_METHODS, l2={"triplet": "both", "rkd-da": "both", "*": "paper"}),
}
#: the full grid is run when its estimated wall time is at most this, else the reduced one
GRID_LIMIT_HOURS = 6.0
#: the seeds of a study (each fixes the initialisation, the batches and the validation classes)
DEFAULT_SEEDS = (0, 1, 2)
#: the runs of ``--quick``
QUICK_SELECTION = dict(seeds=(0,), sizes=(16,), methods=("triplet", "rkd-da", "self"))


def describe_grid(name: str) -> str:
    """The grid's sizes and L2 variants in words (the help text, the dry run and the report)."""
    g = GRIDS[name]
    l2 = g["l2"]
    both = [m for m, v in l2.items() if m != "*" and v == "both"]
    l2_text = ("with and without student L2 for every method" if l2.get("*") == "both"
               else f"with and without student L2 for {', '.join(METHODS[m].label for m in both)}; "
                    "the paper row's L2 setting for the others")
    return f"d = {', '.join(map(str, g['sizes']))}; {l2_text}"


# --------------------------------------------------------------------------- one run's config


def _common_config(recipe: Recipe, seed: int, device: str = "cpu") -> dict[str, Any]:
    return dict(
        dataset=recipe.dataset, root=recipe.root, image_size=recipe.image_size,
        train_transform=recipe.train_transform, val_fraction=recipe.val_fraction,
        batch_size=recipe.batch_size, m_per_class=recipe.m_per_class, weight_decay=recipe.weight_decay,
        precision=recipe.precision, channels_last=recipe.channels_last,
        seed=seed, device=device, progress=False, num_workers=0,
    )


def job_config(job: Job, recipe: Recipe, out: str | os.PathLike, device: str = "cpu"):
    """The pipeline config of ``job`` (its run directory is ``out/runs/<key>``) on ``device``
    (a runtime setting: the run may continue on another device)."""
    from rkd_pml.training import BaselineConfig, DistillConfig, TeacherConfig

    out = Path(out)
    common = _common_config(recipe, job.seed, device)
    run_dir = str(out / "runs" / job.key)
    if job.kind == "teacher":
        return TeacherConfig(model=recipe.teacher_model, embedding_dim=recipe.teacher_dim, l2_normalize=True,
                             out=run_dir, **common, **recipe.teacher_schedule())
    sched = job_schedule(job, recipe)
    method = METHODS[job.method]
    if method.job == "baseline":
        return BaselineConfig(model=recipe.student_model, embedding_dim=job.dim, l2_normalize=job.l2,
                              out=run_dir, **common, **sched)
    student = recipe.teacher_model if job.method in SELF_METHODS else recipe.student_model
    return DistillConfig(teacher=str(out / "runs" / job.teacher_key), student=student, embedding_dim=job.dim,
                         l2_normalize=job.l2, loss=method.loss, out=run_dir, **common, **sched, **dict(method.extra))


def train(job: Job, cfg) -> dict[str, Any]:
    """Run the package's training job of ``job`` with ``cfg``."""
    from rkd_pml.training import distill, train_baseline, train_teacher

    if job.kind == "teacher":
        return train_teacher(cfg)
    if METHODS[job.method].job == "baseline":
        return train_baseline(cfg)
    return distill(cfg)
