#!/usr/bin/env python
"""Images per second of one full distillation step, four ways, side by side.

Teacher: ``EmbeddingModel("resnet50", 512, l2_normalize=True)`` (frozen, inference mode);
student: ``EmbeddingModel("resnet18", 64)`` (training mode); random weights (the cost does
not depend on them); batch 128 of 64 px views; RKD-DA (``rkd_pml.losses.RKDLoss()``); Adam.
A step is: teacher forward (or the cache read), student forward, loss, backward, Adam step.

Configurations (``--configs``):
- ``fp32``: eager float32, live teacher;
- ``bf16_channels_last``: both models channels_last and under
  ``torch.autocast(<device>, dtype=torch.bfloat16)``; the loss gets the embeddings as they come;
- ``bf16_channels_last_compile``: the same with ``torch.compile`` of both models (an error
  is recorded and the run goes on);
- ``teacher_cache``: the bf16 channels_last student; the teacher embeddings are read from a
  teacher cache (``rkd_pml.data.teacher_cache``) built beforehand for the bench images (the
  build is timed apart, not in the step).

Each configuration has its own copy of the same initial student and its own Adam. After
``--warmup`` steps each (compilation happens there), the timed steps are interleaved: round r
runs one step of every configuration, so a change in the machine's load hits all alike.
Minimum and median over ``--steps`` rounds; images/s = batch / median step time.

``--device cuda``: models, images and the cached embeddings' reads go to the GPU; each part of
a step is timed by CUDA events recorded between the parts (read after the step has finished),
and ``peak_cuda_mem_bytes`` is ``torch.cuda.max_memory_allocated`` over a configuration's timed
steps (the counter reset before each of them). On the CPU, wall-clock time as before.

On a shared CPU, set ``OMP_WAIT_POLICY=PASSIVE`` and keep ``--threads`` at most the idle cores:
oneDNN's bfloat16 weight-gradient kernels synchronise their threads by busy-waiting, so when
the threads cannot all run at once each convolution backward can cost a scheduler time slice
(measured here: 1 s instead of 13 ms for one 3x3 convolution, two threads on one core).

Example:
  OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_step.py --steps 10 --warmup 3 --json benchmarks/results/bench_step.json
  python benchmarks/bench_step.py --quick          # tiny models, seconds (the smoke test)
  python benchmarks/bench_step.py --device cuda --size 224 --json gpu_step.json
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import statistics
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.bench_machine import Clock, check_device, machine_info  # noqa: E402

CONFIGS = ("fp32", "bf16_channels_last", "bf16_channels_last_compile", "teacher_cache")
QUICK = dict(teacher="test_resnet", student="test_resnet", teacher_dim=16, student_dim=8, batch=8, size=32,
             steps=2, warmup=1, configs="fp32,bf16_channels_last,teacher_cache")  # fmt: skip


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default="resnet50")
    p.add_argument("--teacher-dim", type=int, default=512)
    p.add_argument("--student", default="resnet18")
    p.add_argument("--student-dim", type=int, default=64)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--size", type=int, default=64, help="image side in pixels")
    p.add_argument("--steps", type=int, default=10, help="timed rounds (one step of every configuration each)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps of each configuration first")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--views", type=int, default=2, help="views per image in the teacher cache")
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, of {', '.join(CONFIGS)}")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--quick", action="store_true", help="tiny models and sizes: a smoke run in seconds")
    args = p.parse_args(argv)
    if args.quick:
        explicit = {a.lstrip("-").split("=")[0].replace("-", "_") for a in (argv or sys.argv[1:]) if a.startswith("--")}
        for key, value in QUICK.items():
            if key not in explicit:
                setattr(args, key, value)
    unknown = [c for c in args.configs.split(",") if c and c not in CONFIGS]
    if unknown:
        p.error(f"--configs: unknown {unknown}; choose from {CONFIGS}")
    check_device(p, args.device)
    return args


class Bench:
    """One configuration: its student, optimizer and step function."""

    def __init__(self, name, student, teacher, images, loss_fn, cache_read=None, device="cpu"):
        import torch

        self.name, self.error = name, None
        self.device = torch.device(device)
        self.bf16 = name != "fp32"
        self.channels_last = self.bf16
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        self.student = copy.deepcopy(student).to(self.device, memory_format=fmt).train()
        self.teacher = None if cache_read else copy.deepcopy(teacher).to(self.device, memory_format=fmt).eval()
        self.images = images.to(self.device).contiguous(memory_format=fmt)
        self.cache_read = cache_read
        self.loss_fn = loss_fn
        self.opt = torch.optim.Adam(self.student.parameters(), lr=1e-4)
        self.times: list[float] = []
        self.parts: list[dict[str, float]] = []
        self.warmup_s: list[float] = []
        self.peak_bytes = 0
        if name.endswith("_compile"):
            self.student = torch.compile(self.student)
            self.teacher = torch.compile(self.teacher)

    def amp(self):
        import torch

        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()

    def step(self, round_index: int) -> dict[str, float]:
        """One step; the seconds of each part and ``total``."""
        import torch

        clock = Clock(self.device)
        if self.cache_read is not None:
            ref = self.cache_read(round_index).to(self.device, non_blocking=True)
        else:
            with torch.inference_mode(), self.amp():
                ref = self.teacher(self.images)
            ref = ref.clone()  # an ordinary tensor: the loss may save it for backward
        clock.mark()
        with self.amp():
            emb = self.student(self.images)
        clock.mark()
        loss = self.loss_fn(emb, ref_emb=ref)
        clock.mark()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        t = clock.stop()
        self.peak_bytes = max(self.peak_bytes, clock.peak_bytes())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{self.name}: non-finite loss {loss.item()}")
        return {"teacher_or_cache": t[0], "student_fwd": t[1], "loss_fwd": t[2],
                "backward_and_step": t[3], "total": sum(t)}  # fmt: skip


def build_cache(args, teacher, view, tmp):
    """A teacher cache of ``batch`` random images (``views`` each); returns (cache, images per view, seconds)."""
    import numpy as np
    import torch

    from rkd_pml.data import ImageDataset
    from rkd_pml.data.digits import ArrayImageReader
    from rkd_pml.data.teacher_cache import TeacherCache, build_teacher_cache

    rng = np.random.RandomState(0)
    side = int(args.size * 1.25)
    pixels = rng.randint(0, 256, (args.batch, side, side, 3), dtype=np.uint8)
    dataset = ImageDataset(list(range(args.batch)), np.arange(args.batch) % 8, list(range(8)),
                           ArrayImageReader(pixels), None, "RGB", "bench")  # fmt: skip
    t0 = time.perf_counter()
    out = build_teacher_cache(teacher, dataset, args.views, os.path.join(tmp, "cache"), view=view,
                              batch_size=args.batch, device=args.device, progress=False)  # fmt: skip
    seconds = time.perf_counter() - t0
    cache = TeacherCache.open(out)
    per_view = [
        torch.stack([view.apply(dataset.reader(i), cache.params[i, k]) for i in range(args.batch)])
        for k in range(args.views)
    ]
    return cache, per_view, seconds


def machine(args) -> dict:
    """The machine's description (:func:`machine_info`), the torch threads and OMP_WAIT_POLICY."""
    return {**machine_info(args.device), "threads": args.threads, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from rkd_pml.data.teacher_cache import choose_view
    from rkd_pml.data.transforms import build_view
    from rkd_pml.losses import RKDLoss
    from rkd_pml.models import EmbeddingModel

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    teacher = EmbeddingModel(args.teacher, args.teacher_dim, l2_normalize=True).eval().requires_grad_(False)
    student = EmbeddingModel(args.student, args.student_dim)
    view = build_view(args.size, data_config=student.data_config, train_transform="random_resized_crop")
    report = {"machine": machine(args), "args": vars(args), "results": []}
    names = [c for c in args.configs.split(",") if c]
    loss_fn = RKDLoss()
    with tempfile.TemporaryDirectory() as tmp:
        cache, per_view, build_s = build_cache(args, teacher, view, tmp)
        report["teacher_cache"] = {"build_s": build_s, "images": args.batch, "views": args.views,
                                   "note": "built once with the float32 teacher; not part of any step"}  # fmt: skip
        rows = list(range(args.batch))

        def cache_read(r):  # the views of one epoch: CachedViews' choice for epoch r
            ks = [choose_view(0, r, i, cache.views) for i in rows]
            return cache.embeddings(rows, ks)

        benches = []
        for name in names:
            try:
                read = cache_read if name == "teacher_cache" else None
                benches.append(Bench(name, student, teacher, per_view[0], loss_fn, read, args.device))
            except Exception as exc:  # noqa: BLE001 - recorded, the others go on
                report["results"].append({"name": name, "error": f"{type(exc).__name__}: {exc}"})
        for b in benches:
            load = os.getloadavg()
            try:
                for i in range(args.warmup):
                    b.warmup_s.append(b.step(i)["total"])
            except Exception as exc:  # noqa: BLE001
                b.error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                b.traceback = traceback.format_exc(limit=3)[-2000:]
            print(f"{b.name}: warm-up {[round(s, 2) for s in b.warmup_s]} s (load {load[0]:.1f})"
                  + (f" FAILED {b.error}" if b.error else ""), flush=True)  # fmt: skip
        live = [b for b in benches if b.error is None]
        loads = []
        for r in range(args.steps):
            loads.append(os.getloadavg()[0])
            for b in live:
                b.parts.append(b.step(args.warmup + r))
    report["machine"]["load_average_end"] = os.getloadavg()
    report["machine"]["load_average_1min_during"] = {"min": min(loads, default=None), "max": max(loads, default=None)}
    for b in benches:
        report["results"].append(summarise(b, args.batch))
    order = {n: i for i, n in enumerate(names)}
    report["results"].sort(key=lambda r: order.get(r["name"], 99))
    print_table(report["results"])
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
        print(f"wrote {args.json}")
    return 0


def summarise(b: Bench, batch: int) -> dict:
    if b.error is not None:
        return {"name": b.name, "error": b.error, "traceback": getattr(b, "traceback", None), "warmup_s": b.warmup_s}
    totals = [p["total"] for p in b.parts]
    med = statistics.median(totals)
    peak = {"peak_cuda_mem_bytes": b.peak_bytes} if b.device.type == "cuda" else {}
    return {"name": b.name, **peak, "images_per_s": batch / med, "images_per_s_at_min_step": batch / min(totals),
            "step_median_s": med, "step_min_s": min(totals), "steps": len(totals), "warmup_s": b.warmup_s,
            "parts_median_s": {k: statistics.median(p[k] for p in b.parts) for k in b.parts[0] if k != "total"},
            }  # fmt: skip


def print_table(results: list) -> None:
    base = next((r for r in results if r["name"] == "fp32" and "images_per_s" in r), None)
    print(f"{'config':<28} {'img/s (median)':>15} {'img/s (min step)':>17} {'x fp32':>7}")
    for r in results:
        if "error" in r:
            print(f"{r['name']:<28} error: {r['error']}")
            continue
        if base:
            r["ratio_to_fp32"] = r["images_per_s"] / base["images_per_s"]
            r["ratio_to_fp32_at_min_step"] = r["images_per_s_at_min_step"] / base["images_per_s_at_min_step"]
        ratio = f"{r['ratio_to_fp32']:.2f}x" if base else "-"
        print(f"{r['name']:<28} {r['images_per_s']:>15.1f} {r['images_per_s_at_min_step']:>17.1f} {ratio:>7}")


if __name__ == "__main__":
    sys.exit(main())
