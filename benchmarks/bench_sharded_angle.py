#!/usr/bin/env python
"""Per-process time of RKD-DA (1 * distance + 2 * angle, forward + backward) on a global
batch of N examples shared by P processes under ``distributed_rkd``.

With P = 1 the loss runs in a single process without a process group (the plain loss);
with P > 1 each of P processes (gloo on CPU, NCCL with one GPU each on CUDA) holds N / P
rows and calls the wrapped loss on them: the wrapper gathers the global batch, every
process forms the relations of its own rows without autograd (and receives the others'),
evaluates the RKD-D pairs and angle triplets whose first index is one of its own rows and
the gradient w.r.t. the embeddings they give, and the loss and gradient shares are summed. A step is timed on every process between two
barriers (the slowest process's time is the step's), in wall-clock time and in the CPU
time of the process (all its threads; on a shared machine the wall-clock time also measures
what the other programs take); the warm-up step (imports, lazy
initialisation, compilation) is not timed. Every process runs with ``--threads`` intra-op
threads (default 1, so that P processes use P cores).

Examples:
  python benchmarks/bench_sharded_angle.py --n 512 --p 1,2,4
  python benchmarks/bench_sharded_angle.py --n 512,1024 --p 1,2 --backend eager --json out.json
  python benchmarks/bench_sharded_angle.py --device cuda --n 1024,4096 --p 1,2,4,8
  python benchmarks/bench_sharded_angle.py --n 512 --p 1,2 --profile 12

After each N a line ``ratio N=..: P=2 / P=1 = ...`` gives the per-process time at each P over
the single-process time (medians, wall clock and CPU). ``--profile K`` also prints, for rank 0
of each run, the K operators that took the most CPU time over the timed steps (torch.profiler).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def worker(args: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist
    from torch.nn import functional as F

    sys.path.insert(0, ROOT)
    from rkd_pml import RKDLoss
    from rkd_pml.distributed import distributed_rkd

    torch.set_num_threads(args.threads)
    rank, world = args.rank, args.world_size
    cuda = args.device == "cuda"
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1:
        dist.init_process_group(
            "nccl" if cuda else "gloo", init_method=args.init_method, rank=rank, world_size=world,
            timeout=_dt.timedelta(seconds=600),
        )  # fmt: skip
    loss = RKDLoss(distance_weight=1.0, angle_weight=2.0, backend=args.backend)
    fn = distributed_rkd(loss)[0] if world > 1 else loss

    def sync():
        if cuda:
            torch.cuda.synchronize()
        if world > 1:
            dist.barrier()

    g = torch.Generator().manual_seed(0)
    s_all = torch.randn(args.n, args.ds, generator=g)
    t_all = F.normalize(torch.randn(args.n, args.dt, generator=g), dim=1)
    rows = slice(rank * args.n // world, (rank + 1) * args.n // world)
    s_loc, t_loc = s_all[rows].to(device), t_all[rows].to(device)

    def step() -> tuple[float, float]:
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        s = s_loc.clone().requires_grad_(True)
        value = fn(s, ref_emb=t_loc)
        value.backward()
        if cuda:
            torch.cuda.synchronize()
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        sync()
        return elapsed, cpu

    step()  # warm-up
    if args.profile and rank == 0:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            times, cpu = zip(*[step() for _ in range(args.repeats)])
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile)
        with open(os.path.join(args.out, "profile.txt"), "w") as f:
            f.write(table)
    else:
        times, cpu = zip(*[step() for _ in range(args.repeats)])
    if world > 1:
        dist.destroy_process_group()
    with open(os.path.join(args.out, f"rank{rank}.json"), "w") as f:
        json.dump({"rank": rank, "times": times, "cpu": cpu}, f)


def run_p(n: int, p: int, args: argparse.Namespace) -> dict:
    """Start ``p`` worker processes for batch ``n``; per-step times of the slowest process."""
    with tempfile.TemporaryDirectory() as out:
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONPATH=ROOT)
        common = [
            sys.executable, os.path.abspath(__file__), "--worker", "--out", out, "--world-size", str(p),
            "--init-method", f"file://{os.path.join(out, 'store')}", "--n", str(n), "--ds", str(args.ds),
            "--dt", str(args.dt), "--repeats", str(args.repeats), "--threads", str(args.threads),
            "--backend", args.backend, "--device", args.device, "--profile", str(args.profile),
        ]  # fmt: skip
        procs = [subprocess.Popen(common + ["--rank", str(r)], env=env) for r in range(p)]
        codes = [proc.wait() for proc in procs]
        if any(codes):
            return {"n": n, "p": p, "error": f"exit codes {codes}"}
        per_rank = [json.load(open(os.path.join(out, f"rank{r}.json"))) for r in range(p)]
        profile_path = os.path.join(out, "profile.txt")
        profile_table = open(profile_path).read() if os.path.exists(profile_path) else None
    steps = [max(ts) for ts in zip(*(r["times"] for r in per_rank))]  # as long as the slowest process
    cpu = [max(ts) for ts in zip(*(r["cpu"] for r in per_rank))]
    return {
        "n": n, "p": p, "min_s": min(steps), "median_s": statistics.median(steps), "steps_s": steps,
        "cpu_min_s": min(cpu), "cpu_median_s": statistics.median(cpu), "cpu_s": cpu, "profile": profile_table,
    }  # fmt: skip


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", default="512", help="global batch sizes, comma-separated (divisible by each P)")
    ap.add_argument("--p", default="1,2,4", help="process counts, comma-separated")
    ap.add_argument("--ds", type=int, default=128, help="student width")
    ap.add_argument("--dt", type=int, default=512, help="teacher width")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads per process")
    ap.add_argument("--backend", default="auto", choices=("auto", "triton", "compiled", "eager"))
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--json", default=None, help="also write the results to this file")
    ap.add_argument("--profile", type=int, default=0, metavar="K",
                    help="also print rank 0's K costliest operators (torch.profiler, timed steps)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--world-size", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--init-method", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        args.n = int(args.n)
        worker(args)
        return 0
    try:
        ns = [int(v) for v in args.n.split(",")]
        ps = [int(v) for v in args.p.split(",")]
    except ValueError:
        ap.error("--n and --p take comma-separated integers")
    if any(n % p for n in ns for p in ps) or min(ps) < 1:
        ap.error("every --n must be divisible by every --p (each process holds N / P rows)")
    load = os.getloadavg()
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {load[0]:.2f}; "
          f"device {args.device}, backend {args.backend}, {args.threads} thread(s) per process, "
          f"student {args.ds}-d, teacher {args.dt}-d, float32, {args.repeats} timed steps")  # fmt: skip
    results = []
    ratio_lines = []
    print("| N | P | wall s per process: min / median | x P=1 (median) | CPU s per process: min / median | x P=1 (median) |")
    print("|---|---|---|---|---|---|")
    for n in ns:
        base = None
        for p in ps:
            r = run_p(n, p, args)
            results.append(r)
            if "error" in r:
                print(f"| {n} | {p} | {r['error']} | | | |")
                continue
            base = (r["median_s"], r["cpu_median_s"]) if p == 1 else base
            keys = ("median_s", "cpu_median_s")
            ratios = [f"{r[k] / b:.2f}" if base else "-" for k, b in zip(keys, base or (1, 1))]
            print(
                f"| {n} | {p} | {r['min_s']:.4f} / {r['median_s']:.4f} | {ratios[0]} "
                f"| {r['cpu_min_s']:.4f} / {r['cpu_median_s']:.4f} | {ratios[1]} |",
                flush=True,
            )
            if base and p != 1:
                ratio_lines.append(
                    f"ratio N={n}: P={p} / P=1 = {ratios[0]} wall, {ratios[1]} CPU (per-process medians, backend {args.backend})"
                )
    for r in results:
        if r.get("profile"):
            print(f"\n# rank 0 operators, N={r['n']} P={r['p']} ({args.repeats} timed steps)\n{r['profile']}")
    print()
    for line in ratio_lines:
        print(line)
    print(f"# load average (1 min) before {load[0]:.2f}, after {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    if args.json:
        with open(args.json, "w") as f:
            meta = {"load_before": load, "load_after": os.getloadavg(), "args": vars(args), "cpus": os.cpu_count()}
            json.dump({"meta": meta, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
