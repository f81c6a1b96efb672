"""The ``evaluate`` command: its data flags (the training settings' flags, described for a
model being evaluated) and its body (each model evaluated and printed, cross-model retrieval
with ``--gallery-model``, problems named at the end)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .cli_flags import add_config_flags

PROG = "rkd-pml"


#: ``evaluate``'s data flags: the training settings' flags, with help about the evaluated model.
EVALUATE_FLAGS = {
    "dataset": "data set to evaluate on (default: the one the model was trained on)",
    "root": "where the data set lives, a folder or omniglot's .zip (default: the model's, when --dataset is the "
            "data set it was trained on)",
    "test_root": "folder data: a separate folder of test classes (default: the model's, when --dataset is the data "
                 "set it was trained on)",
    "image_size": "image side in pixels (default: the model's training size)",
    "in_chans": "input channels: 3 (RGB) or 1 (grey) (default: the model's)",
    "test_transform": "paper = resize to S*256/224, centre crop; timm = timm's eval transform (default: the model's)",
    "recall_ks": "Ks of Recall@K (default: the model's, on its data set; else 1,2,4,8, sop: 1,10,100,1000)",
    "num_workers": "data-loading worker processes (default: 0)",
    "device": "cpu, cuda, cuda:N, mps or auto (CUDA when available) (default: auto)",
}


def add_data_flags(p: argparse.ArgumentParser) -> None:
    """The data flags of the training settings (same names, types and choices), described for
    a model being evaluated instead of one being trained."""
    from .training.config import TrainConfig

    add_config_flags(p, TrainConfig, skip=tuple(n for n in TrainConfig.__dataclass_fields__ if n not in EVALUATE_FLAGS))
    group = p._action_groups[-1]  # the group add_config_flags made
    group.title = "data settings (defaults: those the model was trained with, else the data set's)"
    for action in group._group_actions:
        action.help = EVALUATE_FLAGS[action.dest].replace("%", "%%")


def print_metrics(values: dict[str, float]) -> None:
    width = max([30, *map(len, values)])
    for metric, value in values.items():
        scaled = metric.removeprefix("asymmetric_").startswith("recall@") or metric.endswith(("_at_1", "precision", "_at_r"))
        print(f"{metric:<{width}} {100 * value:.2f}" if scaled else f"{metric:<{width}} {value:.4f}")


def run_evaluate(args: argparse.Namespace) -> int:
    """Each model under ``args.model`` evaluated and printed as it comes; then one line per model
    that was skipped or could not be evaluated. Exit 1 when one could not be evaluated. With
    ``--json -`` stdout holds the JSON only (every message goes to stderr)."""
    import contextlib

    from .files import atomic_write_text
    from .training.evaluate_job import evaluate_each

    kwargs = {k: getattr(args, k, None) for k in ("dataset", "root", "test_root", "image_size", "in_chans", "test_transform",
                                                  "gallery_model")}
    to_stdout = args.json_out != "-"
    metrics, problems = {}, []
    with contextlib.redirect_stdout(sys.stdout if to_stdout else sys.stderr):
        for outcome in evaluate_each(args.model, split=args.split, ks=getattr(args, "recall_ks", None),
                                     batch_size=args.batch_size, device=getattr(args, "device", "auto"),
                                     progress=args.progress, num_workers=getattr(args, "num_workers", 0), **kwargs):
            if outcome.metrics is None:
                problems.append(outcome)
                continue
            metrics[outcome.name] = outcome.metrics
            if to_stdout:
                if outcome.name != Path(args.model).name:  # a folder of runs
                    print(f"== {outcome.name}")
                print_metrics(outcome.metrics)
                sys.stdout.flush()
    shown = metrics[Path(args.model).name] if list(metrics) == [Path(args.model).name] and not problems else metrics
    if args.json_out == "-":
        print(json.dumps(shown, indent=2))
    elif args.json_out:
        atomic_write_text(args.json_out, json.dumps(shown, indent=2) + "\n")
    for outcome in problems:
        what = f"skipped: {outcome.skipped}" if outcome.skipped else f"could not be evaluated: {outcome.error}"
        print(f"{PROG}: {Path(args.model) / outcome.name}: {what}", file=sys.stderr)
    return 1 if any(o.error for o in problems) else 0
