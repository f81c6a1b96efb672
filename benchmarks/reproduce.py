#!/usr/bin/env python
"""Reproduction study of the RKD paper's metric-learning claims on real data (Omniglot by default).

Every run goes through the package's own training jobs (``rkd_pml.training.train_teacher``,
``train_baseline`` and ``distill``); this script plans the runs (``benchmarks/study_plan.py``),
executes them in a few worker processes, records each finished run and renders the report
(``benchmarks/report.py``).

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
improving (``study_plan.plateau``). Typical session::

    python benchmarks/reproduce.py --curves                       # curves.png, budgets.json
    python benchmarks/reproduce.py --budgets benchmarks/results/reproduce-curves/budgets.json --dry-run
    python benchmarks/reproduce.py --budgets benchmarks/results/reproduce-curves/budgets.json
    python benchmarks/reproduce.py --report-only --docs docs      # docs/RESULTS.md + figures

Outputs in ``--out`` (default ``benchmarks/results/reproduce-converged``)::

    study.json       the recipe (must match to resume), grid, budgets' source, data file, sessions
    records.jsonl    one JSON line per finished run, appended and flushed when the run ends
    runs/<key>/      the run directories written by the training jobs
    logs/<key>.log   the training log of each run
    RESULTS.md       the report (and its figure), unless ``--docs DIR`` puts them in DIR

Starting the same command again skips every recorded run and continues unfinished ones from
their last checkpoint.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import datetime as _dt
import hashlib
import json
import multiprocessing
import os
import platform
import re
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(HERE) not in sys.path:  # ``import study_plan, report`` here and in spawned workers
    sys.path.insert(0, str(HERE))

import study_plan  # noqa: E402
from study_plan import (  # noqa: E402,F401 - the study's plan, re-exported for the report and the tests
    BASE_STUDENT_ITERATIONS,
    BASE_TEACHER_ITERATIONS,
    BUDGET_RULES,
    CURVE_DIM,
    CURVE_EVALS,
    CURVE_SCALE,
    CURVE_TEACHER_SCALE,
    DEFAULT_METHODS,
    DEFAULT_SEEDS,
    GRID_LIMIT_HOURS,
    GRIDS,
    L2_CHOICES,
    LEGACY_DEFAULT_METHODS,
    METHODS,
    PLATEAU_POINTS,
    PLATEAU_SMOOTH,
    QUICK,
    QUICK_SELECTION,
    SELF_METHODS,
    STUDENT_METHODS,
    CostModel,
    Job,
    Recipe,
    guess_cost,
    job_config,
    job_schedule,
    plan_curve_jobs,
    plan_jobs,
    round_up,
    teacher_seed,
)

DEFAULT_OUT = "benchmarks/results/reproduce-converged"
DEFAULT_CURVES_OUT = "benchmarks/results/reproduce-curves"
DEFAULT_QUICK_OUT = "benchmarks/results/reproduce-quick"
REPORT_MD = "RESULTS.md"
REPORT_PNG = "results_recall_vs_dim.png"
OMNIGLOT_ZIP = REPO.parent / "shared" / "data" / "omniglot" / "images_background_small1.zip"

RECORDS = "records.jsonl"
STUDY = "study.json"
BUDGETS = "budgets.json"
STUDY_FORMAT = "rkd-pml-reproduce/2"
LEGACY_FORMAT = "rkd-pml-reproduce/1"


def asdict(recipe: Recipe) -> dict[str, Any]:
    """The recipe as study.json holds it."""
    return recipe.to_dict()


# --------------------------------------------------------------------------- one run (worker side)


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


_DATA_LINE = re.compile(r"train (\d+) images / (\d+) classes(?:, val (\d+) / (\d+))?, test (\d+) / (\d+)")


def data_counts(log_path: Path) -> dict[str, dict[str, int]] | None:
    """Images and classes of each split, as the training job's log line states them."""
    with contextlib.suppress(OSError):
        found = _DATA_LINE.findall(log_path.read_text(errors="replace"))
        if found:
            g = [int(x) if x else None for x in found[-1]]
            out = {"train": {"images": g[0], "classes": g[1]}, "test": {"images": g[4], "classes": g[5]}}
            if g[2] is not None:
                out["val"] = {"images": g[2], "classes": g[3]}
            return out
    return None


def build_record(job: Job, recipe: Recipe, run_dir: Path, results: dict[str, Any] | None, wall: float,
                 trained: bool, diverged: str | None = None) -> dict[str, Any]:
    """The record of a finished run: test metrics at the epoch chosen on the validation split,
    at the epoch with the best test Recall@1 (the paper's protocol) and at the last epoch, and
    the validation and test Recall@1 of every evaluation (``curve``).

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
        "data": data_counts(run_dir.parent.parent / "logs" / f"{job.key}.log"),
        "precision": recipe.precision,
        "train_seconds": results.get("train_seconds") if results is not None else None,
        "wall_seconds": round(wall, 2),
        "trained": trained,
        "finished": _now(),
        "pid": os.getpid(),
    }


def run_job(job: Job, recipe: Recipe, out: str, keep_checkpoints: bool = False) -> dict[str, Any]:
    """Train (or continue, or just collect) one run; return its record. Runs in a worker."""
    study_plan.register_losses()
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
                        results = study_plan.train(job, cfg.replace(resume=True))
                    except ValueError as exc:  # another recipe or an unusable checkpoint: start again
                        print(f"cannot continue ({exc}); starting again")
                        results = study_plan.train(job, cfg.replace(overwrite=True))
                else:
                    results = study_plan.train(job, cfg.replace(overwrite=True))
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
    study_plan.register_losses()


# --------------------------------------------------------------------------- records and study file


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def read_records(out: Path) -> dict[str, dict[str, Any]]:
    """Recorded runs by key (a line cut by a crash is ignored; the last record of a key wins)."""
    path = Path(out) / RECORDS
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


def data_info(recipe: Recipe) -> dict[str, Any]:
    """The data the study reads: data set, location, and the file's size and SHA-256 (a folder: its files)."""
    info: dict[str, Any] = {"dataset": recipe.dataset, "root": recipe.root}
    if recipe.root is None:
        return info
    root = Path(recipe.root)
    info["name"] = root.name
    with contextlib.suppress(OSError):
        if root.is_file():
            info["bytes"] = root.stat().st_size
            if info["bytes"] <= 1 << 30:
                h = hashlib.sha256()
                with open(root, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
                info["sha256"] = h.hexdigest()
        elif root.is_dir():
            files = [p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")]
            info["files"], info["bytes"] = len(files), sum(p.stat().st_size for p in files)
    return info


def open_study(out: Path, recipe: Recipe, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read or create study.json; refuse to mix recipes (or a study and curves) in one directory."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / STUDY
    wanted = recipe.to_dict()
    meta = dict(meta or {})
    mode = meta.get("mode", "study")
    if path.is_file():
        study = json.loads(path.read_text())
        saved = Recipe.from_dict(study.get("recipe", {})).to_dict()
        diffs = [f"{k}: {saved.get(k)!r} -> {wanted.get(k)!r}" for k in sorted(set(saved) | set(wanted))
                 if saved.get(k) != wanted.get(k)]
        if diffs:
            raise SystemExit(
                f"{out} holds a study with another recipe ({'; '.join(diffs)}).\n"
                "Repeat its options to continue it, or choose another --out."
            )
        if study.get("mode", "study") != mode:
            raise SystemExit(f"{out} holds {study.get('mode', 'study')} runs, not {mode}: choose another --out")
        return study
    study = {"format": STUDY_FORMAT, "mode": mode, "recipe": wanted, "created": _now(), **meta, "sessions": []}
    write_json_atomic(path, study)
    ignore = out / ".gitignore"
    if not ignore.exists():  # the run directories and logs stay out of version control; records and report do not
        ignore.write_text("runs/\nlogs/\n")
    return study


def read_study(out: Path) -> dict[str, Any] | None:
    path = Path(out) / STUDY
    return json.loads(path.read_text()) if path.is_file() else None


# --------------------------------------------------------------------------- scheduling


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


def run_study(args: argparse.Namespace, recipe: Recipe, jobs: list[Job], out: Path,
              meta: dict[str, Any] | None = None, render_fn: Callable[..., None] | None = None,
              cost: CostModel | None = None) -> int:
    render_fn = render_fn or render
    study = open_study(out, recipe, meta)
    for key, value in (meta or {}).items():  # what this session chose (a later session may extend the grid)
        if key != "mode":
            study[key] = value
    records = read_records(out)
    todo = [j for j in jobs if j.key not in records]
    total = len(jobs)
    done_before = total - len(todo)
    cost = cost or CostModel(recipe)
    threads = args.threads
    workers = max(1, min(args.workers, len(todo))) if todo else 1

    session = {
        "command": args.command,
        "started": _now(),
        "wall_seconds": 0.0,
        "runs_trained": 0,
        "planned": total,
        "planned_keys": [j.key for j in jobs],
        "grid": (meta or {}).get("grid", {}).get("name"),
        "data": data_info(recipe),
        "machine": machine_info(workers, threads),
    }
    study.setdefault("sessions", []).append(session)
    write_json_atomic(out / STUDY, study)
    t_start = time.time()

    def save_session() -> None:
        session["wall_seconds"] = round(time.time() - t_start, 1)
        session["ended"] = _now()
        write_json_atomic(out / STUDY, study)

    guess_total = cost.total(todo, workers)
    print(f"study: {total} runs planned, {done_before} already recorded, {len(todo)} to run "
          f"with {workers} worker(s) x {threads} thread(s); first guess {fmt_duration(guess_total)}", flush=True)
    print(f"out: {out}", flush=True)
    if not todo:
        print("nothing to train: every planned run is recorded", flush=True)
        save_session()
        render_fn(args, out)
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
                    f"[{finished:>3}/{total}] {job.key:<28} val-selected R@1 {_r1(record, 'selected')} | "
                    f"best-on-test R@1 {_r1(record, 'best_on_test')} | {elapsed:5.0f}s | "
                    f"elapsed {fmt_duration(time.time() - t_start)} | ETA {fmt_duration(eta)}",
                    flush=True,
                )
                since_render += 1
                if args.render_every and since_render >= args.render_every:
                    since_render = 0
                    render_fn(args, out, quiet=True)
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
    render_fn(args, out)
    return 1 if failed else 0


def _report_module():
    import importlib

    import report

    return importlib.reload(report)  # a long study renders with the current report code


def render(args: argparse.Namespace, out: Path, quiet: bool = False) -> None:
    try:
        md = _report_module().render_report(out, args.report_md, args.report_png)
    except Exception as exc:  # noqa: BLE001 - the records are safe; the report can be rendered later
        print(f"report not rendered: {type(exc).__name__}: {exc}", flush=True)
        if not quiet:
            traceback.print_exc()
        return
    if not quiet:
        print(f"report: {md}", flush=True)


def render_curves(args: argparse.Namespace, out: Path, quiet: bool = False) -> None:
    try:
        budgets = _report_module().render_curves(out, rule=args.budget_rule, points=args.plateau_points,
                                                 smooth=args.plateau_smooth)
    except Exception as exc:  # noqa: BLE001
        print(f"curves not rendered: {type(exc).__name__}: {exc}", flush=True)
        if not quiet:
            traceback.print_exc()
        return
    if not quiet:
        print(f"curves: {out / 'curves.png'}; budgets: {out / BUDGETS} (teacher {budgets['teacher_iterations']}, "
              f"students {budgets['iterations']}, self-distillation {budgets['self_iterations']} iterations"
              f"{'' if budgets['complete'] else '; the curves are not complete'})", flush=True)


# --------------------------------------------------------------------------- command line


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _fractions(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated fractions, got {text!r}") from None


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
                     help=f"full: {study_plan.describe_grid('full')}; reduced: {study_plan.describe_grid('reduced')}; "
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
    exe.add_argument("--threads", type=int, default=1, help="torch threads per worker")
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
    root = args.root
    if root is None and args.dataset == "omniglot":
        root = os.environ.get("RKD_PML_OMNIGLOT", str(OMNIGLOT_ZIP))
    if root is not None and args.dataset != "digits":
        root = str(Path(root).resolve())
        if not Path(root).exists():
            raise SystemExit(f"data not found: {root} (pass --root, or --dataset digits)")
    return root if args.dataset != "digits" else None


def read_budgets(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"no budgets file {path}: run the curves first (python benchmarks/reproduce.py --curves)")
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
        source = {"kind": "curves", "file": _display_path(Path(args.budgets)), "rule": b.get("rule"),
                  "plateau_points": b.get("plateau_points"), "plateau_smooth": b.get("plateau_smooth"),
                  "curves": _display_path(Path(args.budgets).resolve().parent),
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


def _display_path(path: Path) -> str:
    path = Path(path).resolve()
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def selection_of_grid(args: argparse.Namespace, grid: str) -> dict[str, Any]:
    """Seeds, sizes, methods and the student L2 spec of ``grid``, overridden by the command line."""
    if args.quick:
        g = dict(sizes=QUICK_SELECTION["sizes"], methods=QUICK_SELECTION["methods"], l2={"*": "both"})
        seeds = QUICK_SELECTION["seeds"]
    else:
        g, seeds = GRIDS[grid], DEFAULT_SEEDS
    return {
        "seeds": tuple(args.seeds or seeds),
        "sizes": tuple(args.sizes or g["sizes"]),
        "methods": tuple(args.methods or g["methods"]),
        "l2": {"*": args.l2} if args.l2 else dict(g["l2"]),
    }


def plan_selection(recipe: Recipe, sel: dict[str, Any]) -> list[Job]:
    return plan_jobs(recipe, sel["seeds"], sel["sizes"], sel["methods"], sel["l2"])


def choose_grid(args: argparse.Namespace, recipe: Recipe, cost: CostModel, workers: int,
                study: dict[str, Any] | None) -> dict[str, Any]:
    """The grid this command runs, with the estimates of both grids (from scratch) behind the choice."""
    estimates = {}
    for name in () if args.quick else GRIDS:
        jobs = plan_selection(recipe, selection_of_grid(args, name))
        estimates[name] = {"runs": len(jobs), "hours": round(cost.total(jobs, workers) / 3600, 2)}
    limit = args.grid_limit_hours
    if args.quick:
        name, reason = "quick", "--quick"
    elif args.grid != "auto":
        name, reason = args.grid, f"--grid {args.grid}"
    elif study and (study.get("grid") or {}).get("name") in GRIDS:
        name = study["grid"]["name"]
        reason = f"the grid this study started with ({study['grid'].get('reason', '')})"
    elif estimates["full"]["hours"] <= limit:  # noqa: SIM114
        name, reason = "full", f"the full grid's estimate ({estimates['full']['hours']:.1f} h) is within {limit:g} h"
    else:
        name, reason = "reduced", (f"the full grid's estimate ({estimates['full']['hours']:.1f} h) exceeds {limit:g} h")
    sel = selection_of_grid(args, name if name in GRIDS else "full")
    custom = [flag for flag, v in (("--seeds", args.seeds), ("--sizes", args.sizes), ("--methods", args.methods),
                                   ("--l2", args.l2)) if v]
    return {
        "name": name,
        "description": study_plan.describe_grid(name) if name in GRIDS else "the --quick selection",
        "reason": reason + (f"; narrowed by {', '.join(custom)}" if custom else ""),
        "selection": {"seeds": list(sel["seeds"]), "sizes": list(sel["sizes"]), "methods": list(sel["methods"]),
                      "l2": sel["l2"]},
        "estimates": estimates, "limit_hours": limit, "workers": workers,
    }


def planned_keys(command: str, recipe: dict[str, Any]) -> list[str]:
    """The keys of the runs that a recorded session command plans in a study of ``recipe``
    (for sessions that did not record their keys: the first study's)."""
    argv = shlex.split(command)
    i = next((k for k, a in enumerate(argv) if a.endswith("reproduce.py")), 1)
    args = build_parser().parse_args(argv[i + 1:])
    legacy = "eval_every" in recipe
    r = Recipe.from_dict(recipe)
    seeds = args.seeds or DEFAULT_SEEDS
    if legacy:
        sizes = args.sizes or (16, 32, 64, 128)
        methods = args.methods or LEGACY_DEFAULT_METHODS
        if args.methods == DEFAULT_METHODS:  # "all" meant the first study's methods
            methods = LEGACY_DEFAULT_METHODS
        l2 = {"*": args.l2 or "both"}
        return [j.key for j in plan_jobs(r, seeds, sizes, methods, l2)]
    sel = selection_of_grid(args, args.grid if args.grid in GRIDS else "full")
    return [j.key for j in plan_selection(r, sel)]


def _schedule_text(iterations: int, evals: int, drops, gamma: float, lr: float) -> str:
    ms = study_plan.milestones(evals, drops)
    ipe = iterations // evals
    drop = f", lr x{gamma:g} after {', '.join(str(m * ipe) for m in ms)}" if ms else ", constant lr"
    return f"{iterations} iterations (Adam lr {lr:g}{drop}; evaluated every {ipe})"


def print_budgets(recipe: Recipe, source: dict[str, Any]) -> None:
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
    teacher = _schedule_text(r.teacher_iterations, r.teacher_evals, r.teacher_lr_drops, r.teacher_lr_gamma, r.teacher_lr)
    print(f"  teacher:  {teacher}{', one per seed' if r.teacher_per_seed else ', one (seed 0) for every seed'}")
    print(f"  students: {_schedule_text(r.iterations, r.evals, r.lr_drops, r.lr_gamma, r.lr)}")
    print(f"  self-distillation: {_schedule_text(r.self_iterations, r.evals, r.lr_drops, r.lr_gamma, r.lr)}")
    print(f"  data: {recipe.dataset} {recipe.root or ''} at {recipe.image_size} px, validation {recipe.val_fraction:g} "
          f"of the training classes; precision {recipe.precision}{', channels-last' if recipe.channels_last else ''}")


def make_cost_model(args: argparse.Namespace, recipe: Recipe, out: Path,
                    source: dict[str, Any] | None = None) -> tuple[CostModel, str]:
    """The cost model of the estimates: the per-step and per-evaluation guesses (or ``--measure-steps``
    timings), scaled by the runs of this study and of the curves its budgets come from."""
    if args.measure_steps:
        with tempfile.TemporaryDirectory(prefix="rkd-measure-") as tmp:
            init_worker(args.threads)
            per_it, per_eval = study_plan.measure_costs(recipe, args.measure_steps, tmp)
        cost = CostModel(recipe, per_it, per_eval)
        how = (f"timed {args.measure_steps} steps of each kind of run here, one process at a time: seconds per step "
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
            how += f", scaled by the {m} curve run(s) in {_display_path(curves)}"
    return cost, how


def dry_run(args: argparse.Namespace, recipe: Recipe, source: dict[str, Any], grid: dict[str, Any],
            jobs: list[Job], out: Path, cost: CostModel, how: str) -> None:
    records = read_records(out)
    print_budgets(recipe, source)
    print(f"estimates ({args.workers} worker(s) x {args.threads} thread(s); {how}):")
    for name, est in grid["estimates"].items():
        print(f"  {name} grid ({study_plan.describe_grid(name)}): {est['runs']} runs, about "
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command is None:
        shown = ["python", os.path.relpath(__file__, Path.cwd()) if Path(__file__).is_absolute() else __file__,
                 *(sys.argv[1:] if argv is None else argv)]
        args.command = " ".join(shlex.quote(a) for a in shown)
    default_out = DEFAULT_CURVES_OUT if args.curves else (DEFAULT_QUICK_OUT if args.quick else DEFAULT_OUT)
    out = Path(args.out or (REPO / default_out)).resolve()
    docs = Path(args.docs).resolve() if args.docs else out
    args.report_md = str(Path(args.report_md).resolve()) if args.report_md else str(docs / REPORT_MD)
    args.report_png = str(Path(args.report_png).resolve()) if args.report_png else str(docs / REPORT_PNG)
    if args.workers is None:
        args.workers = 1 if args.quick else 2
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
    recipe = study_plan.curve_recipe(study_recipe, args.curve_scale, args.curve_teacher_scale, args.curve_evals)
    recipe.validate()
    methods = args.methods or STUDENT_METHODS
    jobs = plan_curve_jobs(recipe, methods, args.curve_dim)
    meta = {"mode": "curves", "study_recipe": study_recipe.to_dict(),
            "curves": {"scale": args.curve_scale, "teacher_scale": args.curve_teacher_scale,
                       "evals": args.curve_evals, "dim": args.curve_dim, "methods": list(methods)}}
    if args.dry_run:
        cost, how = make_cost_model(args, recipe, out)
        print(f"curves: {len(jobs)} runs: " + ", ".join(j.key for j in jobs))
        print(f"  teacher:  {_schedule_text(recipe.teacher_iterations, recipe.teacher_evals, (), 1.0, recipe.teacher_lr)}")
        print(f"  students: {_schedule_text(recipe.iterations, recipe.evals, (), 1.0, recipe.lr)}")
        print(f"  budget rule: {study_plan.describe_rule(args.budget_rule, args.plateau_points, args.plateau_smooth)}")
        print(f"about {fmt_duration(cost.total(jobs, args.workers, read_records(out)))} with {args.workers} worker(s) "
              f"({how})")
        return 0
    return run_study(args, recipe, jobs, out, meta, render_curves)


if __name__ == "__main__":
    sys.exit(main())
