"""Start a test worker script on several gloo processes (FileStore rendezvous) and collect
the ``rank<r>.json`` each one writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


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
