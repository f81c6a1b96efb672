"""One run of the study, as a worker process runs it: train (or continue, or collect) and record.

:func:`run_job` and :func:`init_worker` are what the scheduler sends to its worker processes
(spawned: they import this module by name). A run that finished but was not recorded is collected
from its ``results.json``; one with a ``config.json`` continues from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from ..device import used_device
from .methods import SELF_METHODS
from .plan import Job, job_config, job_schedule, train
from .recipe import Recipe
from .study_dir import now


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


def _config_device(run_dir: Path) -> str | None:
    """The device that the last training session of ``run_dir`` used (its config.json), if any."""
    with contextlib.suppress(OSError, ValueError):
        config = json.loads((run_dir / "config.json").read_text())
        return used_device(config, "") or None
    return None


def build_record(job: Job, recipe: Recipe, run_dir: Path, results: dict[str, Any] | None, wall: float,
                 trained: bool, diverged: str | None = None, device: str = "cpu",
                 earlier_device: str | None = None) -> dict[str, Any]:
    """The record of a finished run: test metrics at the epoch chosen on the validation split,
    at the epoch with the best test Recall@1 (the paper's protocol) and at the last epoch, and
    the validation and test Recall@1 of every evaluation (``curve``).

    ``device``: where the run trained (its results' or config.json's ``device_used``, else this
    one); ``earlier_device``: where its checkpoint was made, when it continued from one made on
    another device. A run whose loss became non-finite (``diverged``) keeps the evaluations made before."""
    from rkd_pml.training import RunDir

    history = [r for r in RunDir(run_dir).read_metrics() if isinstance(r.get("test"), dict)]
    if results is not None:
        ipe = int(results["config"]["iterations_per_epoch"])
    else:
        ipe = int(job_config(job, recipe, run_dir.parent.parent, device).iterations_per_epoch)
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
    ran_on = used_device(results["config"], device) if results is not None else (_config_device(run_dir) or device)
    record = {
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
        # the selected student's queries in its teacher's gallery (run_job fills it in)
        "asymmetric": None,
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
        "device": ran_on,
        "train_seconds": results.get("train_seconds") if results is not None else None,
        "wall_seconds": round(wall, 2),
        "trained": trained,
        "finished": now(),
        "pid": os.getpid(),
    }
    if earlier_device and earlier_device != ran_on:
        record["earlier_device"] = earlier_device
    return record


def asymmetric_metrics(run_dir: Path, teacher_dir: Path, device: str = "cpu") -> dict[str, Any] | None:
    """Cross-model retrieval of a finished student: its saved model (the epoch chosen on the
    validation split) embeds the test queries, its teacher's saved model (the teacher's chosen
    epoch) the gallery; ``{"gallery": <teacher run>, "test": {"recall@K": ...}}``, or None when
    the student saved no model (it diverged before its first evaluation)."""
    from rkd_pml.evaluation.cross_model import ASYMMETRIC
    from rkd_pml.training import evaluate_saved

    if not (run_dir / "model").is_dir():
        return None
    found = evaluate_saved(run_dir, split="test", device=device, progress=False, gallery_model=teacher_dir)
    test = {k[len(ASYMMETRIC):]: v for k, v in found.items() if k.startswith(ASYMMETRIC)}
    return {"gallery": teacher_dir.name, "test": _metrics(test)}


def wants_asymmetric(job: Job, recipe: Recipe) -> bool:
    """Whether ``job``'s record gets :func:`asymmetric_metrics`: a distilled student as wide as its teacher."""
    return job.teacher_key is not None and job.dim == recipe.teacher_dim


def run_job(job: Job, recipe: Recipe, out: str, keep_checkpoints: bool = False, device: str = "cpu") -> dict[str, Any]:
    """Train (or continue, or just collect) one run on ``device``; return its record. Runs in a worker."""
    out_path = Path(out)
    run_dir = out_path / "runs" / job.key
    log_path = out_path / "logs" / f"{job.key}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    trained = False
    with open(log_path, "a", buffering=1) as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        print(f"--- {now()} {job.key} (pid {os.getpid()}, {_torch_threads()} torch threads, device {device})")
        results_path = run_dir / "results.json"
        if results_path.is_file():  # finished earlier but not recorded (stopped in between)
            results = json.loads(results_path.read_text())
            print("finished earlier: collecting its results")
            record = build_record(job, recipe, run_dir, results, time.perf_counter() - started, trained,
                                  device=device)
        else:
            cfg = job_config(job, recipe, out_path, device)
            diverged, earlier = None, None
            try:
                if (run_dir / "config.json").is_file():
                    earlier = _config_device(run_dir)
                    try:
                        results = train(job, cfg.replace(resume=True))
                    except ValueError as exc:  # another recipe or an unusable checkpoint: start again
                        print(f"cannot continue ({exc}); starting again")
                        earlier = None
                        results = train(job, cfg.replace(overwrite=True))
                else:
                    results = train(job, cfg.replace(overwrite=True))
            except FloatingPointError as exc:  # a method that diverges is a result, not a crash
                if job.kind == "teacher":
                    raise
                print(f"diverged: {exc}")
                results, diverged = None, str(exc).splitlines()[0]
            trained = True
            record = build_record(job, recipe, run_dir, results, time.perf_counter() - started, trained,
                                  diverged, device, earlier)
        if wants_asymmetric(job, recipe):
            record["asymmetric"] = asymmetric_metrics(run_dir, out_path / "runs" / job.teacher_key, device)
        if job.kind != "teacher" and not keep_checkpoints:
            shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        print(f"--- done in {time.perf_counter() - started:.1f}s")
    return record


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def init_worker(threads: int) -> None:
    """Prepare a worker process: offline hub, ``threads`` torch threads, the study's losses registered."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning)
    import torch

    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)
