"""The benchmarks' ``--device``: tiny runs on the CPU (and on a GPU where there is one), the
refusal of a device that is not there, and bench_pipeline's two runs of the distill loop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


@pytest.fixture
def bench_script(load_script):
    """``bench_script(name)``: the module of ``benchmarks/<name>.py``."""
    return lambda name: load_script(ROOT / "benchmarks" / f"{name}.py")


@pytest.mark.parametrize("device", DEVICES)
def test_bench_losses_times_and_measures_on_the_device(bench_script, tmp_path, device):
    out = tmp_path / "losses.json"
    assert bench_script("bench_losses").main(["--n", "16", "--dt", "32", "--ds", "8", "--impls", "rkd_eager,official",
                                        "--repeats", "2", "--min-seconds", "0", "--threads", "1",
                                        "--device", device, "--out", str(out)]) == 0  # fmt: skip
    report = json.loads(out.read_text())
    assert report["machine"]["device"] == device
    rows = {r["impl"]: r for r in report["rows"]}
    for r in rows.values():
        assert "note" not in r, r["note"]
        assert 0 < r["min_s"] <= r["median_s"] and r["peak_extra_bytes"] >= 0  # RSS pages: 0 at tiny sizes
    if device == "cuda":
        assert rows["official"]["memory_method"].startswith("torch.cuda.max_memory_allocated")
        assert report["machine"]["gpu"]
    assert rows["rkd_eager"]["loss"] > 0 and rows["official"]["loss"] > 0


@pytest.mark.cuda
def test_bench_step_quick_on_cuda(bench_script, tmp_path):
    out = tmp_path / "step.json"
    assert bench_script("bench_step").main(["--quick", "--steps", "1", "--warmup", "1", "--device", "cuda", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["machine"]["gpu"] and [r["name"] for r in report["results"]] == ["fp32", "bf16_channels_last", "teacher_cache"]
    for r in report["results"]:
        assert "error" not in r and r["images_per_s"] > 0 and r["peak_cuda_mem_bytes"] > 0
        assert sum(r["parts_median_s"].values()) > 0


@pytest.mark.parametrize("script", ["bench_losses", "bench_step", "bench_pipeline"])
def test_a_device_that_is_not_there_is_one_clear_error(bench_script, script, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = ["--device", "cuda"] if script != "bench_losses" else ["--device", "cuda", "--n", "8", "--dt", "8"]
    with pytest.raises(SystemExit) as exc:
        module = bench_script(script)
        (module.parse_args if hasattr(module, "parse_args") else module.main)(argv)
    assert exc.value.code == 2
    assert "--device cuda: no CUDA GPU is available" in capsys.readouterr().err


@pytest.mark.parametrize("device", DEVICES)
def test_bench_pipeline_runs_distill_on_real_and_synthetic_batches(bench_script, tmp_path, device, capsys):
    out = tmp_path / "pipeline.json"
    bench = bench_script("bench_pipeline")
    assert bench.main(["--quick", "--steps", "2", "--epochs", "1", "--threads", "1", "--device", device,
                       "--json", str(out)]) == 0  # fmt: skip
    report = json.loads(out.read_text())
    real, synthetic = report["results"]
    assert (real["name"], synthetic["name"]) == ("real", "synthetic")
    for r in (real, synthetic):
        # 2 steps of 20 images in the epoch's own wall time, as metrics.jsonl recorded it
        assert r["images_per_s"] == pytest.approx(2 * 20 / r["epoch_seconds"])
        assert 0 < r["step_seconds_mean"] <= r["epoch_seconds"]
    assert report["ratio_real_to_synthetic"] == pytest.approx(real["images_per_s"] / synthetic["images_per_s"])
    assert "real / synthetic images/s" in capsys.readouterr().out


def test_bench_pipeline_times_the_last_epoch_alone(bench_script, tmp_path):
    """metrics.jsonl records the training seconds of all epochs so far: images/s is the last
    epoch's steps over that epoch's own seconds, not over the warm-up epochs too."""
    out = tmp_path / "pipeline.json"
    bench = bench_script("bench_pipeline")
    assert bench.main(["--quick", "--steps", "2", "--epochs", "2", "--threads", "1", "--json", str(out)]) == 0
    for r in json.loads(out.read_text())["results"]:
        epochs = r["epoch_seconds_all"]
        assert len(epochs) == 2 and min(epochs) > 0
        assert sum(epochs) == pytest.approx(r["train_seconds"], abs=2e-3)
        assert r["epoch_seconds"] == epochs[-1] < r["train_seconds"]
        assert r["images_per_s"] == pytest.approx(2 * 20 / epochs[-1])


def test_synthetic_loader_serves_the_samplers_batches_on_the_device(bench_script):
    bench = bench_script("bench_pipeline")

    class Items:  # one real-looking item: (C, H, W) image and a label
        def __getitem__(self, key):
            return torch.zeros(1, 5, 7), 0

    sampler = [[(0, 1)] * 6, [(1, 2)] * 6, [(2, 3)] * 6]
    loader = bench.SyntheticLoader(Items(), sampler, torch.device("cpu"), batch=6, m_per_class=3)
    batches = list(loader)
    assert len(batches) == len(loader) == loader.count == 3
    images, labels = batches[0]
    assert images.shape == (6, 1, 5, 7) and 0 <= float(images.min()) and float(images.max()) <= 1
    assert labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert all(b[0] is images for b in batches)  # the same in-memory batch: nothing is decoded
