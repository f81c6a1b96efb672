"""benchmarks/bench_sharded_angle.py: refuses batches that do not split, and times P = 1, 2."""

import json
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_sharded_angle.py"


def test_batch_that_does_not_split_is_refused(load_script, capsys):
    with pytest.raises(SystemExit):
        load_script(PATH).main(["--n", "10", "--p", "1,4"])
    assert "divisible" in capsys.readouterr().err


def test_one_and_two_processes_are_timed(load_script, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert load_script(PATH).main(["--n", "8", "--p", "1,2", "--repeats", "1", "--backend", "eager", "--json", str(out)]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 8 |")]
    assert [r.split("|")[2].strip() for r in rows] == ["1", "2"]
    results = json.loads(out.read_text())["results"]
    assert [r["p"] for r in results] == [1, 2]
    assert all(r["median_s"] > 0 and r["cpu_median_s"] > 0 for r in results)
