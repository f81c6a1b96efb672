"""Smoke test of the step benchmark (benchmarks/bench_step.py --quick): tiny models, one step."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _load():
    spec = importlib.util.spec_from_file_location("benchmarks_bench_step", ROOT / "benchmarks" / "bench_step.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_quick_run_writes_every_configuration(tmp_path, capsys):
    bench = _load()
    out = tmp_path / "bench.json"
    assert bench.main(["--quick", "--steps", "1", "--warmup", "1", "--threads", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    names = [r["name"] for r in report["results"]]
    assert names == ["fp32", "bf16_channels_last", "teacher_cache"]
    for r in report["results"]:
        assert "error" not in r and r["images_per_s"] > 0 and r["step_min_s"] <= r["step_median_s"]
    assert report["results"][0]["ratio_to_fp32"] == 1.0
    assert len(report["machine"]["load_average_start"]) == 3 and report["machine"]["threads"] == 1
    assert report["teacher_cache"]["build_s"] > 0
    assert "x fp32" in capsys.readouterr().out
