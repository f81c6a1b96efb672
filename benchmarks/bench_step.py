#!/usr/bin/env python
"""One distillation step: how much of it the RKD loss takes.

timm ResNet-50 teacher (eval, inference mode) with a linear 512-d head, L2-normalised;
timm ResNet-18 student (train) with a linear 128-d head; batch 128 of 64 px images; Adam.
Random weights (nothing is downloaded): the cost does not depend on them.

A step is: teacher forward, student forward, RKD-DA loss forward and backward down to the
student's embeddings (torch.autograd.grad), backward through the student from there,
optimizer step. That is the same computation as ``loss.backward()``; splitting it at the
embeddings measures the loss's own share. Minimum and median over the timed steps.

Example:
  python benchmarks/bench_step.py --steps 5 --loss rkd_auto,rkd_eager,official
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BACKEND_ENV = "RKD_PML_ANGLE_BACKEND"


def make_loss(name: str):
    if name == "official":
        sys.path.insert(0, HERE)
        from official import rkd_da

        return rkd_da
    from rkd_pml import RKDLoss

    backend = {"rkd_auto": "auto", "rkd_compiled": "compiled", "rkd_eager": "eager"}[name]
    try:
        loss = RKDLoss(distance_weight=1.0, angle_weight=2.0, backend=backend)
    except TypeError:  # loss classes without the keyword: the environment variable

        def loss(s, ref_emb, _inner=RKDLoss(distance_weight=1.0, angle_weight=2.0)):
            old = os.environ.get(BACKEND_ENV)
            os.environ[BACKEND_ENV] = backend
            try:
                return _inner(s, ref_emb=ref_emb)
            finally:
                if old is None:
                    os.environ.pop(BACKEND_ENV, None)
                else:
                    os.environ[BACKEND_ENV] = old

    return lambda s, t: loss(s, ref_emb=t)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--size", type=int, default=64, help="image side in pixels")
    p.add_argument("--steps", type=int, default=5, help="timed steps (after 2 warm-up steps)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--loss", default="rkd_auto,rkd_eager", help="rkd_auto, rkd_compiled, rkd_eager, official")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    import timm
    import torch
    from torch import nn
    from torch.nn import functional as F

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    teacher = nn.Sequential(timm.create_model("resnet50", pretrained=False, num_classes=0), nn.LazyLinear(512))
    student = nn.Sequential(timm.create_model("resnet18", pretrained=False, num_classes=0), nn.LazyLinear(128))
    images = torch.randn(args.batch, 3, args.size, args.size)
    with torch.no_grad():
        teacher(images[:2])
        student(images[:2])
    teacher.eval()
    student.train()
    opt = torch.optim.Adam(student.parameters(), lr=1e-4)

    results = {"machine": {"torch": torch.__version__, "timm": timm.__version__, "threads": args.threads,
                           "load_average_start": os.getloadavg()},
               "args": vars(args), "losses": {}}  # fmt: skip
    for name in [v for v in args.loss.split(",") if v]:
        loss_fn = make_loss(name)
        totals, loss_times, parts = [], [], []
        for it in range(args.steps + 2):
            t0 = time.perf_counter()
            with torch.inference_mode():
                t_emb = F.normalize(teacher(images), dim=1)
            t_emb = t_emb.clone()  # a normal tensor (inference tensors cannot enter autograd)
            t1 = time.perf_counter()
            s_emb = student(images)
            t2 = time.perf_counter()
            loss = loss_fn(s_emb, t_emb)
            (g_emb,) = torch.autograd.grad(loss, s_emb)
            t3 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            s_emb.backward(g_emb)
            opt.step()
            t4 = time.perf_counter()
            if it >= 2:
                totals.append(t4 - t0)
                loss_times.append(t3 - t2)
                parts.append({"teacher_fwd": t1 - t0, "student_fwd": t2 - t1, "loss_fwd_bwd": t3 - t2,
                              "student_bwd_and_step": t4 - t3})  # fmt: skip
        med = sorted(range(len(totals)), key=lambda k: totals[k])[len(totals) // 2]
        shares = sorted(lt / tt for lt, tt in zip(loss_times, totals))
        res = {
            "step_min_s": min(totals),
            "step_median_s": totals[med],
            "loss_min_s": min(loss_times),
            "loss_median_s": sorted(loss_times)[len(loss_times) // 2],
            "loss_share_median": shares[len(shares) // 2],
            "loss_share_of_min_step": min(loss_times) / min(totals),
            "median_step_parts": parts[med],
        }
        results["losses"][name] = res
        print(
            f"{name:<13} step min {res['step_min_s']:.3f} s median {res['step_median_s']:.3f} s | "
            f"loss fwd+bwd min {res['loss_min_s'] * 1e3:.1f} ms median {res['loss_median_s'] * 1e3:.1f} ms | "
            f"share median {100 * res['loss_share_median']:.2f}% (min/min {100 * res['loss_share_of_min_step']:.2f}%)",
            flush=True,
        )
    results["machine"]["load_average_end"] = os.getloadavg()
    out = args.out or os.path.join(HERE, "results", f"bench_step_{_dt.datetime.now().strftime('%Y%m%d_%H%M%S')}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(results, f, indent=1)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
