"""Smoke test of the step benchmark (benchmarks/bench_step.py --quick): tiny models, one step."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_run_writes_every_configuration(load_script, tmp_path, capsys):
    bench = load_script(ROOT / "benchmarks" / "bench_step.py")
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
