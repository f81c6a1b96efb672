"""What a run records to be resumed safely: the device it used, the teacher it distils (a resume
against a replaced teacher is refused), and a ``--config`` file given with ``--resume`` counts
like flags (a changed setting is refused, a changed runtime setting applies)."""

import json

import pytest
import torch

from rkd_pml.cli import main
from rkd_pml.training import distill, train_teacher

TEACHER = dict(model="resnet10t", embedding_dim=8)


def test_config_records_the_device_used_and_the_one_asked_for(teacher_dir):
    used = f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"
    config = json.loads(open(f"{teacher_dir}/config.json").read())
    assert config["device"] == "auto" and config["device_used"] == used
    results = json.loads(open(f"{teacher_dir}/results.json").read())
    assert results["config"]["device_used"] == used


def test_config_records_an_explicit_device_too(tmp_path, tiny):
    train_teacher(out=str(tmp_path / "t"), device="cpu", **TEACHER, **tiny)
    config = json.loads((tmp_path / "t" / "config.json").read_text())
    assert (config["device"], config["device_used"]) == ("cpu", "cpu")


def test_resume_against_a_replaced_teacher_is_refused(tmp_path, tiny):
    teacher = tmp_path / "teacher"
    train_teacher(out=str(teacher), **TEACHER, **tiny)
    student = dict(teacher=str(teacher), student="resnet10t", embedding_dim=4, **tiny)
    distill(out=str(tmp_path / "s"), **student)
    distill(out=str(tmp_path / "s"), resume=True, **{**student, "epochs": 2})  # the same teacher: continues

    # the teacher retrained in place, at another width
    train_teacher(out=str(teacher), overwrite=True, **{**TEACHER, "embedding_dim": 6}, **tiny)
    with pytest.raises(ValueError, match=f"the teacher {teacher} is not the teacher the run started with") as refused:
        distill(out=str(tmp_path / "s"), resume=True, **{**student, "epochs": 3})
    assert "\n" not in str(refused.value)
    assert json.loads((tmp_path / "s" / "config.json").read_text())["epochs"] == 2  # nothing changed

    # retrained at the same width with another seed: other weights, refused as well
    train_teacher(out=str(teacher), overwrite=True, seed=1, **TEACHER, **tiny)
    with pytest.raises(ValueError, match="is not the teacher the run started with"):
        distill(out=str(tmp_path / "s"), resume=True, **{**student, "epochs": 3})


def _cli_settings(path, **changes):
    settings = {"model": "resnet10t", "embedding_dim": 4, "dataset": "digits", "image_size": 16, "epochs": 1,
                "iterations_per_epoch": 2, "batch_size": 20, "m_per_class": 5, "lr": 1e-3, "lr_milestones": [1],
                "progress": False, **changes}
    path.write_text(json.dumps(settings))
    return str(path)


def test_a_config_file_given_with_resume_counts_like_flags(tmp_path, capsys):
    out, file = str(tmp_path / "t"), tmp_path / "c.json"
    assert main(["train-teacher", "--config", _cli_settings(file), "--out", out]) == 0

    # a setting that cannot change on resume, changed in the file: refused as the flag is
    _cli_settings(file, lr=1e-2, epochs=2)
    with pytest.raises(SystemExit) as exit_:
        main(["train-teacher", "--config", str(file), "--out", out, "--resume"])
    flag_error = capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train-teacher", "--out", out, "--resume", "--lr", "0.01", "--epochs", "2"])
    assert exit_.value.code == 2
    assert "lr: 0.001 -> 0.01" in flag_error and len(flag_error.strip().splitlines()) == 1, flag_error
    assert capsys.readouterr().err == flag_error  # the same one line either way
    assert json.loads(open(f"{out}/config.json").read())["epochs"] == 1

    # a runtime setting (epochs) changed in the file: applied, as the flag is
    _cli_settings(file, epochs=2)
    assert main(["train-teacher", "--config", str(file), "--out", out, "--resume"]) == 0
    assert [json.loads(line)["epoch"] for line in open(f"{out}/metrics.jsonl")] == [1, 2]
    assert json.loads(open(f"{out}/config.json").read())["epochs"] == 2


def test_resume_against_a_rebuilt_teacher_cache_of_another_teacher_is_refused(teacher_dir, tmp_path, tiny):
    cache = tmp_path / "cache"

    def build(teacher, *more):
        assert main(["teacher-cache", "--teacher", str(teacher), "--views", "1", "--train-transform", "none",
                     "--student", "resnet10t", "--out", str(cache), "--no-progress", *more]) == 0

    build(teacher_dir)
    settings = dict(teacher_cache=str(cache), student="resnet10t", embedding_dim=4,
                    **{**tiny, "train_transform": "none"})
    distill(out=str(tmp_path / "s"), **settings)
    other = tmp_path / "other"
    train_teacher(out=str(other), seed=1, **TEACHER, **tiny)
    build(other, "--overwrite")
    with pytest.raises(ValueError, match=f"the teacher cache {cache} is not the teacher the run started with"):
        distill(out=str(tmp_path / "s"), resume=True, **{**settings, "epochs": 2})
