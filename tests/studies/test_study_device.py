"""``--device`` of the studies (``python -m studies.reproduction``, ``studies.classification``,
``studies.fewshot``, ``studies.speed_quality``).

A device that is not on the machine is refused in one line naming ``--device`` before any folder
is created; the device reaches every run's training config and is no part of the recipe.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch



def _load(name: str):
    """The entry module of a study (what ``python -m studies.<package>`` runs)."""
    package = {"reproduce": "reproduction", "classify": "classification"}.get(name, name)
    return importlib.import_module(f"studies.{package}.__main__")


@pytest.fixture(scope="module")
def scripts():
    return {name: _load(name) for name in ("reproduce", "classify", "fewshot", "speed_quality")}


def _argv(name: str, out: Path, device: str) -> list[str]:
    if name == "reproduce":
        return ["--quick", "--dataset", "digits", "--out", str(out), "--device", device]
    if name == "classify":
        return ["--quick", "--out", str(out), "--cache", str(out / "cache"), "--device", device]
    if name == "fewshot":
        return ["--quick", "--out", str(out), "--report-md", str(out / "FEWSHOT.md"), "--device", device]
    return ["--root", str(out / "data.zip"), "--out", str(out), "--device", device]


@pytest.mark.parametrize("name", ["reproduce", "classify", "fewshot", "speed_quality"])
def test_cuda_without_a_gpu_is_refused_in_one_line_before_any_folder(scripts, name, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # this machine has no GPU, as far as it knows
    for device, expected in (("cuda", "--device cuda: no CUDA GPU"), ("cuda:1", "--device cuda:1: no CUDA GPU"),
                             ("gpu", "--device must be cpu, cuda, cuda:N or auto")):
        out = tmp_path / f"{name}-{device.replace(':', '')}"
        with pytest.raises(SystemExit) as info:
            scripts[name].main(_argv(name, out, device))
        message = str(info.value.code)
        assert message.startswith(expected) and "\n" not in message, message
        assert not out.exists()


def test_the_device_reaches_every_runs_training_config_not_the_recipe(scripts, tmp_path):
    reproduce = scripts["reproduce"]
    recipe = reproduce.Recipe(dataset="digits", iterations=4, evals=2, teacher_iterations=4, teacher_evals=2)
    jobs = reproduce.plan_jobs(recipe, (0,), (8,), ("triplet", "rkd-da", "self"), (False,))
    assert {j.group for j in jobs} == {"teacher", "baseline", "distill", "self"}
    for job in jobs:
        assert reproduce.job_config(job, recipe, tmp_path).device == "cpu"  # the default: today's studies
        cfg = reproduce.job_config(job, recipe, tmp_path, device="cuda:1")
        assert cfg.device == "cuda:1", job.key
        assert cfg.out == str(tmp_path / "runs" / job.key)
    assert "device" not in recipe.to_dict()  # a study may continue on another device

    parser = reproduce.build_parser()
    assert parser.parse_args([]).device == "cpu"
    assert parser.parse_args(["--device", "cuda:0"]).device == "cuda:0"


def test_threads_per_worker_default_by_device():
    from studies.device import check_device, default_threads

    cores = __import__("os").cpu_count() or 1
    assert default_threads("cpu", 4) == 1  # CPU runs share the cores, one thread each
    assert default_threads("cuda:0", 1) == max(1, min(4, cores))
    assert default_threads("cuda", 64) == max(1, min(4, cores // 64))
    assert check_device("cpu") == "cpu"
    assert check_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


def test_the_report_says_where_the_runs_trained():
    from studies.device import device_counts

    records = [{"key": "a", "device": "cuda:0", "earlier_device": "cpu"}, {"key": "b", "device": "cuda:0"},
               {"key": "c", "device": "cpu"}, {"key": "d"}]  # "d": recorded before --device, on the CPU
    assert device_counts(records) == "cpu (2 runs), cuda:0 (2 runs, 1 continued from a checkpoint made on cpu)"
    assert device_counts([]) == ""
