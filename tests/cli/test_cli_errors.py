"""Wrong input ends with one line ``rkd-pml: error: ...`` on stderr and exit code 2."""

from pathlib import Path

import pytest

from rkd_pml.cli import main

SMALL = ["--image-size", "16", "--epochs", "1", "--iters", "1", "--batch-size", "20", "--m-per-class", "5",
         "--no-progress"]


def _error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("rkd-pml: error: ")
    assert "Traceback" not in captured.err
    return lines[0]


def test_unknown_model(tmp_path, capsys):
    line = _error(["train-teacher", "--teacher", "resnet999", "--out", str(tmp_path / "t"), *SMALL], capsys)
    assert "unknown timm model 'resnet999'" in line
    assert not (tmp_path / "t").exists()


def test_missing_root_and_wrong_layout(tmp_path, capsys):
    line = _error(["train-teacher", "--dataset", "omniglot", "--root", str(tmp_path / "nope"), *SMALL], capsys)
    assert "not found" in line and "layout" in line
    line = _error(["train-teacher", "--dataset", "omniglot", *SMALL], capsys)
    assert "root" in line
    (tmp_path / "cub").mkdir()
    line = _error(["train-teacher", "--dataset", "cub200", "--root", str(tmp_path / "cub"), *SMALL], capsys)
    assert "CUB_200_2011" in line


def test_bad_options(capsys):
    assert "unrecognized arguments: --bogus" in _error(["distill", "--bogus"], capsys)
    assert "--epochs" in _error(["distill", "--epochs", "0"], capsys)
    assert "--lr" in _error(["distill", "--lr", "fast"], capsys)
    assert "invalid choice" in _error(["distill", "--loss", "kl"], capsys)
    assert "required" in _error([], capsys)


def test_batch_that_classes_cannot_fill(capsys):
    line = _error(["train-teacher", "--teacher", "resnet10t", "--batch-size", "20", "--m-per-class", "2",
                   "--image-size", "16"], capsys)
    assert "--m-per-class 4" in line


def test_distill_without_or_with_a_wrong_teacher(tmp_path, capsys):
    assert "--teacher" in _error(["distill", *SMALL], capsys)
    assert "does not exist" in _error(["distill", "--teacher", str(tmp_path / "none"), *SMALL], capsys)
    (tmp_path / "empty").mkdir()
    assert "not a saved model" in _error(["distill", "--teacher", str(tmp_path / "empty"), *SMALL], capsys)


def test_resume_and_overwrite_rules(tmp_path, capsys, teacher_dir):
    line = _error(["distill", "--out", str(tmp_path / "none"), "--resume"], capsys)
    assert "nothing to resume" in line
    # the teacher is an input of the run: never its output, with or without --overwrite
    for extra in ([], ["--overwrite"]):
        line = _error(["distill", "--teacher", teacher_dir, "--student", "resnet10t", "--out", teacher_dir, *SMALL, *extra], capsys)
        assert "an input of this run" in line
    assert (Path(teacher_dir) / "model" / "model.safetensors").is_file()
    line = _error(["distill", "--out", teacher_dir, "--resume"], capsys)
    assert "'train-teacher' run" in line
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    line = _error(["distill", "--teacher", teacher_dir, "--student", "resnet10t", "--out", str(tmp_path / "mine"),
                   "--overwrite", *SMALL], capsys)
    assert "refusing to overwrite" in line
    assert (tmp_path / "mine" / "notes.txt").exists()


def test_evaluate_errors(tmp_path, capsys):
    assert "does not exist" in _error(["evaluate", str(tmp_path / "none")], capsys)
    assert "invalid choice" in _error(["evaluate", str(tmp_path), "--split", "val"], capsys)


@pytest.mark.parametrize("argv, expected", [
    (["--recall-ks", "2,4"], "--recall-ks must include 1"),
    (["--device", "cuda:abc"], "--device must be cpu, cuda, cuda:N, mps or auto"),
    (["--device", "tpu"], "--device must be"),
    (["--lr-gamma", "0"], "--lr-gamma must be a finite number > 0"),
    (["--lr", "nan"], "--lr must be a finite number"),
    (["--angle-weight", "-1"], "--angle-weight must be a finite number >= 0"),
    (["--batch-size", "1", "--m-per-class", "1"], "--batch-size must be at least 2"),
])
def test_settings_are_checked_before_the_run_and_name_the_flag(tmp_path, capsys, teacher_dir, argv, expected):
    line = _error(["distill", "--teacher", teacher_dir, "--student", "resnet10t", "--out", str(tmp_path / "s"),
                   *SMALL, *argv], capsys)
    assert expected in line
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("change, expected", [
    ({"embedding_dim": "8"}, "embedding_dim must be of type int"),
    ({"l2_normalize": "false"}, "l2_normalize must be of type bool"),
    ({"in_chans": 2}, "in_chans 1 or 3"),
    ({"data_config": None}, "data_config must be of type dict"),
])
def test_malformed_saved_model_config_is_one_line(tmp_path, capsys, teacher_dir, change, expected):
    import json
    import shutil

    model = tmp_path / "model"
    shutil.copytree(Path(teacher_dir) / "model", model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, **change}))
    line = _error(["evaluate", str(model), "--no-progress"], capsys)
    assert expected in line and "config.json" in line
