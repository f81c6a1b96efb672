"""The command line of the classification study: ``python -m studies.classification --help``."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from ..device import add_device_option, check_device
from .report import plot, summarize, table
from .study import DEFAULT_OUT, DEFAULT_PNG, DEFAULT_ZIP, METHODS, QUICK, Recipe, read_records, run_key, run_study
from .study import __doc__ as STUDY_DOC


def main(argv: list[str] | None = None) -> int:
    """Run the study (or, with ``--report-only``, its report) with the arguments ``argv``."""
    p = argparse.ArgumentParser(prog="python -m studies.classification", description=STUDY_DOC.split("\n\n")[0])
    p.add_argument("--zip", type=Path, default=Path(os.environ.get("RKD_PML_OMNIGLOT", DEFAULT_ZIP)))
    p.add_argument("--out", type=Path, default=None, help=f"records folder (default {DEFAULT_OUT})")
    p.add_argument("--cache", type=Path, default=None, help="teacher weights (default ~/.cache/rkd_pml/classify)")
    p.add_argument("--png", type=Path, default=None, help=f"curves (default {DEFAULT_PNG})")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--student-epochs", type=int)
    p.add_argument("--teacher-epochs", type=int)
    p.add_argument("--quick", action="store_true", help="a tiny recipe (seconds), for smoke tests")
    p.add_argument("--report-only", action="store_true")
    add_device_option(p)
    args = p.parse_args(argv)
    if not args.report_only:  # before any folder is created
        args.device = check_device(args.device)
    torch.set_num_threads(1)
    overrides = {"student_epochs": args.student_epochs, "teacher_epochs": args.teacher_epochs}
    recipe = replace(QUICK if args.quick else Recipe(), **{k: v for k, v in overrides.items() if v is not None})
    out = args.out or (Path(tempfile.mkdtemp(prefix="classify-quick-")) if args.quick else DEFAULT_OUT)
    cache = args.cache or (out / "cache" if args.quick else Path.home() / ".cache" / "rkd_pml" / "classify")
    png = args.png or (out / "curves.png" if args.quick else DEFAULT_PNG)
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    if set(methods) - set(METHODS):
        p.error(f"unknown --methods {sorted(set(methods) - set(METHODS))}; choose from {METHODS}")
    out.mkdir(parents=True, exist_ok=True)
    log = lambda msg: print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)  # noqa: E731
    done = read_records(out, recipe.key())
    plan = [("teacher", 0)] + [(m, s) for s in seeds for m in methods]
    todo = [(m, s) for m, s in plan if run_key(m, s) not in done]
    teacher_file = cache / f"teacher-{recipe.key()}.pt"
    if run_key("teacher", 0) in done and not teacher_file.is_file() and any(m != "ce" for m, _ in todo):
        log(f"teacher weights {teacher_file} missing: training the teacher again")
        todo.insert(0, ("teacher", 0))
    log(f"recipe {recipe.key()} -> {out}: {len(plan) - len(todo)} of {len(plan)} runs recorded, {len(todo)} to go")
    if not args.report_only and todo:
        if not args.zip.is_file():
            p.error(f"Omniglot archive not found: {args.zip} (set --zip or RKD_PML_OMNIGLOT)")
        run_study(todo, recipe, args.zip, out, teacher_file, log, args.device)
    records = read_records(out, recipe.key())
    text = table(summarize(records, methods, seeds))
    (out / "table.md").write_text(text + "\n")
    plot(records, methods, seeds, png)
    print(text)
    print(f"total training wall time {sum(r['wall_s'] for r in records.values()) / 60:.1f} min; curves: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
