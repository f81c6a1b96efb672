#!/usr/bin/env python
"""Reproduction study of the RKD paper's metric-learning claims on real data (Omniglot).

Every run goes through the package's own training jobs (``rkd_pml.training.train_teacher``,
``train_baseline`` and ``distill``); this script only plans the runs, executes them in a few
worker processes, records each finished run and renders the report.

The study (defaults; see ``--help``):

* data: the Omniglot characters of ``images_background_small1.zip`` at 32 px; the first half
  of the characters trains, the second half (never seen in training) is the test set, and a
  class-disjoint validation split (20 % of the training characters) selects the epoch;
* teacher: timm ``resnet10t`` -> Linear(512) -> L2, triplet loss on distance-weighted
  triplets, trained once (seed 0) or once per seed (``--teacher-per-seed``);
* students: timm ``test_resnet`` (0.38 M parameters, 13x smaller than the teacher) at
  embedding sizes 16, 32, 64, 128, trained with triplet loss (no teacher), FitNet, DarkRank,
  RKD-D, RKD-A or RKD-DA, each without and with L2 normalisation of the student; plus
  self-distillation (student = the teacher's architecture and size, RKD-DA, no L2);
* every student gets the same number of iterations, batch size and learning-rate schedule;
  validation and test Recall@1/2/4/8 are measured every ``--eval-every`` iterations;
* ``--methods self-long`` (not in the default set) adds self-distillation at the teacher's
  budget: the teacher's iterations, evaluation interval and learning-rate schedule.

Outputs in ``--out`` (default ``benchmarks/results/reproduce``)::

    study.json       the recipe (must match to resume), the sessions (command, wall time, machine)
    records.jsonl    one JSON line per finished run, appended and flushed when the run ends
    runs/<key>/      the run directories written by the training jobs
    logs/<key>.log   the training log of each run

Starting the same command again skips every recorded run and continues unfinished ones from
their last checkpoint. The report (``docs/RESULTS.md`` and ``docs/results_recall_vs_dim.png``
by default) is rendered from ``records.jsonl`` at the end, every few runs, and on demand::

    python benchmarks/reproduce.py --out benchmarks/results/reproduce --report-only
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import datetime as _dt
import json
import multiprocessing
import os
import platform
import shlex
import shutil
import signal
import sys
import threading
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(HERE) not in sys.path:  # ``import report`` here and in spawned workers
    sys.path.insert(0, str(HERE))

DEFAULT_OUT = "benchmarks/results/reproduce"
DEFAULT_QUICK_OUT = "benchmarks/results/reproduce-quick"
DEFAULT_REPORT_MD = "docs/RESULTS.md"
DEFAULT_REPORT_PNG = "docs/results_recall_vs_dim.png"
OMNIGLOT_ZIP = REPO.parent / "shared" / "data" / "omniglot" / "images_background_small1.zip"

RECORDS = "records.jsonl"
STUDY = "study.json"
STUDY_FORMAT = "rkd-pml-reproduce/1"

#: method name -> (label in the tables, job, distillation loss name of the pipeline)
METHODS: dict[str, tuple[str, str, str | None]] = {
    "triplet": ("Triplet (no teacher)", "baseline", None),
    "fitnet": ("FitNet", "distill", "fitnet"),
    "darkrank": ("DarkRank", "distill", "darkrank"),
    "rkd-d": ("RKD-D", "distill", "rkd-d"),
    "rkd-a": ("RKD-A", "distill", "rkd-a"),
    "rkd-da": ("RKD-DA", "distill", "rkd"),
    "self": ("Self-distillation (RKD-DA)", "distill", "rkd"),
    "self-long": ("Self-distillation (RKD-DA) at the teacher's budget", "distill", "rkd"),
}
def _registered_methods() -> dict[str, tuple[str, str, str | None]]:
    """Every distillation loss of the package's registry that the table above does not name."""
    from rkd_pml.losses.registry import DISTILLATION_LOSSES

    named = {m[2] for m in METHODS.values()}
    return {name: (entry.help or name, "distill", name) for name, entry in DISTILLATION_LOSSES.items() if name not in named}


METHODS.update(_registered_methods())
STUDENT_METHODS = ("triplet", "fitnet", "darkrank", "rkd-d", "rkd-a", "rkd-da")
#: student = the teacher's architecture and size, no L2; "self-long" trains on the teacher's schedule
SELF_METHODS = ("self", "self-long")
#: the default (and ``--methods all``) selection; "self-long" is asked for by name
DEFAULT_METHODS = (*STUDENT_METHODS, "self")


# --------------------------------------------------------------------------- recipe and jobs


@dataclass
class Recipe:
    """Everything that decides what a run computes; a study directory holds one recipe."""

    dataset: str = "omniglot"
    root: str | None = None
    image_size: int = 32
    #: the RKD recipe scaled to 32 px: resize to 37, random 32 crop, horizontal flip
    train_transform: str = "paper"
    val_fraction: float = 0.2
    batch_size: int = 64
    m_per_class: int = 4
    weight_decay: float = 1e-5
    # teacher
    teacher_model: str = "resnet10t"
    teacher_dim: int = 512
    teacher_iterations: int = 800
    teacher_eval_every: int = 100
    teacher_lr: float = 1e-3
    teacher_per_seed: bool = False
    # students (all methods, same budget)
    student_model: str = "test_resnet"
    iterations: int = 120
    eval_every: int = 40
    lr: float = 2e-3
    #: the learning rate is multiplied by 0.1 after this fraction of the iterations
    lr_drop_at: float = 0.75

    def validate(self) -> None:
        for name in ("iterations", "eval_every", "teacher_iterations", "teacher_eval_every", "batch_size"):
            if getattr(self, name) < 1:
                raise SystemExit(f"--{name.replace('_', '-')} must be at least 1")
        if self.iterations % self.eval_every:
            raise SystemExit(f"--iterations ({self.iterations}) must be a multiple of --eval-every ({self.eval_every})")
        if self.teacher_iterations % self.teacher_eval_every:
            raise SystemExit(
                f"--teacher-iterations ({self.teacher_iterations}) must be a multiple of "
                f"--teacher-eval-every ({self.teacher_eval_every})"
            )
        if not 0 < self.val_fraction < 1:
            raise SystemExit("--val-fraction must be in (0, 1): epochs are selected on the validation split")

    def student_schedule(self) -> dict[str, Any]:
        epochs = self.iterations // self.eval_every
        drop = min(max(1, round(self.lr_drop_at * epochs)), epochs)
        return dict(epochs=epochs, iterations_per_epoch=self.eval_every, lr=self.lr,
                    lr_milestones=(drop,) if drop < epochs else (), lr_gamma=0.1, eval_every=1)

    def teacher_schedule(self) -> dict[str, Any]:
        # the paper's teacher schedule (x0.5 at epochs 25, 30, 35 of 40) scaled to the budget
        epochs = self.teacher_iterations // self.teacher_eval_every
        milestones = sorted({min(max(1, round(f * epochs)), epochs) for f in (25 / 40, 30 / 40, 35 / 40)})
        return dict(epochs=epochs, iterations_per_epoch=self.teacher_eval_every, lr=self.teacher_lr,
                    lr_milestones=tuple(m for m in milestones if m < epochs), lr_gamma=0.5, eval_every=1)


QUICK = dict(
    teacher_model="test_resnet", teacher_dim=32, teacher_iterations=6, teacher_eval_every=3,
    student_model="test_resnet", iterations=4, eval_every=2, batch_size=16, m_per_class=4,
)
QUICK_SELECTION = dict(seeds=(0,), sizes=(16,), methods=("triplet", "rkd-da", "self"))


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
        return METHODS[self.method][1]


def job_schedule(job: Job, recipe: Recipe) -> dict[str, Any]:
    """The teacher's schedule for the teacher and "self-long", the students' for every other run."""
    if job.kind == "teacher" or job.method == "self-long":
        return recipe.teacher_schedule()
    return recipe.student_schedule()


def teacher_seed(recipe: Recipe, seed: int) -> int:
    return seed if recipe.teacher_per_seed else 0


def plan_jobs(recipe: Recipe, seeds: Iterable[int], sizes: Iterable[int], methods: Iterable[str],
              l2_variants: Iterable[bool]) -> list[Job]:
    """All runs of the study, in submission order (teachers, then seed by seed, longest first)."""
    seeds, sizes, methods, l2_variants = list(seeds), list(sizes), list(methods), list(l2_variants)
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
                for l2 in l2_variants:
                    jobs.append(Job("student", method, seed, dim, l2, None if method == "triplet" else tkey))
    return jobs


# --------------------------------------------------------------------------- one run (worker side)


def _common_config(recipe: Recipe, seed: int) -> dict[str, Any]:
    return dict(
        dataset=recipe.dataset, root=recipe.root, image_size=recipe.image_size,
        train_transform=recipe.train_transform, val_fraction=recipe.val_fraction,
        batch_size=recipe.batch_size, m_per_class=recipe.m_per_class, weight_decay=recipe.weight_decay,
        seed=seed, device="cpu", progress=False, num_workers=0,
    )


def job_config(job: Job, recipe: Recipe, out: Path):
    """The pipeline config of ``job`` (its run directory is ``out/runs/<key>``)."""
    from rkd_pml.training import BaselineConfig, DistillConfig, TeacherConfig

    common = _common_config(recipe, job.seed)
    run_dir = str(out / "runs" / job.key)
    if job.kind == "teacher":
        return TeacherConfig(model=recipe.teacher_model, embedding_dim=recipe.teacher_dim, l2_normalize=True,
                             out=run_dir, **common, **recipe.teacher_schedule())
    schedule = job_schedule(job, recipe)
    if job.method == "triplet":
        return BaselineConfig(model=recipe.student_model, embedding_dim=job.dim, l2_normalize=job.l2,
                              out=run_dir, **common, **schedule)
    student = recipe.teacher_model if job.method in SELF_METHODS else recipe.student_model
    return DistillConfig(teacher=str(out / "runs" / job.teacher_key), student=student, embedding_dim=job.dim,
                         l2_normalize=job.l2, loss=METHODS[job.method][2], out=run_dir, **common, **schedule)


def _train(job: Job, cfg) -> dict[str, Any]:
    from rkd_pml.training import distill, train_baseline, train_teacher

    if job.kind == "teacher":
        return train_teacher(cfg)
    if job.method == "triplet":
        return train_baseline(cfg)
    return distill(cfg)


def _metrics(m: dict[str, Any] | None) -> dict[str, float] | None:
    if not m:
        return None
    return {k: round(float(v), 6) for k, v in m.items() if isinstance(v, (int, float))}


def _earliest_best(history: list[dict[str, Any]], split: str) -> dict[str, Any] | None:
    best = None
    for r in history:
        m = r.get(split)
        if isinstance(m, dict) and (best is None or m["recall@1"] > best[split]["recall@1"]):
            best = r
    return best


def build_record(job: Job, recipe: Recipe, run_dir: Path, results: dict[str, Any] | None, wall: float,
                 trained: bool, diverged: str | None = None) -> dict[str, Any]:
    """The record of a finished run: test metrics at the epoch chosen on the validation split,
    at the epoch with the best test Recall@1 (the paper's protocol) and at the last epoch.

    A run whose loss became non-finite (``diverged``) keeps the evaluations made before."""
    from rkd_pml.training import RunDir

    history = [r for r in RunDir(run_dir).read_metrics() if isinstance(r.get("test"), dict)]
    if results is not None:
        ipe = int(results["config"]["iterations_per_epoch"])
    else:
        ipe = int(job_config(job, recipe, run_dir.parent.parent).iterations_per_epoch)
    empty = {"iteration": None, "val": None, "test": None}
    if not history:
        if diverged is None:
            raise RuntimeError(f"{run_dir}: no evaluated epoch in metrics.jsonl")
        best_test = last = selected = None
    else:
        best_test = _earliest_best(history, "test")
        last = history[-1]
        if results is not None:
            sel_epoch = int(results["best_epoch"]) or int(last["epoch"])
            selected = next((r for r in history if int(r["epoch"]) == sel_epoch), last)
        else:
            selected = _earliest_best(history, "val") or last

    def at(r: dict[str, Any] | None, with_val: bool = False) -> dict[str, Any]:
        if r is None:
            return dict(empty)
        out = {"iteration": int(r["epoch"]) * ipe, "test": _metrics(r.get("test"))}
        if with_val:
            out["val"] = _metrics(r.get("val"))
        return out

    total_epochs = int(results["config"]["epochs"]) if results is not None else None
    return {
        "key": job.key,
        "kind": job.kind,
        "method": job.method,
        "group": job.group,
        "seed": job.seed,
        "dim": job.dim,
        "l2": job.l2,
        "model": recipe.teacher_model if job.kind == "teacher" or job.method in SELF_METHODS else recipe.student_model,
        "teacher": job.teacher_key,
        "iterations": ipe * (total_epochs or job_schedule(job, recipe)["epochs"]),
        "selection_split": results.get("selection_split") if results is not None else "val",
        "selected": at(selected, with_val=True),
        "best_on_test": at(best_test),
        "last": at(last),
        "diverged": diverged,
        "curve": [
            [int(r["epoch"]) * ipe,
             round(float(r["val"]["recall@1"]), 6) if isinstance(r.get("val"), dict) else None,
             round(float(r["test"]["recall@1"]), 6)]
            for r in history
        ],
        "train_seconds": results.get("train_seconds") if results is not None else None,
        "wall_seconds": round(wall, 2),
        "trained": trained,
        "finished": _now(),
        "pid": os.getpid(),
    }


def run_job(job: Job, recipe: Recipe, out: str, keep_checkpoints: bool = False) -> dict[str, Any]:
    """Train (or continue, or just collect) one run; return its record. Runs in a worker."""
    out_path = Path(out)
    run_dir = out_path / "runs" / job.key
    log_path = out_path / "logs" / f"{job.key}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    trained = False
    with open(log_path, "a", buffering=1) as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        print(f"--- {_now()} {job.key} (pid {os.getpid()}, {_torch_threads()} torch threads)")
        results_path = run_dir / "results.json"
        if results_path.is_file():  # finished earlier but not recorded (stopped in between)
            results = json.loads(results_path.read_text())
            print("finished earlier: collecting its results")
            record = build_record(job, recipe, run_dir, results, time.perf_counter() - started, trained)
        else:
            cfg = job_config(job, recipe, out_path)
            diverged = None
            try:
                if (run_dir / "config.json").is_file():
                    try:
                        results = _train(job, cfg.replace(resume=True))
                    except ValueError as exc:  # another recipe or an unusable checkpoint: start again
                        print(f"cannot continue ({exc}); starting again")
                        results = _train(job, cfg.replace(overwrite=True))
                else:
                    results = _train(job, cfg.replace(overwrite=True))
            except FloatingPointError as exc:  # a method that diverges is a result, not a crash
                if job.kind == "teacher":
                    raise
                print(f"diverged: {exc}")
                results, diverged = None, str(exc).splitlines()[0]
            trained = True
            record = build_record(job, recipe, run_dir, results, time.perf_counter() - started, trained,
                                  diverged)
        if job.kind != "teacher" and not keep_checkpoints:
            shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        print(f"--- done in {time.perf_counter() - started:.1f}s")
    return record


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def init_worker(threads: int) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning)
    import torch

    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)


# --------------------------------------------------------------------------- records and study file


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def read_records(out: Path) -> dict[str, dict[str, Any]]:
    """Recorded runs by key (a line cut by a crash is ignored; the last record of a key wins)."""
    path = out / RECORDS
    records: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and "key" in rec:
                records[rec["key"]] = rec
    return records


def append_record(out: Path, record: dict[str, Any]) -> None:
    """Append one line with a single write, flushed to disk."""
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    path = out / RECORDS
    # a line cut by a crash is completed with a newline so the next record starts cleanly
    prefix = b""
    if path.is_file() and path.stat().st_size:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                prefix = b"\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, prefix + line)
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def machine_info(workers: int, threads: int) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import torch

    info = {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "workers": workers,
        "threads_per_worker": threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }
    with contextlib.suppress(OSError, AttributeError):
        info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    with contextlib.suppress(Exception):
        import timm

        from rkd_pml._pml import pml_version

        info["timm"] = timm.__version__
        info["pytorch_metric_learning"] = pml_version()
    return info


def open_study(out: Path, recipe: Recipe) -> dict[str, Any]:
    """Read or create study.json; refuse to mix recipes in one directory."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / STUDY
    wanted = asdict(recipe)
    if path.is_file():
        study = json.loads(path.read_text())
        saved = study.get("recipe", {})
        diffs = [f"{k}: {saved.get(k)!r} -> {wanted.get(k)!r}" for k in sorted(set(saved) | set(wanted))
                 if saved.get(k) != wanted.get(k)]
        if diffs:
            raise SystemExit(
                f"{out} holds a study with another recipe ({'; '.join(diffs)}).\n"
                "Repeat its options to continue it, or choose another --out."
            )
        return study
    study = {"format": STUDY_FORMAT, "recipe": wanted, "created": _now(), "sessions": []}
    write_json_atomic(path, study)
    return study


# --------------------------------------------------------------------------- scheduling


#: seconds per iteration of one worker (1 thread) measured before the study on the shared
#: 2-core machine, only used for the first ETA; refined from the finished runs
GUESS_SECONDS_PER_ITERATION = {"teacher": 0.35, "baseline": 0.15, "distill": 0.25, "self": 0.6, "self-long": 0.6}
GUESS_SECONDS_PER_EVAL = {"teacher": 3.0, "baseline": 1.5, "distill": 1.5, "self": 3.0, "self-long": 3.0}


def guess_cost(job: Job, recipe: Recipe) -> float:
    schedule = job_schedule(job, recipe)
    evals = schedule["epochs"]
    its = evals * schedule["iterations_per_epoch"]
    return GUESS_SECONDS_PER_ITERATION[job.group] * its + GUESS_SECONDS_PER_EVAL[job.group] * evals + 5.0


class CostModel:
    """Expected wall seconds per run: the guess, scaled by what finished runs of this session took."""

    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        self.actual: dict[str, float] = {}
        self.guessed: dict[str, float] = {}

    def observe(self, job: Job, seconds: float) -> None:
        self.actual[job.group] = self.actual.get(job.group, 0.0) + seconds
        self.guessed[job.group] = self.guessed.get(job.group, 0.0) + guess_cost(job, self.recipe)

    def scale(self, group: str) -> float:
        if group in self.actual:
            return self.actual[group] / self.guessed[group]
        total_g = sum(self.guessed.values())
        return sum(self.actual.values()) / total_g if total_g else 1.0

    def cost(self, job: Job) -> float:
        return guess_cost(job, self.recipe) * self.scale(job.group)

    def eta(self, pending: Iterable[Job], running: Iterable[tuple[Job, float]], workers: int) -> float:
        now = time.time()
        left = sum(self.cost(j) for j in pending)
        left += sum(max(self.cost(j) - (now - t0), 0.05 * self.cost(j)) for j, t0 in running)
        return left / max(workers, 1)


class SerialExecutor(cf.Executor):
    """Runs each submitted call at once in this process (``--workers 1``)."""

    def submit(self, fn, /, *args, **kwargs):
        future: cf.Future = cf.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller like a pool would
            if isinstance(exc, KeyboardInterrupt):
                raise
            future.set_exception(exc)
        return future


def fmt_duration(seconds: float) -> str:
    seconds = int(round(max(seconds, 0)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _r1(rec: dict[str, Any], which: str) -> str:
    test = (rec.get(which) or {}).get("test") or {}
    return f"{100 * test['recall@1']:5.1f}" if "recall@1" in test else "  -  "


def run_study(args: argparse.Namespace, recipe: Recipe, jobs: list[Job], out: Path) -> int:
    study = open_study(out, recipe)
    records = read_records(out)
    todo = [j for j in jobs if j.key not in records]
    total = len(jobs)
    done_before = total - len(todo)
    cost = CostModel(recipe)
    threads = args.threads
    workers = max(1, min(args.workers, len(todo))) if todo else 1

    session = {
        "command": args.command,
        "started": _now(),
        "wall_seconds": 0.0,
        "runs_trained": 0,
        "planned": total,
        "machine": machine_info(workers, threads),
    }
    study.setdefault("sessions", []).append(session)
    write_json_atomic(out / STUDY, study)
    t_start = time.time()

    def save_session() -> None:
        session["wall_seconds"] = round(time.time() - t_start, 1)
        session["ended"] = _now()
        write_json_atomic(out / STUDY, study)

    guess_total = sum(cost.cost(j) for j in todo) / workers
    print(f"study: {total} runs planned, {done_before} already recorded, {len(todo)} to run "
          f"with {workers} worker(s) x {threads} thread(s); first guess {fmt_duration(guess_total)}", flush=True)
    print(f"out: {out}", flush=True)
    if not todo:
        print("nothing to train: every planned run is recorded", flush=True)
        save_session()
        render(args, out)
        return 0

    failed: dict[str, str] = {}
    pending = list(todo)
    running: dict[cf.Future, tuple[Job, float]] = {}
    finished = done_before
    since_render = 0

    def ready(job: Job) -> bool:
        return job.teacher_key is None or job.teacher_key in records

    if workers > 1:
        ctx = multiprocessing.get_context("spawn")
        os.environ["OMP_NUM_THREADS"] = str(threads)  # inherited by the spawned workers
        os.environ["MKL_NUM_THREADS"] = str(threads)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        executor: cf.Executor = cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=init_worker,
                                                       initargs=(threads,))
        saved_threads = None
    else:
        import torch

        saved_threads = torch.get_num_threads()
        init_worker(threads)
        executor = SerialExecutor()

    previous_sigterm = None
    if threading.current_thread() is threading.main_thread():  # SIGTERM: record the session's wall time
        previous_sigterm = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        while pending or running:
            while len(running) < workers:
                job = next((j for j in pending if ready(j)), None)
                if job is None:
                    break
                pending.remove(job)
                t0 = time.time()
                fut = executor.submit(run_job, job, recipe, str(out), args.keep_checkpoints)
                running[fut] = (job, t0)
                if isinstance(executor, SerialExecutor):
                    break  # already finished: record it before starting the next one
            if not running:
                blocked = ", ".join(j.key for j in pending[:5])
                print(f"cannot continue: {len(pending)} run(s) wait for a teacher that failed ({blocked}, ...)",
                      flush=True)
                break
            done, _ = cf.wait(list(running), return_when=cf.FIRST_COMPLETED)
            for fut in done:
                job, t0 = running.pop(fut)
                elapsed = time.time() - t0
                try:
                    record = fut.result()
                except Exception as exc:  # noqa: BLE001 - one failed run must not stop the study
                    failed[job.key] = f"{type(exc).__name__}: {exc}"
                    print(f"[FAILED] {job.key}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
                          f"(log: {out / 'logs' / (job.key + '.log')})", flush=True)
                    with open(out / "logs" / "failures.log", "a") as f:
                        f.write(f"{_now()} {job.key}\n{''.join(traceback.format_exception(exc))}\n")
                    if job.kind == "teacher":
                        pending = [j for j in pending if j.teacher_key != job.key]
                    continue
                append_record(out, record)
                records[job.key] = record
                finished += 1
                if record.get("trained"):
                    session["runs_trained"] += 1
                    cost.observe(job, record["wall_seconds"])
                save_session()
                eta = cost.eta(pending, running.values(), workers)
                print(
                    f"[{finished:>3}/{total}] {job.key:<24} val-selected R@1 {_r1(record, 'selected')} | "
                    f"best-on-test R@1 {_r1(record, 'best_on_test')} | {elapsed:5.0f}s | "
                    f"elapsed {fmt_duration(time.time() - t_start)} | ETA {fmt_duration(eta)}",
                    flush=True,
                )
                since_render += 1
                if args.render_every and since_render >= args.render_every:
                    since_render = 0
                    render(args, out, quiet=True)
    except KeyboardInterrupt:
        print("interrupted: finished runs are recorded; start the same command again to continue", flush=True)
        raise
    finally:
        if isinstance(executor, cf.ProcessPoolExecutor):
            executor.shutdown(wait=not pending and not running, cancel_futures=True)
        if saved_threads is not None:
            import torch

            torch.set_num_threads(saved_threads)
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)
        save_session()

    print(f"trained {session['runs_trained']} run(s) in {fmt_duration(time.time() - t_start)}; "
          f"{len(read_records(out).keys() & {j.key for j in jobs})}/{total} recorded", flush=True)
    if failed:
        print(f"{len(failed)} run(s) failed (see {out / 'logs' / 'failures.log'}); run the command again to retry:",
              flush=True)
        for key, msg in failed.items():
            print(f"  {key}: {msg.splitlines()[0]}", flush=True)
    render(args, out)
    return 1 if failed else 0


def render(args: argparse.Namespace, out: Path, quiet: bool = False) -> None:
    import importlib

    try:
        import report

        report = importlib.reload(report)  # a long study renders with the current report code
        md = report.render_report(out, args.report_md, args.report_png)
    except Exception as exc:  # noqa: BLE001 - the records are safe; the report can be rendered later
        print(f"report not rendered: {type(exc).__name__}: {exc}", flush=True)
        if not quiet:
            traceback.print_exc()
        return
    if not quiet:
        print(f"report: {md}", flush=True)


# --------------------------------------------------------------------------- command line


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _methods(text: str) -> tuple[str, ...]:
    names = tuple(x.strip().lower() for x in text.split(",") if x.strip())
    if "all" in names:
        return DEFAULT_METHODS
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)} or all")
    return names


def build_parser() -> argparse.ArgumentParser:
    d = Recipe()
    p = argparse.ArgumentParser(
        description="Reproduce the RKD paper's metric-learning claims on Omniglot (resumable).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", default=None, help=f"study directory (default {DEFAULT_OUT}; --quick: {DEFAULT_QUICK_OUT})")
    p.add_argument("--quick", action="store_true",
                   help="tiny study: tiny models and iterations, one seed, one size, triplet/RKD-DA/self")
    sel = p.add_argument_group("which runs")
    sel.add_argument("--seeds", type=_ints, default=None, help="comma-separated seeds (default 0,1,2)")
    sel.add_argument("--sizes", type=_ints, default=None, help="student embedding sizes (default 16,32,64,128)")
    sel.add_argument("--methods", type=_methods, default=None,
                     help=f"comma-separated, from {', '.join(METHODS)} or all (default all: every method "
                          "but self-long, self-distillation at the teacher's budget)")
    sel.add_argument("--l2", choices=("both", "off", "on"), default="both",
                     help="student L2 normalisation variants (self-distillation: off)")
    rec = p.add_argument_group("recipe (must be the same to resume a study)")
    rec.add_argument("--dataset", default=d.dataset)
    rec.add_argument("--root", default=None, help=f"data location (omniglot default: {OMNIGLOT_ZIP})")
    rec.add_argument("--image-size", type=int, default=d.image_size)
    rec.add_argument("--train-transform", default=d.train_transform, choices=("paper", "random_resized_crop", "none"))
    rec.add_argument("--val-fraction", type=float, default=d.val_fraction,
                     help="fraction of the training classes held out to select the epoch")
    rec.add_argument("--batch-size", type=int, default=None, help=f"default {d.batch_size}")
    rec.add_argument("--m-per-class", type=int, default=None, help=f"default {d.m_per_class}")
    rec.add_argument("--teacher-model", default=None, help=f"default {d.teacher_model}")
    rec.add_argument("--teacher-dim", type=int, default=None, help=f"default {d.teacher_dim}")
    rec.add_argument("--teacher-iterations", type=int, default=None, help=f"default {d.teacher_iterations}")
    rec.add_argument("--teacher-eval-every", type=int, default=None, help=f"default {d.teacher_eval_every}")
    rec.add_argument("--teacher-lr", type=float, default=d.teacher_lr)
    rec.add_argument("--teacher-per-seed", action="store_true", help="train one teacher per seed instead of one")
    rec.add_argument("--student-model", default=None, help=f"default {d.student_model}")
    rec.add_argument("--iterations", type=int, default=None, help=f"iterations per student run (default {d.iterations})")
    rec.add_argument("--eval-every", type=int, default=None,
                     help=f"evaluate val and test every this many iterations (default {d.eval_every})")
    rec.add_argument("--lr", type=float, default=d.lr, help="students' Adam learning rate")
    rec.add_argument("--lr-drop-at", type=float, default=d.lr_drop_at, help="lr x0.1 after this fraction")
    exe = p.add_argument_group("execution")
    exe.add_argument("--workers", type=int, default=None, help="parallel worker processes (default 2; --quick 1)")
    exe.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    exe.add_argument("--keep-checkpoints", action="store_true",
                     help="keep the students' checkpoints (deleted once a run is recorded)")
    exe.add_argument("--dry-run", action="store_true", help="list the runs and the first time estimate")
    exe.add_argument("--report-only", action="store_true", help="render the report from the records and exit")
    exe.add_argument("--report-md", default=None,
                     help=f"report path (default {DEFAULT_REPORT_MD}; --quick: OUT/RESULTS.md)")
    exe.add_argument("--report-png", default=None,
                     help=f"figure path (default {DEFAULT_REPORT_PNG}; --quick: OUT/recall_vs_dim.png)")
    exe.add_argument("--render-every", type=int, default=12, help="re-render the report every N recorded runs (0: at the end only)")
    exe.add_argument("--command", default=None, help=argparse.SUPPRESS)
    return p


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    base = dict(QUICK) if args.quick else {}
    overrides = {
        "batch_size": args.batch_size, "m_per_class": args.m_per_class, "teacher_model": args.teacher_model,
        "teacher_dim": args.teacher_dim, "teacher_iterations": args.teacher_iterations,
        "teacher_eval_every": args.teacher_eval_every, "student_model": args.student_model,
        "iterations": args.iterations, "eval_every": args.eval_every,
    }
    base.update({k: v for k, v in overrides.items() if v is not None})
    root = args.root
    if root is None and args.dataset == "omniglot":
        root = os.environ.get("RKD_PML_OMNIGLOT", str(OMNIGLOT_ZIP))
    if root is not None and args.dataset != "digits":
        root = str(Path(root).resolve())
        if not Path(root).exists():
            raise SystemExit(f"data not found: {root} (pass --root, or --dataset digits)")
    recipe = Recipe(
        dataset=args.dataset, root=root if args.dataset != "digits" else None, image_size=args.image_size,
        train_transform=args.train_transform, val_fraction=args.val_fraction, teacher_lr=args.teacher_lr,
        teacher_per_seed=args.teacher_per_seed, lr=args.lr, lr_drop_at=args.lr_drop_at, **base,
    )
    recipe.validate()
    return recipe


def selection(args: argparse.Namespace) -> tuple[tuple[int, ...], tuple[int, ...], tuple[str, ...], tuple[bool, ...]]:
    """Seeds, sizes, methods and student L2 variants chosen on the command line."""
    seeds = args.seeds or (QUICK_SELECTION["seeds"] if args.quick else (0, 1, 2))
    sizes = args.sizes or (QUICK_SELECTION["sizes"] if args.quick else (16, 32, 64, 128))
    methods = args.methods or (QUICK_SELECTION["methods"] if args.quick else DEFAULT_METHODS)
    l2_variants = {"both": (False, True), "off": (False,), "on": (True,)}[args.l2]
    return seeds, sizes, methods, l2_variants


def planned_keys(command: str, recipe: dict[str, Any]) -> list[str]:
    """The keys of the runs that a recorded session command plans in a study of ``recipe``."""
    args = build_parser().parse_args(shlex.split(command)[2:])  # after "python benchmarks/reproduce.py"
    return [j.key for j in plan_jobs(Recipe(**recipe), *selection(args))]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command is None:
        shown = ["python", os.path.relpath(__file__, Path.cwd()) if Path(__file__).is_absolute() else __file__,
                 *(sys.argv[1:] if argv is None else argv)]
        args.command = " ".join(shlex.quote(a) for a in shown)
    out = Path(args.out or (DEFAULT_QUICK_OUT if args.quick else DEFAULT_OUT)).resolve()
    if args.report_md is None:
        args.report_md = str(out / "RESULTS.md") if args.quick else str(REPO / DEFAULT_REPORT_MD)
    if args.report_png is None:
        args.report_png = str(out / "recall_vs_dim.png") if args.quick else str(REPO / DEFAULT_REPORT_PNG)
    if args.report_only:
        if not (out / RECORDS).is_file():
            raise SystemExit(f"no records in {out}: run the study first")
        render(args, out)
        return 0
    recipe = recipe_from_args(args)
    if args.workers is None:
        args.workers = 1 if args.quick else 2
    jobs = plan_jobs(recipe, *selection(args))
    if args.dry_run:
        records = read_records(out)
        cost = CostModel(recipe)
        todo = [j for j in jobs if j.key not in records]
        for j in jobs:
            print(f"{'done' if j.key in records else 'todo'}  {j.key:<26} ~{guess_cost(j, recipe):5.0f}s")
        print(f"{len(todo)}/{len(jobs)} to run; first guess {fmt_duration(sum(cost.cost(j) for j in todo) / args.workers)} "
              f"with {args.workers} worker(s)")
        return 0
    return run_study(args, recipe, jobs, out)


if __name__ == "__main__":
    sys.exit(main())
