"""What the benchmarks share: the description of the machine a result was measured on, the
``--device`` check, memory probes (resident set on the CPU, allocated memory on a GPU) and a
clock that times the parts of a step (wall clock on the CPU, CUDA events on a GPU).

Not a benchmark itself: the ``bench_*.py`` scripts import it as ``benchmarks.bench_machine``
(each puts the repository root on ``sys.path`` first).
"""

from __future__ import annotations

import argparse
import os
import platform
import threading
import time
from importlib import metadata
from typing import Any, Callable, TypeVar

GIB = 1024**3
T = TypeVar("T")


# ----------------------------------------------------------------------------- description


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (``platform.processor()`` where that is absent)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                        platform.processor())  # fmt: skip
    except OSError:
        return platform.processor()


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def gpu_info(device: str) -> dict[str, Any]:
    """The GPU's name, total and free memory (GiB) and the CUDA version torch was built with."""
    import torch

    props = torch.cuda.get_device_properties(torch.device(device))
    free, total = torch.cuda.mem_get_info(torch.device(device))
    return {"gpu": props.name, "gpu_mem_total_gib": round(total / GIB, 1), "gpu_mem_free_gib": round(free / GIB, 1),
            "cuda": torch.version.cuda}  # fmt: skip


def machine_info(device: str = "cpu", aliases: dict[str, str] | None = None) -> dict[str, Any]:
    """The machine a result is measured on: CPU, cores, memory, platform, Python, torch, timm and
    PML versions, the load average now (``load_average_start``), the device and, on a GPU,
    :func:`gpu_info` (``gpu`` is None on the CPU). ``aliases`` renames keys (``{"cpu_count":
    "logical_cpus"}``) for a script whose earlier results used other names."""
    import torch

    info = {
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "mem_total_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB, 1),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": _version("timm"),
        "pml": _version("pytorch-metric-learning"),
        "load_average_start": os.getloadavg(),
        "device": str(device),
        "gpu": None,
    }
    if str(device).startswith("cuda"):
        info.update(gpu_info(str(device)))
    aliases = aliases or {}
    return {aliases.get(key, key): value for key, value in info.items()}


def check_device(parser: argparse.ArgumentParser, device: str) -> None:
    """``--device`` must be cpu, cuda or cuda:N, and a CUDA one must be there (else ``parser.error``)."""
    if not (device in ("cpu", "cuda") or device.startswith("cuda:")):
        parser.error(f"--device must be cpu, cuda or cuda:N, got {device!r}")
    if device != "cpu":
        import torch

        if not torch.cuda.is_available():
            parser.error(f"--device {device}: no CUDA GPU is available")


# ----------------------------------------------------------------------------- memory


def mem_available() -> int:
    """MemAvailable of /proc/meminfo in bytes (8 GiB where it cannot be read)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * GIB


def rss_bytes() -> int:
    """This process's resident set now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def hwm_bytes() -> int:
    """This process's peak resident set (VmHWM) since it started or since :func:`reset_hwm`."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def reset_hwm() -> bool:
    """Resets VmHWM to the current RSS through /proc/self/clear_refs; False where that is refused."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_memory_during(fn: Callable[[], T], device: Any = "cpu") -> tuple[T, int, str]:
    """``(fn(), peak extra bytes, how they were measured)``. On a GPU: the peak of
    ``torch.cuda.max_memory_allocated`` during ``fn`` (counter reset before) minus what was
    allocated before. On the CPU: the peak resident set (VmHWM reset through clear_refs) minus
    the RSS before; where clear_refs is refused, the RSS sampled every 0.5 ms instead."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        clock = Clock(device)
        result = fn()
        return result, clock.peak_bytes(), "torch.cuda.max_memory_allocated (reset before), minus memory allocated before"
    if reset_hwm():
        base = rss_bytes()
        result = fn()
        return result, hwm_bytes() - base, "VmHWM reset via clear_refs, minus RSS before"
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(rss_bytes())
            time.sleep(0.0005)

    base = rss_bytes()
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        result = fn()
    finally:
        stop.set()
        thread.join()
    return result, max(samples + [rss_bytes()]) - base, "RSS sampled every 0.5 ms, minus RSS before"


# ----------------------------------------------------------------------------- time


class Clock:
    """Seconds between marks: wall clock on the CPU; on a GPU, CUDA events recorded on the
    current stream (after a synchronisation at the start; read once the step has finished),
    with the peak-memory counter reset at the start (``base_bytes``: allocated then)."""

    def __init__(self, device: Any):
        import torch

        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        if self.cuda:
            torch.cuda.synchronize(self.device)
            self.base_bytes = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.marks = [torch.cuda.Event(enable_timing=True)]
            self.marks[0].record()
        else:
            self.marks = [time.perf_counter()]

    def mark(self) -> None:
        import torch

        if self.cuda:
            self.marks.append(torch.cuda.Event(enable_timing=True))
            self.marks[-1].record()
        else:
            self.marks.append(time.perf_counter())

    def stop(self) -> list[float]:
        """The seconds between consecutive marks (the last one taken now)."""
        self.mark()
        if self.cuda:
            self.marks[-1].synchronize()
            return [a.elapsed_time(b) / 1000.0 for a, b in zip(self.marks, self.marks[1:])]
        return [b - a for a, b in zip(self.marks, self.marks[1:])]

    def peak_bytes(self) -> int:
        """On a GPU: the peak allocated since the clock started, minus ``base_bytes``; 0 on the CPU."""
        import torch

        return torch.cuda.max_memory_allocated(self.device) - self.base_bytes if self.cuda else 0
