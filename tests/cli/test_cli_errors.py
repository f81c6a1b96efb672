"""Wrong input ends with one line ``rkd-pml: error: ...`` on stderr and exit code 2."""

from pathlib import Path

import pytest

from rkd_pml.cli import build_parser, main
from rkd_pml.training.config import TeacherConfig

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
    line = _error(["train-teacher", "--model", "resnet999", "--out", str(tmp_path / "t"), *SMALL], capsys)
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
    line = _error(["train-teacher", "--model", "resnet10t", "--batch-size", "20", "--m-per-class", "2",
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
    (["--angle-weight", "-1"], "--angle-weight: must be a number from 0.0 to 1000000.0, got -1.0"),
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


@pytest.mark.parametrize("argv, expected", [
    (["--iters", "1000000000"], "--iters: must be an integer <= 10000000, got 1000000000"),  # was a MemoryError
    (["--batch-size", "10000000"], "--batch-size: must be an integer <= 1048576"),  # was refused after 23 s
    (["--image-size", "100000"], "--image-size: must be an integer <= 4096"),  # was a 240 GB allocation
    (["--weight-decay", "1e308"], "--weight-decay: must be a number <= 10.0"),  # was an overflow in Adam
    (["--lr-gamma", "1e308"], "--lr-gamma: must be a number <= 10.0"),
    (["--seed", "-1"], "--seed: must be an integer from 0 to 4294967295, got -1"),
    (["--seed", "100000000000000000000"], "--seed: must be an integer from 0 to 4294967295"),
    (["--eval-batch-size", "100000000000000000000"], "--eval-batch-size: must be an integer <= 1048576"),
    (["--num-workers", "100000"], "--num-workers: must be an integer <="),
    (["--lr-milestones", "1,1000000000000"], "--lr-milestones: must each be an integer <= 10000000"),
    (["--threads", "100000"], "--threads: expected an integer from 1 to"),
])
def test_runaway_flags_are_one_line_before_anything(tmp_path, capsys, argv, expected):
    line = _error(["train-teacher", "--model", "resnet10t", "--out", str(tmp_path / "t"), *SMALL, *argv], capsys)
    assert expected in line
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("text, suffix, expected", [
    ('{"batch_size": 100000000000000000000000}', ".json", "--batch-size must be an integer <= 1048576"),  # looped for ever
    ('{"num_workers": 100000000000000000000000}', ".json", "--num-workers must be an integer <="),  # started processes
    ('{"iterations_per_epoch": 1000000000}', ".json", "--iterations-per-epoch must be an integer <= 10000000"),
    ('{"seed": -3}', ".json", "--seed must be an integer from 0 to 4294967295, got -3"),
    ('{"pretrained": "false"}', ".json", 'pretrained must be true or false, a boolean, not the string "false"'),
    ("lr_gamma: 1.0e+308\n", ".yaml", "--lr-gamma must be a number <= 10.0"),
    ('{"lr": 1e-3, "lr_gamma": 10, "lr_milestones": [1, 2, 3, 4, 5]}', ".json", "--lr-gamma (10.0) raises the learning rate"),
])
def test_bad_values_in_a_config_file_are_one_line_before_anything(tmp_path, capsys, text, suffix, expected):
    if suffix == ".yaml":
        pytest.importorskip("yaml")
    file = tmp_path / f"settings{suffix}"
    file.write_text(text)
    line = _error(["train-teacher", "--model", "resnet10t", "--config", str(file), "--out", str(tmp_path / "t")], capsys)
    assert expected in line
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("suffix, body", [(".yaml", b"epochs: 3 # d\xe9j\xe0 vu\n"), (".json", b'{"root": "caf\xe9"}')])
def test_a_config_file_that_is_not_utf8_is_named(tmp_path, capsys, suffix, body):
    if suffix == ".yaml":
        pytest.importorskip("yaml")
    file = tmp_path / f"latin1{suffix}"
    file.write_bytes(body)  # Latin-1 text: 0xe9 is an e with an acute accent
    line = _error(["train-teacher", "--config", str(file), "--out", str(tmp_path / "t")], capsys)
    assert f"--config {file}: not UTF-8 text (byte {body.index(0xe9)} is 0xe9); save the file as UTF-8" in line
    assert not (tmp_path / "t").exists()


def test_numbers_that_yaml_reads_as_strings_are_numbers(tmp_path):
    pytest.importorskip("yaml")
    from rkd_pml.cli import build_parser
    from rkd_pml.cli_flags import config_for
    from rkd_pml.training.config import TeacherConfig

    file = tmp_path / "c.yaml"
    file.write_text("lr: 1e-3\nweight_decay: 5e-4\nepochs: 3\n")  # PyYAML: '1e-3' and '5e-4' are strings
    cfg = config_for(TeacherConfig, build_parser().parse_args(["train-teacher", "--config", str(file)]))
    assert (cfg.lr, cfg.weight_decay, cfg.epochs) == (0.001, 0.0005, 3)


def test_a_batch_larger_than_the_training_images_is_named(tmp_path, capsys):
    # digits' training split has 901 images; the batch used to be blamed on --m-per-class
    line = _error(["train-teacher", "--model", "resnet10t", "--image-size", "16", "--batch-size", "1000",
                   "--out", str(tmp_path / "t"), "--no-progress"], capsys)
    assert "--batch-size must be at most the 901 training images, got 1000" in line
    assert not (tmp_path / "t").exists()


def test_teacher_cache_values_name_the_flag(tmp_path, capsys):
    file = tmp_path / "c.json"
    file.write_text('{"views": "two"}')
    line = _error(["teacher-cache", "--config", str(file), "--out", str(tmp_path / "c")], capsys)
    assert f'--config {file}: --views must be an integer, got "two"' in line
    assert "--views: must be an integer <= 1024" in _error(["teacher-cache", "--views", "1000000000"], capsys)
    assert not (tmp_path / "c").exists()


def test_train_teacher_takes_the_architecture_as_model(tmp_path, capsys):
    # --teacher is distill's trained teacher run; in train-teacher it is refused with the flag to use
    line = _error(["train-teacher", "--teacher", "resnet10t", "--out", str(tmp_path / "t"), *SMALL], capsys)
    assert "--teacher is not a train-teacher flag: use --model NAME" in line
    assert not (tmp_path / "t").exists()
    from rkd_pml.cli_flags import config_for

    args = build_parser().parse_args(["train-teacher", "--model", "resnet10t"])
    assert config_for(TeacherConfig, args).model == "resnet10t"
