"""The command line of the few-shot study: ``python -m studies.fewshot --help``."""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import fields
from pathlib import Path

import torch

from ..device import add_device_option, check_device
from .report import render_report
from .study import (DEFAULT_MD, DEFAULT_OUT, MODELS, OMNIGLOT_ZIP, QUICK, REPO, Recipe, append_record, fmt, load_data,
                    open_study, read_records, save_study, train_run)
from .study import __doc__ as STUDY_DOC


def main(argv: list[str] | None = None) -> int:
    """Run the study (or, with ``--report-only``, its report) with the arguments ``argv``."""
    p = argparse.ArgumentParser(prog="python -m studies.fewshot", description=STUDY_DOC.splitlines()[0])
    p.add_argument("--out", type=Path, help="study directory (default studies/fewshot/results)")
    p.add_argument("--root", type=Path, default=OMNIGLOT_ZIP, help="the Omniglot .zip")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated (default 0,1,2)")
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {','.join(MODELS)}")
    p.add_argument("--quick", action="store_true", help="a tiny study of a few seconds (smoke test)")
    p.add_argument("--report-md", type=Path, help="default studies/fewshot/FEWSHOT.md (--quick: in --out); "
                   "the figure fewshot_curves.png goes next to it")
    p.add_argument("--report-only", action="store_true")
    add_device_option(p)
    for f in (f for f in fields(Recipe) if f.type in ("int", "float")):
        p.add_argument("--" + f.name.replace("_", "-"), type={"int": int, "float": float}[f.type])
    args = p.parse_args(argv)
    if not args.report_only:  # before any folder is created
        args.device = check_device(args.device)
    torch.set_num_threads(1)
    recipe = Recipe(**(QUICK if args.quick else {}))
    for f in fields(Recipe):
        if getattr(args, f.name, None) is not None:
            setattr(recipe, f.name, getattr(args, f.name))
    if recipe.iterations % recipe.eval_every:
        raise SystemExit(f"--iterations ({recipe.iterations}) must be a multiple of --eval-every")
    out = args.out or (REPO / "runs/fewshot-quick" if args.quick else DEFAULT_OUT)
    md = args.report_md or (out / "FEWSHOT.md" if args.quick else DEFAULT_MD)
    models = [m for m in args.models.split(",") if m]
    if set(models) - set(MODELS):
        raise SystemExit(f"--models: unknown {sorted(set(models) - set(MODELS))}; choose from {list(MODELS)}")
    study = open_study(out, recipe)
    if not args.report_only:
        keys = [f"{m}-s{int(s)}" for s in args.seeds.split(",") for m in MODELS if m in models]
        todo = [k for k in keys if k not in {r["key"] for r in read_records(out)}]
        print(f"{len(keys) - len(todo)} of {len(keys)} runs recorded; {len(todo) or 'nothing'} to train", flush=True)
        command = ["python -m studies.fewshot", *(sys.argv[1:] if argv is None else argv)]
        session = {"command": " ".join(command), "runs": todo,
                   "started": time.strftime("%Y-%m-%d %H:%M:%S"), "torch_threads": torch.get_num_threads(),
                   "device": args.device, "cpus": os.cpu_count(), "wall_seconds": 0.0}
        study["sessions"].append(session)
        save_study(out, study)
        t0 = time.time()
        data = {k: (x.to(args.device), y) for k, (x, y) in (load_data(recipe, args.root) if todo else {}).items()}
        print("data: " + ", ".join(f"{k} {len(y)} images / {len(set(y))} classes" for k, (_, y) in data.items()))
        for i, key in enumerate(todo):
            elapsed = time.time() - t0
            eta = f" | ETA {fmt(elapsed / i * (len(todo) - i))}" if i else ""
            print(f"[{i + 1:3d}/{len(todo)}] {key} | elapsed {fmt(elapsed)}{eta}", flush=True)
            record = train_run(key, recipe, data, out, lambda s: print("    " + s, flush=True), args.device)
            append_record(out, record)
            session["wall_seconds"] = round(time.time() - t0, 1)
            save_study(out, study)
    render_report(read_records(out), study, md, md.with_name("fewshot_curves.png"))
    print(f"report: {md}, {md.with_name('fewshot_curves.png')}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
