"""Flags generated from the config dataclasses, --config files, typed values, --help."""

import argparse
import dataclasses
import json

import pytest

from rkd_pml.cli import build_parser, main
from rkd_pml.cli_flags import config_for
from rkd_pml.training.config import BaselineConfig, DistillConfig, TeacherConfig


def _subparser(command: str) -> argparse.ArgumentParser:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[command].complete()  # a command's flags are added when it is used


@pytest.mark.parametrize("command, cls", [("distill", DistillConfig), ("train-teacher", TeacherConfig),
                                          ("train-baseline", BaselineConfig)])
def test_every_setting_has_one_flag(command, cls):
    dests = {a.dest for a in _subparser(command)._actions}
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in dests and f.metadata.get("cli", True)]
    assert not missing


def test_job_specific_model_flags():
    assert _subparser("train-teacher")._option_string_actions["--model"].dest == "model"
    assert _subparser("train-baseline")._option_string_actions["--student"].dest == "model"
    assert _subparser("distill")._option_string_actions["--iters"].dest == "iterations_per_epoch"


def test_help_shows_each_default_once(capsys):
    with pytest.raises(SystemExit):
        main(["distill", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert text.count("(default: 0.0001)") == 1  # --lr
    assert "(default: rkd)" in text and "(default: 80)" in text
    assert "(default: the teacher's, else digits)" in text
    assert "default: None" not in text and "(default: (default" not in text


def test_flags_override_a_config_file_and_values_are_typed(tmp_path):
    file = tmp_path / "c.json"
    file.write_text(json.dumps({"teacher": "runs/t", "lr": 0.01, "epochs": 3, "lr_milestones": [2]}))
    args = build_parser().parse_args(["distill", "--config", str(file), "--epochs", "5"])
    cfg = config_for(DistillConfig, args)
    assert (cfg.teacher, cfg.lr, cfg.epochs, cfg.lr_milestones) == ("runs/t", 0.01, 5, (2,))
    assert cfg.loss_options == {} and cfg.to_dict()["loss_options"] == {"angle_weight": 2.0, "distance_weight": 1.0}


@pytest.mark.parametrize("content, match", [
    ({"lr": "fast"}, "lr must be a number"),
    ({"progress": "false"}, "progress must be true or false"),
    ({"epochs": 2.5}, "epochs must be an integer"),
    ({"learning_rate": 1}, "unknown setting 'learning_rate'"),
    ({"loss": "nope"}, "loss must be one of"),
    ([1, 2], "expected an object"),
])
def test_bad_config_file_is_one_clear_error(tmp_path, capsys, content, match):
    file = tmp_path / "c.json"
    file.write_text(json.dumps(content))
    with pytest.raises(SystemExit) as exit_info:
        main(["distill", "--config", str(file), "--out", str(tmp_path / "s")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert match in err and str(file) in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


def test_a_value_out_of_range_in_a_file_names_the_flag(tmp_path, capsys):
    file = tmp_path / "c.json"
    file.write_text(json.dumps({"teacher": "t", "lr": 0}))
    with pytest.raises(SystemExit):
        main(["distill", "--config", str(file)])
    assert "--lr must be a finite number > 0" in capsys.readouterr().err


def test_yaml_config(tmp_path):
    pytest.importorskip("yaml")
    file = tmp_path / "c.yaml"
    file.write_text("teacher: runs/t\nlr: 0.003\nlr_milestones: [4, 6]\n")
    cfg = config_for(DistillConfig, build_parser().parse_args(["distill", "--config", str(file)]))
    assert (cfg.lr, cfg.lr_milestones) == (0.003, (4, 6))


def test_a_flag_value_of_the_wrong_type_names_the_flag(capsys):
    with pytest.raises(SystemExit):
        main(["distill", "--lr", "fast"])
    assert "--lr" in capsys.readouterr().err


def test_the_cli_and_load_dataset_agree_on_the_default_training_transform():
    import inspect

    from rkd_pml.data import DataSettings, load_dataset

    default = DistillConfig().train_transform
    assert inspect.signature(load_dataset).parameters["train_transform"].default == default
    assert DataSettings("digits", 32).train_transform == default == TeacherConfig().train_transform


def test_the_demo_suggests_only_flags_it_has(tmp_path, capsys):
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "notes.txt").write_text("x")
    with pytest.raises(SystemExit):
        main(["demo", "--out", str(tmp_path / "demo"), "--no-progress"])
    err = capsys.readouterr().err
    demo_flags = {a for p in [build_parser()] for a in _subparser("demo")._option_string_actions}
    suggested = {w.strip(",.;:") for w in err.split() if w.startswith("--")}
    assert suggested and suggested <= demo_flags, suggested
