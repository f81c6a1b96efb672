"""Does speed cost quality? The README's Omniglot distillation at fp32, at bf16 + channels-last,
and from a teacher cache (K = 8 views, bf16 + channels-last student), 3 seeds each.

    python -m studies.speed_quality --root ../shared/data/omniglot/images_background_small1.zip \
        --out studies/speed_quality/results

Each finished run is appended to ``records.jsonl`` in ``--out`` and skipped when the script runs
again (resumable); the summary (Recall@1 mean +- std per setting, validation-selected) is printed
and written to ``summary.json``. ``--device`` (default ``auto``: CUDA when available, as the
training jobs choose) is where every run trains; each record names the device it ran on.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from rkd_pml.files.records import append_jsonl, latest_by_key

from ..device import add_device_option, check_device, used_device

COMMON = dict(epochs=5, iterations_per_epoch=20, batch_size=64, lr=1e-3, lr_milestones=(4,), progress=False)
SETTINGS = {
    "fp32": dict(precision="fp32"),
    "bf16_channels_last": dict(precision="bf16", channels_last=True),
    "teacher_cache": dict(precision="bf16", channels_last=True, teacher_cache=True),
}


def _records(out: Path) -> dict[str, dict]:
    """The last record of each run key."""
    return latest_by_key(out / "records.jsonl")


def _append(out: Path, record: dict) -> None:
    append_jsonl(out / "records.jsonl", record, what="the study's records")


def main(argv: list[str] | None = None) -> int:
    from rkd_pml.training import distill, train_teacher
    from rkd_pml.training.cache_job import TeacherCacheConfig, build_cache

    parser = argparse.ArgumentParser(prog="python -m studies.speed_quality", description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="the Omniglot zip or folder")
    parser.add_argument("--out", default="studies/speed_quality/results")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    add_device_option(parser, default="auto")
    args = parser.parse_args(argv)
    device = check_device(args.device)  # before any folder is created
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    done = _records(out)
    teacher = out / "runs" / "teacher"
    if "teacher" not in done:
        started = time.perf_counter()
        r = train_teacher(model="resnet18", embedding_dim=64, dataset="omniglot", root=args.root, out=str(teacher),
                          overwrite=True, device=device, **COMMON)
        _append(out, {"key": "teacher", "recall@1": r["best"]["test"]["recall@1"],
                      "seconds": time.perf_counter() - started,
                      "device": used_device(r.get("config"), device)})
    cache = out / "runs" / "cache"
    if "cache" not in done:
        started = time.perf_counter()
        build_cache(TeacherCacheConfig(teacher=str(teacher), views=args.views, out=str(cache), student="resnet10t",
                                       precision="bf16", overwrite=True, progress=False, device=device))
        _append(out, {"key": "cache", "views": args.views, "seconds": time.perf_counter() - started, "device": device})
    for seed in (int(s) for s in args.seeds.split(",")):
        for name, setting in SETTINGS.items():
            key = f"{name}-s{seed}"
            if key in done:
                continue
            source = {"teacher_cache": str(cache)} if setting.get("teacher_cache") else {"teacher": str(teacher)}
            started = time.perf_counter()
            r = distill(student="resnet10t", embedding_dim=16, seed=seed, out=str(out / "runs" / key), overwrite=True,
                        device=device, **source, **{k: v for k, v in setting.items() if k != "teacher_cache"}, **COMMON)
            _append(out, {"key": key, "setting": name, "seed": seed, "recall@1": r["best"]["test"]["recall@1"],
                          "test_selected_recall@1": r["test_selected"]["test"]["recall@1"], "best_epoch": r["best_epoch"],
                          "seconds": time.perf_counter() - started, "train_seconds": r["train_seconds"],
                          "device": used_device(r.get("config"), device)})
            print(key, f"R@1 {100 * r['best']['test']['recall@1']:.1f}", flush=True)
    records = _records(out)
    summary = {}
    for name in SETTINGS:
        values = [100 * r["recall@1"] for r in records.values() if r.get("setting") == name]
        train = [r["train_seconds"] for r in records.values() if r.get("setting") == name]
        if values:
            summary[name] = {"runs": len(values), "recall@1_mean": statistics.mean(values),
                             "recall@1_std": statistics.stdev(values) if len(values) > 1 else 0.0,
                             "train_seconds_median": statistics.median(train)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    for name, s in summary.items():
        print(f"{name:<22} R@1 {s['recall@1_mean']:.1f} +- {s['recall@1_std']:.1f} ({s['runs']} seeds), "
              f"train {s['train_seconds_median']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
