#!/usr/bin/env python
"""Forward + backward cost of RKD-DA (1 * distance + 2 * angle) against the official
formulation, for growing batch sizes.

Implementations:
  rkd_compiled  rkd_pml's RKDLoss, angle kernel fused by torch.compile
  rkd_eager     rkd_pml's RKDLoss, plain PyTorch angle kernel (the fallback)
  official      the official formulation (rkd_pml.functional.official)
  torchdistill  torchdistill's RKDLoss, when importable (the same formulation)

Each (implementation, N, teacher width) runs in fresh subprocesses: one for time (a warm-up
on a small batch, which also compiles, then repeated fwd+bwd on the full batch; minimum and
median reported) and one for memory. Peak extra memory is the growth of the process's
resident set during one fwd+bwd: the kernel's peak-RSS counter (VmHWM) is reset through
/proc/self/clear_refs just before the step and read after it, minus the RSS before it. The
memory subprocess runs with MALLOC_MMAP_THRESHOLD_=65536 so that every allocation of 64 KiB
or more is its own mapping, returned to the system when freed: what is resident is then
what is allocated (glibc would otherwise keep freed blocks and hide reuse). Where
clear_refs is unavailable, a thread samples the RSS every 0.5 ms instead.

On a GPU (``--device cuda``) the inputs live on the device, each run is timed by CUDA events
around it (after a synchronisation), and the peak extra memory is
``torch.cuda.max_memory_allocated`` during one fwd+bwd (the counter reset just before it)
minus the memory allocated before it; the memory budget is then a share of the GPU's free memory.

Configurations whose estimated memory exceeds the budget, or whose estimated time (from
the previous N) exceeds --max-seconds, are skipped and listed as such.

Examples:
  python benchmarks/bench_losses.py --quick
  python benchmarks/bench_losses.py --n 64,128,256,512,1024,2048 --dt 512,2048 --repeats 5
  python benchmarks/bench_losses.py --device cuda --n 256,1024,4096 --dt 2048 --out gpu.json
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from benchmarks.bench_machine import GIB, Clock, check_device, machine_info, mem_available, peak_memory_during  # noqa: E402

IMPLS = ("rkd_compiled", "rkd_eager", "official", "torchdistill")
BACKEND_ENV = "RKD_PML_ANGLE_BACKEND"


# ----------------------------------------------------------------------------- worker side


def make_loss_fn(impl: str):
    """``fn(student, teacher) -> scalar`` for one implementation (raises ImportError)."""
    if impl in ("rkd_compiled", "rkd_eager"):
        from rkd_pml import RKDLoss

        backend = impl.split("_")[1]
        try:
            loss = RKDLoss(distance_weight=1.0, angle_weight=2.0, backend=backend)
        except TypeError:  # loss classes without the keyword: the environment variable
            os.environ[BACKEND_ENV] = backend
            loss = RKDLoss(distance_weight=1.0, angle_weight=2.0)
        return lambda s, t: loss(s, ref_emb=t)
    if impl == "official":
        from rkd_pml.functional.official import rkd_da

        return rkd_da
    if impl == "torchdistill":
        from torchdistill.losses.mid_level import RKDLoss as TDRKDLoss

        loss = TDRKDLoss("student", "teacher", dist_factor=1.0, angle_factor=2.0, reduction="mean")
        return lambda s, t: loss({"student": {"output": s}}, {"teacher": {"output": t}})
    raise ValueError(impl)


def worker(cfg: dict) -> dict:
    import torch
    from torch.nn import functional as F

    torch.set_num_threads(cfg["threads"])
    fn = make_loss_fn(cfg["impl"])
    dtype = getattr(torch, cfg["dtype"])
    device = torch.device(cfg.get("device", "cpu"))

    def inputs(n, seed=0):  # drawn on the CPU (the same numbers on every device), then moved
        g = torch.Generator().manual_seed(seed)
        s = torch.randn(n, cfg["ds"], generator=g).to(device, dtype)
        t = F.normalize(torch.randn(n, cfg["dt"], generator=g), dim=1).to(device, dtype)
        return s, t

    def step(s0, t, sync=True):
        s = s0.clone().requires_grad_(True)
        loss = fn(s, t)
        loss.backward()
        return float(loss.detach()) if sync else loss.detach()

    out = {"impl": cfg["impl"], "n": cfg["n"], "ds": cfg["ds"], "dt": cfg["dt"], "mode": cfg["mode"]}
    t0 = time.perf_counter()
    step(*inputs(min(cfg["n"], 96), seed=1))  # warm-up: imports, lazy init, compilation
    out["warmup_s"] = time.perf_counter() - t0
    student, teacher = inputs(cfg["n"])
    gc.collect()
    if cfg["mode"] == "memory":
        out["loss"], out["peak_extra_bytes"], out["memory_method"] = peak_memory_during(
            lambda: step(student, teacher), device)  # fmt: skip
        return out
    times = []
    start = time.perf_counter()
    # at least `repeats` runs (fewer only past max_seconds); cheap configurations keep
    # going for min_seconds (at most 100 runs) so that the minimum is not a lucky draw
    while True:
        clock = Clock(device)  # on a GPU: CUDA events around the step, read after it has finished
        loss = step(student, teacher, sync=False)
        times.append(clock.stop()[0])
        out["loss"] = float(loss)
        elapsed = time.perf_counter() - start
        if len(times) >= 2 and elapsed > cfg["max_seconds"]:
            break
        if len(times) >= cfg["repeats"] and (elapsed > cfg["min_seconds"] or len(times) >= 100):
            break
    times.sort()
    out.update(times=times, min_s=times[0], median_s=times[len(times) // 2])
    return out


# ----------------------------------------------------------------------------- parent side


def estimate_bytes(impl: str, n: int, ds: int, dt: int) -> float:
    """Rough peak extra memory (float32), calibrated on this machine's measurements."""
    if impl in ("official", "torchdistill"):
        # N x N x D differences, normalised copies and their gradients; N^3 cosines, errors.
        # Fitted to this benchmark's measurements (N = 128..512), plus 25 %.
        return 1.25 * (6.5 * n * n * (ds + dt) + 7.0 * n**3)
    # O(N^2) float64 matrices; the inputs' float64 copies
    return 8.0 * (40 * n * n + 2 * n * (ds + dt)) + 64 * 2**20


def run_worker(cfg: dict, timeout: float) -> dict:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(cfg["threads"])
    env.pop(BACKEND_ENV, None)
    if cfg.get("omp_passive"):
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    if cfg["mode"] == "memory":
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
        env["MALLOC_TRIM_THRESHOLD_"] = "0"
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(cfg)]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {proc.returncode}: {' | '.join(tail)}"}
    return json.loads(lines[-1])


def importable(impl: str) -> bool:
    if impl != "torchdistill":
        return True
    try:
        import torchdistill.losses.mid_level  # noqa: F401
    except Exception:  # noqa: BLE001
        return False
    return True


def fmt_s(x):
    return "-" if x is None else (f"{x:.4f}" if x < 10 else f"{x:.1f}")


def fmt_mib(x):
    return "-" if x is None else f"{x / 2**20:.0f}"


def print_table(rows: list[dict], impls: list[str]) -> None:
    print()
    print("time: fwd+bwd seconds (min / median); mem: peak extra MiB; "
          "x: official time / this time (from min, and median), mem ratio: official / this")
    hdr = f"{'Dt':>5} {'N':>5}  {'impl':<13} {'min s':>8} {'median s':>9} {'mem MiB':>8} {'x (min)':>8} {'x (med)':>8} {'mem ratio':>9}  note"
    print(hdr)
    print("-" * len(hdr))
    by_key = {(r["dt"], r["n"], r["impl"]): r for r in rows}
    for r in rows:
        off = by_key.get((r["dt"], r["n"], "official"), {})
        x_min = x_med = mem_ratio = None
        if r["impl"] != "official" and off.get("min_s") and r.get("min_s"):
            x_min = off["min_s"] / r["min_s"]
            x_med = off["median_s"] / r["median_s"]
        if r["impl"] != "official" and off.get("peak_extra_bytes") and r.get("peak_extra_bytes"):
            mem_ratio = off["peak_extra_bytes"] / max(r["peak_extra_bytes"], 1)
        print(
            f"{r['dt']:>5} {r['n']:>5}  {r['impl']:<13} {fmt_s(r.get('min_s')):>8} "
            f"{fmt_s(r.get('median_s')):>9} {fmt_mib(r.get('peak_extra_bytes')):>8} "
            f"{'-' if x_min is None else f'{x_min:.1f}':>8} {'-' if x_med is None else f'{x_med:.1f}':>8} "
            f"{'-' if mem_ratio is None else f'{mem_ratio:.1f}':>9}  {r.get('note', '')}"
        )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--n", default="64,128,256,512,1024,2048", help="batch sizes (comma-separated)")
    p.add_argument("--dt", default="512,2048", help="teacher widths")
    p.add_argument("--ds", type=int, default=128, help="student width")
    p.add_argument("--impls", default=",".join(IMPLS), help="implementations to run")
    p.add_argument("--repeats", type=int, default=5, help="timed fwd+bwd runs per configuration")
    p.add_argument("--min-seconds", type=float, default=3.0,
                   help="keep repeating cheap configurations for this long (at most 100 runs)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (CUDA events for time, peak CUDA memory)")
    p.add_argument("--max-seconds", type=float, default=120.0,
                   help="stop repeating after this long; skip configurations estimated to take longer per run")
    p.add_argument("--mem-budget-gib", type=float, default=None,
                   help="skip configurations estimated above this (default: 60%% of MemAvailable)")
    p.add_argument("--no-memory", action="store_true", help="time only")
    p.add_argument("--omp-passive", action="store_true",
                   help="OMP_WAIT_POLICY=PASSIVE in the workers (steadier on a shared, loaded machine)")
    p.add_argument("--quick", action="store_true", help="N 64..512, Dt 2048, 3 repeats")
    p.add_argument("--out", default=None, help="JSON output path (default benchmarks/results/bench_losses_<time>.json)")
    args = p.parse_args(argv)

    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0

    if args.quick:
        args.n, args.dt, args.repeats = "64,128,256,512", "2048", 3
    ns = [int(v) for v in args.n.split(",")]
    dts = [int(v) for v in args.dt.split(",")]
    impls = [i for i in args.impls.split(",") if i]
    for i in impls:
        if i not in IMPLS:
            p.error(f"unknown implementation {i!r}; choose from {IMPLS}")
    check_device(p, args.device)
    info = machine_info(args.device, aliases={"cpu_count": "logical_cpus"})
    free = info["gpu_mem_free_gib"] * GIB if args.device != "cpu" else mem_available()
    budget = args.mem_budget_gib * GIB if args.mem_budget_gib else 0.6 * free
    info.update(threads=args.threads, dtype=args.dtype, ds=args.ds, memory_budget_gib=round(budget / GIB, 1),
                omp_wait_policy="PASSIVE" if args.omp_passive else os.environ.get("OMP_WAIT_POLICY", "default"))
    print(json.dumps(info))

    rows = []
    for dt in dts:
        last_time: dict[str, tuple[int, float]] = {}
        for n in ns:
            for impl in impls:
                row = {"impl": impl, "n": n, "ds": args.ds, "dt": dt}
                rows.append(row)
                if not importable(impl):
                    row["note"] = "not importable: skipped"
                    continue
                est = estimate_bytes(impl, n, args.ds, dt)
                row["estimated_bytes"] = est
                if est > budget:
                    row["note"] = f"skipped: estimated {est / GIB:.1f} GiB > budget {budget / GIB:.1f} GiB"
                    continue
                if impl in last_time:
                    n0, t0 = last_time[impl]
                    predicted = t0 * (n / n0) ** 3
                    if predicted > args.max_seconds:
                        row["note"] = f"skipped: estimated {predicted:.0f} s per run > {args.max_seconds:.0f} s"
                        continue
                cfg = {"impl": impl, "n": n, "ds": args.ds, "dt": dt, "dtype": args.dtype, "device": args.device,
                       "threads": args.threads, "repeats": args.repeats, "max_seconds": args.max_seconds,
                       "min_seconds": args.min_seconds,
                       "omp_passive": args.omp_passive}  # fmt: skip
                res = run_worker(dict(cfg, mode="time"), timeout=args.max_seconds * 4 + 600)
                if "error" in res:
                    row["note"] = res["error"][:200]
                    print(f"  {impl} N={n} Dt={dt}: {row['note']}", flush=True)
                    continue
                row.update({k: res[k] for k in ("min_s", "median_s", "times", "warmup_s", "loss")})
                last_time[impl] = (n, res["median_s"])
                if not args.no_memory:
                    mem = run_worker(dict(cfg, mode="memory"), timeout=args.max_seconds * 2 + 600)
                    if "error" in mem:
                        row["note"] = "memory: " + mem["error"][:200]
                    else:
                        row["peak_extra_bytes"] = mem["peak_extra_bytes"]
                        row["memory_method"] = mem["memory_method"]
                print(f"  {impl:<13} N={n:<5} Dt={dt:<5} min {fmt_s(row['min_s'])} s  median "
                      f"{fmt_s(row['median_s'])} s  mem {fmt_mib(row.get('peak_extra_bytes'))} MiB", flush=True)
    info["load_average_end"] = os.getloadavg()
    print_table(rows, impls)
    out = args.out or os.path.join(
        HERE, "results", f"bench_losses_{_dt.datetime.now().strftime('%Y%m%d_%H%M%S')}.json"
    )
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"machine": info, "args": vars(args), "rows": rows}, f, indent=1)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
