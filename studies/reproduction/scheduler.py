"""The scheduler: runs a study's jobs on a process pool and records each run as it finishes.

Workers are spawned processes (``--workers N``) or, with one worker, this process. A student
starts once its teacher is recorded; a failed run is logged and does not stop the others (the
students of a failed teacher are dropped); SIGTERM and Ctrl-C leave the finished runs recorded
and the session's wall time in study.json (SIGTERM is passed on to the workers, so the command
ends at once; their runs continue from their last epoch checkpoint in the next command). One
command trains in a directory at a time (:func:`lock_study`). The report is re-rendered every
``--render-every`` recorded runs and at the end.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from .cost import CostModel
from .formatting import fmt_duration
from .plan import Job
from .recipe import Recipe
from .rendering import render
from .study_dir import (STUDY, append_record, data_info, lock_study, machine_info, now, open_study, read_records,
                        write_json_atomic)
from .worker import init_worker, run_job


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


def _r1(rec: dict[str, Any], which: str) -> str:
    """Test Recall@1 (%) of a record under one protocol, for the progress line."""
    test = (rec.get(which) or {}).get("test") or {}
    return f"{100 * test['recall@1']:5.1f}" if "recall@1" in test else "  -  "


def run_study(args: argparse.Namespace, recipe: Recipe, jobs: list[Job], out: Path,
              meta: dict[str, Any] | None = None, render_fn: Callable[..., None] | None = None,
              cost: CostModel | None = None) -> int:
    """Run the ``jobs`` not yet recorded in ``out`` and record them; 0 when none failed, else 1.

    ``meta``: what this session chose (mode, grid, budgets' source), kept in study.json;
    ``render_fn(args, out, quiet=False)`` renders the report (default: the study's report)."""
    with lock_study(out):
        return _run_locked(args, recipe, jobs, Path(out), meta, render_fn or render, cost)


def _stop_workers_and_exit(*_: Any) -> None:
    """SIGTERM: stop the worker processes (their runs keep their epoch checkpoints), then leave (status 143)."""
    for child in multiprocessing.active_children():
        child.terminate()
    sys.exit(143)


def _run_locked(args: argparse.Namespace, recipe: Recipe, jobs: list[Job], out: Path,
                meta: dict[str, Any] | None, render_fn: Callable[..., None], cost: CostModel | None) -> int:
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
    device = getattr(args, "device", "cpu")
    workers = max(1, min(args.workers, len(todo))) if todo else 1

    session = {
        "command": args.command,
        "started": now(),
        "wall_seconds": 0.0,
        "runs_trained": 0,
        "planned": total,
        "planned_keys": [j.key for j in jobs],
        "grid": (meta or {}).get("grid", {}).get("name"),
        "data": data_info(recipe),
        "machine": machine_info(workers, threads, device),
    }
    study.setdefault("sessions", []).append(session)
    write_json_atomic(out / STUDY, study)
    t_start = time.time()

    def save_session() -> None:
        session["wall_seconds"] = round(time.time() - t_start, 1)
        session["ended"] = now()
        write_json_atomic(out / STUDY, study)

    guess_total = cost.total(todo, workers)
    print(f"study: {total} runs planned, {done_before} already recorded, {len(todo)} to run "
          f"with {workers} worker(s) x {threads} thread(s) on {device}; first guess {fmt_duration(guess_total)}",
          flush=True)
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
        previous_sigterm = signal.signal(signal.SIGTERM, _stop_workers_and_exit)
    try:
        while pending or running:
            while len(running) < workers:
                job = next((j for j in pending if ready(j)), None)
                if job is None:
                    break
                pending.remove(job)
                t0 = time.time()
                fut = executor.submit(run_job, job, recipe, str(out), args.keep_checkpoints, device)
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
                        f.write(f"{now()} {job.key}\n{''.join(traceback.format_exception(exc))}\n")
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
