"""benchmarks/bench_sharded_angle.py: refuses batches that do not split, and times P = 1, 2."""

import importlib.util
import json
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_sharded_angle.py"


def _module():
    spec = importlib.util.spec_from_file_location("bench_sharded_angle", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_batch_that_does_not_split_is_refused(capsys):
    with pytest.raises(SystemExit):
        _module().main(["--n", "10", "--p", "1,4"])
    assert "divisible" in capsys.readouterr().err


def test_one_and_two_processes_are_timed(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert _module().main(["--n", "8", "--p", "1,2", "--repeats", "1", "--backend", "eager", "--json", str(out)]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 8 |")]
    assert [r.split("|")[2].strip() for r in rows] == ["1", "2"]
    results = json.loads(out.read_text())["results"]
    assert [r["p"] for r in results] == [1, 2]
    assert all(r["median_s"] > 0 and r["cpu_median_s"] > 0 for r in results)
