"""The run directory rules: never overwrite unless asked, never delete a foreign directory."""

import pytest

from rkd_pml.training.run_dir import RunDir


def test_new_and_empty_directories_are_used(tmp_path):
    run = RunDir.create(tmp_path / "a" / "b")
    assert run.path.is_dir()
    (tmp_path / "empty").mkdir()
    RunDir.create(tmp_path / "empty")


def test_existing_run_needs_overwrite_or_resume(tmp_path):
    run = RunDir.create(tmp_path / "run")
    run.write_config({"job": "distill"})
    run.append_metrics({"epoch": 1})
    with pytest.raises(FileExistsError, match="--overwrite.*--resume"):
        RunDir.create(tmp_path / "run")
    assert run.read_metrics() == [{"epoch": 1}]
    assert RunDir.create(tmp_path / "run", resume=True).read_metrics() == [{"epoch": 1}]
    RunDir.create(tmp_path / "run", overwrite=True)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_a_foreign_directory_is_never_deleted(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not an rkd-pml run directory"):
        RunDir.create(tmp_path / "data", overwrite=True)
    assert (tmp_path / "data" / "precious.txt").read_text() == "keep me"
    with pytest.raises(FileNotFoundError, match="cannot resume"):
        RunDir.create(tmp_path / "data", resume=True)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        RunDir.create(tmp_path / "nothing", resume=True)


def test_metrics_survive_a_cut_last_line(tmp_path):
    run = RunDir.create(tmp_path / "run")
    run.append_metrics({"epoch": 1, "loss": 0.5})
    with open(run.metrics_path, "a") as f:
        f.write('{"epoch": 2, "lo')
    assert run.read_metrics() == [{"epoch": 1, "loss": 0.5}]
