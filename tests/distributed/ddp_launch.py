"""Start a test worker script on several gloo processes (FileStore rendezvous) and collect
the ``rank<r>.json`` each one writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable


def _tail(path: Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else ""


def run_ranks(
    worker: Path, world_size: int, out: Path, timeout_s: float, collective_timeout_s: float = 60
) -> list[dict]:
    """Run ``worker --out OUT --rank R --world-size W --init-method file://... --timeout T`` on
    ``world_size`` processes (one thread each); one result dict per rank, each with the run's
    ``wall_s``. Raises AssertionError with the ranks' logs when one fails or the run times out."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs, logs = [], []
    start = time.monotonic()
    try:
        for rank in range(world_size):
            log = out / f"rank{rank}.log"
            logs.append(log)
            with open(log, "w") as f:
                procs.append(
                    subprocess.Popen(
                        [
                            sys.executable, str(worker), "--out", str(out),
                            "--rank", str(rank), "--world-size", str(world_size),
                            "--init-method", f"file://{out / 'store'}", "--timeout", str(collective_timeout_s),
                        ],
                        stdout=f, stderr=subprocess.STDOUT, env=env,
                    )
                )  # fmt: skip
        while any(p.poll() is None for p in procs):
            if any(p.returncode not in (None, 0) for p in procs):
                break  # one rank failed: the others would wait for it in a collective
            if time.monotonic() - start > timeout_s:
                break
            time.sleep(0.1)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    wall = time.monotonic() - start
    logs_text = "\n".join(
        f"--- rank {r} (exit {p.returncode}) ---\n{_tail(log)}" for r, (p, log) in enumerate(zip(procs, logs))
    )
    if wall > timeout_s:
        raise AssertionError(f"the {world_size}-process run timed out after {timeout_s} s\n{logs_text}")
    if any(p.returncode != 0 for p in procs):
        raise AssertionError(f"a rank failed\n{logs_text}")
    results = [json.loads((out / f"rank{r}.json").read_text()) for r in range(world_size)]
    for r in results:
        r["wall_s"] = wall
    return results


def serve_rank(results: Callable[[int, int], dict], description: str, argv: list[str] | None = None) -> int:
    """The ``main`` of a worker script started by :func:`run_ranks` (or by torchrun): join the
    gloo group (one thread, float64 default dtype, UserWarnings off), write ``{"rank": r,
    **results(r, world_size)}`` to ``OUT/rank<r>.json``; 1 with the traceback printed when
    ``results`` raises."""
    import argparse
    import datetime
    import traceback
    import warnings

    import torch
    import torch.distributed as dist

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", required=True)
    parser.add_argument("--rank", type=int, default=None, help="default: $RANK (torchrun)")
    parser.add_argument("--world-size", type=int, default=None, help="default: $WORLD_SIZE")
    parser.add_argument("--init-method", default="env://")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per collective")
    args = parser.parse_args(argv)
    rank = args.rank if args.rank is not None else int(os.environ["RANK"])
    world_size = args.world_size if args.world_size is not None else int(os.environ["WORLD_SIZE"])

    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    warnings.filterwarnings("ignore", category=UserWarning)
    dist.init_process_group(
        "gloo", init_method=args.init_method, rank=rank, world_size=world_size,
        timeout=datetime.timedelta(seconds=args.timeout),
    )  # fmt: skip
    try:
        result = {"rank": rank, **results(rank, world_size)}
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, f"rank{rank}.json"), "w") as f:
            json.dump(result, f, indent=1)
    except Exception:
        traceback.print_exc()
        return 1
    finally:
        dist.destroy_process_group()
    return 0
