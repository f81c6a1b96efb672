"""benchmarks/bench_machine.py, shared by the benchmarks: the memory probe sees a known
allocation, the clock's intervals hold known sleeps, the description names the machine (under
a script's own key names) and bench_input refuses a device that is not there, as the others do."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def machine(load_script):
    return load_script(ROOT / "benchmarks" / "bench_machine.py")


def test_peak_memory_during_sees_a_touched_allocation(machine):
    size = 64 * 2**20

    def touch() -> int:
        block = np.ones(size, dtype=np.uint8)  # every page written: 64 MiB resident
        return int(block[::4096].sum())

    result, extra, method = machine.peak_memory_during(touch)
    assert result == size // 4096
    assert extra >= 0.95 * size and method.endswith("minus RSS before")


def test_clock_intervals_hold_the_sleeps_between_marks(machine):
    clock = machine.Clock("cpu")
    time.sleep(0.03)
    clock.mark()
    time.sleep(0.06)
    first, second = clock.stop()
    assert 0.03 <= first < 0.5 and 0.06 <= second < 0.5
    assert clock.peak_bytes() == 0


def test_machine_info_names_the_machine_under_a_scripts_own_keys(machine):
    import timm

    info = machine.machine_info("cpu", aliases={"cpu_count": "cpus", "load_average_start": "load_average"})
    assert info["cpus"] == os.cpu_count() and "cpu_count" not in info
    assert len(info["load_average"]) == 3 and "load_average_start" not in info
    assert (info["torch"], info["timm"], info["device"], info["gpu"]) == (torch.__version__, timm.__version__, "cpu", None)
    assert info["pml"] and info["cpu"]


def test_bench_input_refuses_a_device_that_is_not_there(load_script, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exc:
        load_script(ROOT / "benchmarks" / "bench_input.py").parse_args(["--device", "cuda"])
    assert exc.value.code == 2
    assert "--device cuda: no CUDA GPU is available" in capsys.readouterr().err
