"""What the reproduction study trains: methods, recipe, runs, grids, budgets and their cost.

Used by ``benchmarks/reproduce.py`` (which executes and records the runs) and
``benchmarks/report.py`` (which renders the report); nothing here trains a model except
:func:`measure_costs`, the short timing behind ``reproduce.py --dry-run --measure-steps N``.

* Methods: triplet (no teacher), FitNet, DarkRank, RKD-D, RKD-A, RKD-DA, RKD-DA + triplet
  (the student's triplet loss added to RKD-DA) and RKD-DA + FitNet (:class:`RKDFitNetLoss`,
  registered here as the distillation loss ``rkd-fitnet``); self-distillation (student = the
  teacher's architecture and width, RKD-DA, no L2).
* Budgets: every run has ``iterations`` split into ``evals`` equal epochs, each ending with an
  evaluation of the validation and the test split; the learning rate is multiplied by
  ``lr_gamma`` after the given fractions of the budget (students: x0.1 after 50 % and 75 %, as
  the paper's 80-epoch student schedule; teacher: x0.5 after 25/40, 30/40, 35/40).
  Self-distillation trains ``self_scale`` (2) times the teacher's iterations, the paper's ratio.
* Curves (:func:`curve_recipe`, :func:`plan_curve_jobs`): one teacher and one student per
  method at a long budget with a constant learning rate; :func:`plateau` finds where the
  validation Recall@1 stops improving and :func:`choose_budgets` turns that into the budgets.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

from torch import nn

# --------------------------------------------------------------------------- methods


class RKDFitNetLoss(nn.Module):
    """RKD-DA plus FitNet on the final embedding: ``RKDLoss(distance, angle) + fitnet_weight x FitNet``.

    Called like every distillation loss, ``loss(student_emb, labels, None, ref_emb=teacher_emb)``.
    FitNet's linear map to the teacher's width is a sub-module, so its parameters reach the
    optimizer and the checkpoints through the training objective.
    """

    def __init__(self, student_dim: int, teacher_dim: int, distance_weight: float = 1.0, angle_weight: float = 2.0,
                 fitnet_weight: float = 1.0):
        super().__init__()
        from rkd_pml.losses import RKDLoss
        from rkd_pml.losses.fitnet import FitNetEmbeddingLoss

        self.rkd = RKDLoss(distance_weight=distance_weight, angle_weight=angle_weight)
        self.fitnet = FitNetEmbeddingLoss(student_dim, teacher_dim)
        self.fitnet_weight = float(fitnet_weight)

    def forward(self, embeddings, labels=None, indices_tuple=None, ref_emb=None, ref_labels=None):
        return (self.rkd(embeddings, labels, indices_tuple, ref_emb=ref_emb)
                + self.fitnet_weight * self.fitnet(embeddings, labels, None, ref_emb=ref_emb))


COMBINED_FITNET_LOSS = "rkd-fitnet"


def register_losses() -> None:
    """Register ``rkd-fitnet`` (idempotent; every process that builds or resumes such a run calls it)."""
    from rkd_pml.losses.registry import DISTILLATION_LOSSES, register_distillation_loss

    if COMBINED_FITNET_LOSS not in DISTILLATION_LOSSES:
        register_distillation_loss(
            COMBINED_FITNET_LOSS,
            lambda cfg, s, t: RKDFitNetLoss(s, t, cfg.distance_weight, cfg.angle_weight, 1.0),
            "RKD-DA + FitNet: distance_weight x RKD-D + angle_weight x RKD-A + FitNet (map to the teacher's width, MSE)",
        )


register_losses()


@dataclass(frozen=True)
class Method:
    label: str
    #: "baseline" (triplet, no teacher) or "distill"
    job: str
    #: the distillation loss name (None: no teacher)
    loss: str | None
    #: extra DistillConfig settings
    extra: tuple[tuple[str, Any], ...] = ()
    #: the student L2 setting of the paper's row for this method (the reduced grid's single variant)
    paper_l2: bool = False
    #: how the report describes the objective
    describe: str = ""


METHODS: dict[str, Method] = {
    "triplet": Method("Triplet (no teacher)", "baseline", None, paper_l2=True,
                      describe="triplet loss (margin 0.2) on distance-weighted triplets, no teacher"),
    "fitnet": Method("FitNet", "distill", "fitnet", paper_l2=True,
                     describe="learned linear map to the teacher's width + MSE"),
    "darkrank": Method("DarkRank", "distill", "darkrank", paper_l2=True,
                       describe="hard DarkRank (alpha 3, beta 3, list of 4)"),
    "rkd-d": Method("RKD-D", "distill", "rkd-d", describe="RKD distance loss (weight 1) alone"),
    "rkd-a": Method("RKD-A", "distill", "rkd-a", describe="RKD angle loss (weight 2) alone"),
    "rkd-da": Method("RKD-DA", "distill", "rkd", describe="1 x distance + 2 x angle, no other loss"),
    "rkd-da-triplet": Method("RKD-DA + triplet", "distill", "rkd",
                             (("student_metric_loss", "triplet"), ("student_metric_weight", 1.0)),
                             describe="RKD-DA + 1 x the student's triplet loss (margin 0.2, distance-weighted triplets)"),
    "rkd-da-fitnet": Method("RKD-DA + FitNet", "distill", COMBINED_FITNET_LOSS,
                            describe="RKD-DA + 1 x FitNet (map to the teacher's width, MSE)"),
    "self": Method("Self-distillation (RKD-DA)", "distill", "rkd",
                   describe="student = the teacher's architecture and width, RKD-DA, no L2"),
    "self-long": Method("Self-distillation (RKD-DA) at the teacher's budget", "distill", "rkd",
                        describe="student = the teacher's architecture and width, RKD-DA, no L2, the teacher's schedule"),
}
#: the student methods, in the order of the tables
STUDENT_METHODS = ("triplet", "fitnet", "darkrank", "rkd-d", "rkd-a", "rkd-da", "rkd-da-triplet", "rkd-da-fitnet")
#: the paper's six rows (the first study's methods)
PAPER_METHODS = STUDENT_METHODS[:6]
#: student = the teacher's architecture and size, no L2; "self-long" trains on the teacher's schedule
SELF_METHODS = ("self", "self-long")
#: the default (and ``--methods all``) selection; "self-long" is asked for by name
DEFAULT_METHODS = (*STUDENT_METHODS, "self")
#: the first study's default selection (its records and commands are read with it)
LEGACY_DEFAULT_METHODS = (*PAPER_METHODS, "self")


def _registered_methods() -> dict[str, Method]:
    """Every distillation loss of the package's registry that the table above does not name."""
    from rkd_pml.losses.registry import DISTILLATION_LOSSES

    named = {m.loss for m in METHODS.values()}
    return {name: Method(entry.help or name, "distill", name, describe=entry.help or name)
            for name, entry in DISTILLATION_LOSSES.items() if name not in named and name not in METHODS}


METHODS.update(_registered_methods())


# --------------------------------------------------------------------------- recipe


#: the first study's budgets, the unit of ``--budget-scale``
BASE_STUDENT_ITERATIONS = 120
BASE_TEACHER_ITERATIONS = 800
#: the paper's teacher schedule (x0.5 after epochs 25, 30, 35 of 40) as fractions of the budget
TEACHER_DROPS = (25 / 40, 30 / 40, 35 / 40)
#: the paper's student schedule (x0.1 after epochs 40, 60 of 80)
STUDENT_DROPS = (0.5, 0.75)


@dataclass
class Recipe:
    """Everything that decides what a run computes; a study directory holds one recipe."""

    dataset: str = "omniglot"
    root: str | None = None
    image_size: int = 32
    #: the RKD recipe scaled to the image size: resize to S*256/224, random S crop, horizontal flip
    train_transform: str = "paper"
    #: half of the training classes select the epoch (34 of Omniglot's 68 training characters)
    val_fraction: float = 0.5
    batch_size: int = 64
    m_per_class: int = 4
    weight_decay: float = 1e-5
    #: autocast precision and memory format of every run (``--fast``: bf16, channels-last)
    precision: str = "fp32"
    channels_last: bool = False
    # teacher
    teacher_model: str = "resnet10t"
    teacher_dim: int = 512
    teacher_iterations: int = 2400
    #: evaluations per teacher run (its epochs: one evaluation at the end of each)
    teacher_evals: int = 40
    teacher_lr: float = 1e-3
    teacher_lr_drops: tuple[float, ...] = TEACHER_DROPS
    teacher_lr_gamma: float = 0.5
    teacher_per_seed: bool = True
    # students (all methods, same budget)
    student_model: str = "test_resnet"
    iterations: int = 1200
    evals: int = 20
    lr: float = 2e-3
    lr_drops: tuple[float, ...] = STUDENT_DROPS
    lr_gamma: float = 0.1
    #: self-distillation trains this many times the teacher's iterations on the students' schedule
    #: (the paper: 80 vs 40 epochs); None: the students' budget (the first study)
    self_scale: float | None = 2.0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Recipe":
        """A recipe from study.json, including the first study's (``eval_every``, ``lr_drop_at``)."""
        data = dict(data)
        if "eval_every" in data or "lr_drop_at" in data:  # the first study's recipe
            data["evals"] = int(data["iterations"]) // int(data.pop("eval_every"))
            data["lr_drops"] = (float(data.pop("lr_drop_at")),)
            data["teacher_evals"] = int(data["teacher_iterations"]) // int(data.pop("teacher_eval_every"))
            data.setdefault("val_fraction", 0.2)
            data.setdefault("teacher_per_seed", False)
            data.setdefault("self_scale", None)
            data.setdefault("teacher_lr_drops", TEACHER_DROPS)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown recipe field(s) {unknown}")
        for name in ("lr_drops", "teacher_lr_drops"):
            if name in data:
                data[name] = tuple(float(x) for x in data[name])
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for name in ("lr_drops", "teacher_lr_drops"):
            d[name] = list(d[name])
        return d

    def validate(self) -> None:
        for name in ("iterations", "evals", "teacher_iterations", "teacher_evals", "batch_size"):
            if getattr(self, name) < 1:
                raise SystemExit(f"--{name.replace('_', '-')} must be at least 1")
        for its, evals, what in ((self.iterations, self.evals, "students"),
                                 (self.teacher_iterations, self.teacher_evals, "teacher")):
            if its % evals:
                raise SystemExit(f"the {what}' {its} iterations must be a multiple of their {evals} evaluations")
        if self.self_scale is not None:
            its = self.self_iterations
            if its % self.evals:
                raise SystemExit(f"self-distillation's {its} iterations must be a multiple of {self.evals} evaluations")
        for name in ("lr_drops", "teacher_lr_drops"):
            if any(not 0 < f < 1 for f in getattr(self, name)):
                raise SystemExit(f"--{name.replace('_', '-')}: fractions of the budget, each in (0, 1)")
        if not 0 < self.val_fraction < 1:
            raise SystemExit("--val-fraction must be in (0, 1): epochs are selected on the validation split")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise SystemExit(f"unknown precision {self.precision!r}")

    @property
    def self_iterations(self) -> int:
        if self.self_scale is None:
            return self.iterations
        return int(round(self.self_scale * self.teacher_iterations))

    def student_schedule(self, iterations: int | None = None) -> dict[str, Any]:
        return schedule(iterations or self.iterations, self.evals, self.lr, self.lr_drops, self.lr_gamma)

    def teacher_schedule(self) -> dict[str, Any]:
        return schedule(self.teacher_iterations, self.teacher_evals, self.teacher_lr, self.teacher_lr_drops,
                        self.teacher_lr_gamma)


def milestones(epochs: int, drops: Iterable[float]) -> tuple[int, ...]:
    """Epochs after which the learning rate drops: each fraction of ``epochs``, rounded, within the run."""
    ms = sorted({min(max(1, round(f * epochs)), epochs) for f in drops})
    return tuple(m for m in ms if m < epochs)


def schedule(iterations: int, evals: int, lr: float, drops: Sequence[float], gamma: float) -> dict[str, Any]:
    """TrainConfig settings: ``evals`` epochs of ``iterations / evals`` steps, evaluated after each."""
    return dict(epochs=evals, iterations_per_epoch=iterations // evals, lr=lr,
                lr_milestones=milestones(evals, drops), lr_gamma=gamma, eval_every=1)


def round_up(n: float, multiple: int) -> int:
    return int(max(multiple, math.ceil(n / multiple) * multiple))


QUICK = dict(
    teacher_model="test_resnet", teacher_dim=32, teacher_iterations=6, teacher_evals=2,
    student_model="test_resnet", iterations=4, evals=2, batch_size=16, m_per_class=4,
)
QUICK_SELECTION = dict(seeds=(0,), sizes=(16,), methods=("triplet", "rkd-da", "self"))


# --------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class Job:
    kind: str  # "teacher" | "student"
    method: str  # "teacher", one of METHODS
    seed: int
    dim: int
    l2: bool
    teacher_key: str | None = None

    @property
    def key(self) -> str:
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
    return seed if recipe.teacher_per_seed else 0


#: which student L2 variants a method trains: "both", "off", "on" or "paper" (the paper row's setting)
L2_CHOICES = ("both", "off", "on", "paper")


def l2_variants(method: str, spec: str | dict[str, str]) -> tuple[bool, ...]:
    if isinstance(spec, dict):
        spec = spec.get(method, spec.get("*", "both"))
    if spec == "paper":
        return (METHODS[method].paper_l2,) if method in METHODS else (False,)
    return {"both": (False, True), "off": (False,), "on": (True,)}[spec]


def plan_jobs(recipe: Recipe, seeds: Iterable[int], sizes: Iterable[int], methods: Iterable[str],
              l2: Iterable[bool] | str | dict[str, str]) -> list[Job]:
    """All runs of the study, in submission order (teachers, then seed by seed, longest first).

    ``l2``: the student L2 variants of every method (booleans), or a spec of :data:`L2_CHOICES`
    (one for all, or per method with "*" for the others)."""
    seeds, sizes, methods = list(seeds), list(sizes), list(methods)
    if not isinstance(l2, (str, dict)):
        l2 = tuple(l2)
    teachers = sorted({teacher_seed(recipe, s) for s in seeds})
    jobs = [Job("teacher", "teacher", s, recipe.teacher_dim, True) for s in teachers]
    for seed in seeds:
        tkey = Job("teacher", "teacher", teacher_seed(recipe, seed), recipe.teacher_dim, True).key
        for method in SELF_METHODS:
            if method in methods:
                jobs.append(Job("student", method, seed, recipe.teacher_dim, False, tkey))
        for dim in sorted(sizes, reverse=True):
            for method in methods:
                if method in SELF_METHODS:
                    continue
                variants = l2 if isinstance(l2, tuple) else l2_variants(method, l2)
                for v in variants:
                    jobs.append(Job("student", method, seed, dim, v, None if METHODS[method].job == "baseline" else tkey))
    return jobs


#: the grids: sizes, methods and L2 variants (per method; "*" for the others)
GRIDS: dict[str, dict[str, Any]] = {
    "full": dict(sizes=(16, 32, 64, 128), methods=DEFAULT_METHODS, l2={"*": "both"}),
    "reduced": dict(sizes=(16, 64), methods=DEFAULT_METHODS, l2={"triplet": "both", "rkd-da": "both", "*": "paper"}),
}
#: the full grid is run when its estimated wall time is at most this, else the reduced one
GRID_LIMIT_HOURS = 6.0
DEFAULT_SEEDS = (0, 1, 2)


def describe_grid(name: str) -> str:
    g = GRIDS[name]
    l2 = g["l2"]
    both = [m for m, v in l2.items() if m != "*" and v == "both"]
    l2_text = ("with and without student L2 for every method" if l2.get("*") == "both"
               else f"with and without student L2 for {', '.join(METHODS[m].label for m in both)}; "
                    "the paper row's L2 setting for the others")
    return f"d = {', '.join(map(str, g['sizes']))}; {l2_text}"


# --------------------------------------------------------------------------- one run's config


def _common_config(recipe: Recipe, seed: int) -> dict[str, Any]:
    return dict(
        dataset=recipe.dataset, root=recipe.root, image_size=recipe.image_size,
        train_transform=recipe.train_transform, val_fraction=recipe.val_fraction,
        batch_size=recipe.batch_size, m_per_class=recipe.m_per_class, weight_decay=recipe.weight_decay,
        precision=recipe.precision, channels_last=recipe.channels_last,
        seed=seed, device="cpu", progress=False, num_workers=0,
    )


def job_config(job: Job, recipe: Recipe, out):
    """The pipeline config of ``job`` (its run directory is ``out/runs/<key>``)."""
    from pathlib import Path

    from rkd_pml.training import BaselineConfig, DistillConfig, TeacherConfig

    out = Path(out)
    common = _common_config(recipe, job.seed)
    run_dir = str(out / "runs" / job.key)
    if job.kind == "teacher":
        return TeacherConfig(model=recipe.teacher_model, embedding_dim=recipe.teacher_dim, l2_normalize=True,
                             out=run_dir, **common, **recipe.teacher_schedule())
    sched = job_schedule(job, recipe)
    method = METHODS[job.method]
    if method.job == "baseline":
        return BaselineConfig(model=recipe.student_model, embedding_dim=job.dim, l2_normalize=job.l2,
                              out=run_dir, **common, **sched)
    register_losses()
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
    register_losses()
    return distill(cfg)


# --------------------------------------------------------------------------- curves and budgets


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


def _smooth(values: Sequence[float], window: int) -> list[float]:
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
    val = _smooth([100.0 * float(r[1]) for r in rows], smooth)
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
    what = (f"the first evaluation after which the best validation Recall@1 (averaged over {smooth} consecutive "
            f"evaluations) rises less than {points:g} points over the rest of the run")
    if rule == "first-drop":
        return (f"plateau = {what}; budget = plateau / (first learning-rate drop as a fraction of the budget), so the "
                "full learning rate runs until the curve stops improving and the drops refine from there")
    return f"plateau = {what}; budget = the plateau"


# --------------------------------------------------------------------------- cost


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
RUN_OVERHEAD_SECONDS = 3.0


def _guess_tables(recipe: Recipe) -> tuple[dict[str, float], dict[str, float]]:
    key = "fp32" if recipe.precision == "fp32" else "bf16"
    return GUESS_SECONDS_PER_ITERATION[key], GUESS_SECONDS_PER_EVAL[key]


def guess_cost(job: Job, recipe: Recipe, per_iteration: dict[str, float] | None = None,
               per_eval: dict[str, float] | None = None) -> float:
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
        return guess_cost(job, self.recipe, self.per_iteration, self.per_eval)

    def observe(self, job: Job, seconds: float) -> None:
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
        if group in self.actual:
            return self.actual[group] / self.guessed[group]
        total_g = sum(self.guessed.values())
        return sum(self.actual.values()) / total_g if total_g else 1.0

    def cost(self, job: Job) -> float:
        return self.base(job) * self.scale(job.group)

    def total(self, jobs: Iterable[Job], workers: int, done: Iterable[str] = ()) -> float:
        """Wall seconds of the runs of ``jobs`` not in ``done`` on ``workers`` workers."""
        done = set(done)
        todo = [j for j in jobs if j.key not in done]
        return schedule_length([self.cost(j) for j in todo], todo, workers)

    def eta(self, pending: Iterable[Job], running: Iterable[tuple[Job, float]], workers: int) -> float:
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


def measure_costs(recipe: Recipe, steps: int, workdir: str) -> tuple[dict[str, float], dict[str, float]]:
    """Seconds per training step and per evaluation of each cost group, timed on a few steps.

    Trains a teacher, a baseline, an RKD-DA student and a self-distilled student for ``steps``
    iterations (after one warm-up epoch of the same length) with the recipe's data, models and
    precision, one evaluation each; the teacher of the distillation runs is the one just timed."""
    import contextlib
    import io
    from pathlib import Path

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
        cfg = job_config(job, probe, work).replace(overwrite=True)
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
