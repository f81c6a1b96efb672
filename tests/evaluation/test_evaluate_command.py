"""``rkd-pml evaluate`` on a folder of runs, with ``--json -`` and with another data set.

The reference for a model's figures is what its run recorded when it was trained
(``results.json``: the test Recall@1 of its best epoch, evaluated by the training loop)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rkd_pml.cli import main


def _recorded_recall(run: Path) -> float:
    return json.loads((run / "results.json").read_text())["best"]["test"]["recall@1"]


def _edit_training_data(run: Path, **changes) -> None:
    """Pretend the model of ``run`` was trained with other data settings."""
    file = run / "model" / "config.json"
    config = json.loads(file.read_text())
    config["training_data"].update(changes)
    file.write_text(json.dumps(config))


@pytest.fixture
def runs(teacher_dir, tmp_path) -> Path:
    """A folder of runs: a broken one first (corrupt weights), a good one, an unfinished one."""
    folder = tmp_path / "runs"
    for name in ("a-broken", "b-good", "c-unfinished"):
        shutil.copytree(teacher_dir, folder / name)
    (folder / "a-broken" / "model" / "model.safetensors").write_bytes(b"not safetensors")
    shutil.rmtree(folder / "c-unfinished" / "model")
    (folder / "notes").mkdir()  # not a run: not mentioned
    return folder


def test_folder_evaluates_every_good_run_then_names_the_others(runs, capsys):
    assert main(["evaluate", str(runs), "--no-progress"]) == 1  # one could not be evaluated
    out, err = capsys.readouterr()
    assert "== b-good" in out and "== a-broken" not in out
    recall = float(next(line for line in out.splitlines() if line.startswith("recall@1 ")).split()[1])
    assert recall == pytest.approx(100 * _recorded_recall(runs / "b-good"), abs=0.006)
    problems = [line for line in err.splitlines() if line.startswith("rkd-pml: ")]
    assert len(problems) == 2
    assert str(runs / "a-broken") in problems[0] and "could not be evaluated" in problems[0]
    assert "not a valid safetensors file" in problems[0]
    assert str(runs / "c-unfinished") in problems[1] and "skipped" in problems[1] and "model/" in problems[1]
    assert "notes" not in err


def test_folder_with_only_skipped_runs_exits_zero_and_says_so(runs, capsys):
    shutil.rmtree(runs / "a-broken")
    assert main(["evaluate", str(runs), "--no-progress", "--json", "-"]) == 0
    out, err = capsys.readouterr()
    assert list(json.loads(out)) == ["b-good"]  # stdout: the JSON and nothing else
    assert "c-unfinished" in err and "skipped" in err


def test_json_to_stdout_is_pure_json(teacher_dir, capsys):
    assert main(["evaluate", teacher_dir, "--no-progress", "--json", "-"]) == 0
    out, err = capsys.readouterr()
    metrics = json.loads(out)  # a line before the JSON used to make this fail
    assert metrics["recall@1"] == pytest.approx(_recorded_recall(Path(teacher_dir)))
    assert "evaluating" in err  # what was evaluated is still said, on stderr


def test_another_data_set_does_not_inherit_the_recorded_roots(teacher_dir, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(teacher_dir, run)
    # as if trained on folder data: its roots are the folder data's, not digits'
    _edit_training_data(run, dataset="folder", root=str(tmp_path / "imgs"), test_root=str(tmp_path / "test"))
    assert main(["evaluate", str(run), "--dataset", "digits", "--no-progress", "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["recall@1"] == pytest.approx(_recorded_recall(Path(teacher_dir)))
    # as if trained on Omniglot: --dataset folder must not read the Omniglot archive as its root
    _edit_training_data(run, dataset="omniglot", root=str(tmp_path / "omniglot.zip"), test_root=None)
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", str(run), "--dataset", "folder", "--no-progress"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "omniglot.zip" not in err and "root" in err


def test_help_speaks_of_the_evaluated_model(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = capsys.readouterr().out
    assert "teacher" not in text and "train settings" not in text and "resume" not in text
    assert "--dataset" in text and "the model" in text
