#!/usr/bin/env python
"""Images per second of the training input pipeline alone: the PIL path against the fast default.

For each image size (``--sizes``, default 64 and 224) and pipeline (``--pipelines``: ``pil``,
each image decoded and transformed with PIL in the loader, as before; ``fast``, the default:
images decoded once, each batch cropped, flipped and resized on ``--device``), the loader of
a training job (:func:`rkd_pml.data.fast_input.training_loader`, ``--workers`` processes)
delivers ``--batches`` class-balanced batches of ``--batch`` images, seeded as in training.
A repetition times one pass over those batches, ending when the last batch is on the device
(synchronised on CUDA); the pipelines alternate within each repetition, so a change in the
machine's load hits both alike. Images/s = images / median pass time over ``--repeats``.
The fast pipeline's one-time decode is timed apart (``decode_s``), not in the passes.

Data: the Omniglot archive ``--root`` (default: the shared images_background_small1.zip where
present), else scikit-learn's digits; the training transform ``--transform`` (default the
training jobs' "paper"), bilinear interpolation.

Example:
  python benchmarks/bench_input.py --json benchmarks/results/bench_input.json
  python benchmarks/bench_input.py --device cuda --workers 2
  python benchmarks/bench_input.py --quick          # digits, 16 px, seconds (the smoke test)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.bench_machine import check_device, machine_info  # noqa: E402

DEFAULT_OMNIGLOT = "/work/shared/data/omniglot/images_background_small1.zip"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=os.environ.get("RKD_PML_OMNIGLOT", DEFAULT_OMNIGLOT),
                   help="Omniglot folder or .zip (digits when absent)")
    p.add_argument("--sizes", default="64,224", help="image sides in pixels, comma-separated")
    p.add_argument("--pipelines", default="pil,fast")
    p.add_argument("--transform", default="paper", choices=("paper", "random_resized_crop"))
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--batches", type=int, default=4, help="batches per timed pass")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--workers", type=int, default=0, help="loader worker processes")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--json", default=None, metavar="FILE")
    p.add_argument("--quick", action="store_true", help="digits, 16 px, batch 20, 2 passes")
    args = p.parse_args(argv)
    check_device(p, args.device)
    return args


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch

    from rkd_pml.data import load_dataset
    from rkd_pml.data.batches import EpochBatches, choose_m_per_class, epoch_batches
    from rkd_pml.data.fast_input import training_loader

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.quick:
        args.sizes, args.batch, args.batches, args.repeats, args.root = "16", 20, 2, 2, ""
    dataset = "omniglot" if args.root and os.path.exists(args.root) else "digits"
    results, meta = [], []
    for size in (int(s) for s in args.sizes.split(",")):
        train, _ = load_dataset(dataset, root=args.root if dataset == "omniglot" else None, image_size=size,
                                train_transform=args.transform, data_config={"interpolation": "bilinear"})
        started = time.perf_counter()
        store = train.decoded()
        decode_s = time.perf_counter() - started
        m = choose_m_per_class(train.labels, args.batch)
        batches = epoch_batches(train.labels, args.batch, m, args.batches, 0, 1)
        loaders = {}
        for name in args.pipelines.split(","):
            sampler = EpochBatches()
            sampler.set(batches)
            loaders[name] = training_loader(train, sampler, device, name, args.workers)
        times: dict[str, list[float]] = {name: [] for name in loaders}
        for rep in range(args.repeats + 1):  # the first pass warms up (workers, allocator)
            for name, loader in loaders.items():
                started = time.perf_counter()
                for images, _labels in loader:
                    images = images.to(device, non_blocking=True)
                _sync(device)
                if rep:
                    times[name].append(time.perf_counter() - started)
        images = args.batch * args.batches
        for name, ts in times.items():
            row = {"name": name, "size": size, "images_per_s": round(images / statistics.median(ts), 1),
                   "seconds": [round(t, 4) for t in ts]}
            if name == "fast":
                row["decode_s"] = round(decode_s, 3)
            results.append(row)
            print(f"{dataset} {size:4d} px  {name:5s} {row['images_per_s']:9.1f} images/s  "
                  f"(median of {len(ts)} passes of {images} images)", flush=True)
        rates = {r["name"]: r["images_per_s"] for r in results if r["size"] == size}
        if "pil" in rates and "fast" in rates:
            meta.append({"size": size, "fast_over_pil": round(rates["fast"] / rates["pil"], 1)})
            print(f"{dataset} {size:4d} px  fast / pil = {rates['fast'] / rates['pil']:.1f}x", flush=True)
        del store
    out = {
        "results": results,
        "ratios": meta,
        "settings": {"dataset": dataset, "root": args.root if dataset == "omniglot" else None, "batch": args.batch,
                     "batches": args.batches, "repeats": args.repeats, "workers": args.workers, "device": str(device),
                     "transform": args.transform, "threads": torch.get_num_threads()},
        "machine": machine_info(str(device), aliases={"cpu_count": "cpus", "load_average_start": "load_average"}),
    }
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=2)
    return out


if __name__ == "__main__":
    main()
