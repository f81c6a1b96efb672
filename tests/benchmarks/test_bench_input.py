"""bench_input.py runs end to end on digits and writes the promised JSON."""

import json
import os

BENCH = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "bench_input.py")


def test_bench_input_quick(load_script, tmp_path):
    bench = load_script(BENCH)
    out = tmp_path / "bench.json"
    bench.main(["--quick", "--json", str(out)])
    data = json.loads(out.read_text())
    names = [r["name"] for r in data["results"]]
    assert names == ["pil", "fast"] and all(r["images_per_s"] > 0 for r in data["results"])
    assert data["settings"]["dataset"] == "digits" and data["ratios"][0]["size"] == 16
