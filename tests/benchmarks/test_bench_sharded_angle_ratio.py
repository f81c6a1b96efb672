"""benchmarks/bench_sharded_angle.py prints the P / P=1 ratio of its medians on a line of its
own, and with --profile the costliest operators of rank 0 for each run."""

import importlib.util
import json
from pathlib import Path

PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_sharded_angle.py"


def _module():
    spec = importlib.util.spec_from_file_location("bench_sharded_angle_ratio", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ratio_line_and_profile(tmp_path, capsys):
    out = tmp_path / "r.json"
    args = ["--n", "8", "--p", "1,2", "--repeats", "1", "--backend", "eager", "--json", str(out), "--profile", "3"]
    assert _module().main(args) == 0
    printed = capsys.readouterr().out
    results = json.loads(out.read_text())["results"]
    wall = results[1]["median_s"] / results[0]["median_s"]
    cpu = results[1]["cpu_median_s"] / results[0]["cpu_median_s"]
    assert f"ratio N=8: P=2 / P=1 = {wall:.2f} wall, {cpu:.2f} CPU" in printed
    assert printed.count("# rank 0 operators, N=8") == 2 and "Self CPU" in printed
