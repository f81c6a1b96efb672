"""The run directory rules: never overwrite unless asked, never delete a foreign directory."""

import os
import shutil
from pathlib import Path

import pytest

from rkd_pml.training.checkpoint import load_checkpoint, save_checkpoint
from rkd_pml.runs import RunDir


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


# --------------------------------------------------------------------------- what --overwrite may remove


def _run(path: Path, **files: str) -> RunDir:
    """A finished-looking run at ``path``, unlocked."""
    run = RunDir.create(path)
    run.write_config({"job": "train-teacher", "epochs": 1})
    run.append_metrics({"epoch": 1})
    run.write_results({"best_epoch": 1})
    save_checkpoint(run.last_checkpoint, {"step": 1})
    save_checkpoint(run.best_checkpoint, {"step": 1})
    (run.model_dir).mkdir()
    (run.model_dir / "config.json").write_text("{}")
    (run.model_dir / "model.safetensors").write_bytes(b"w")
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    run.close()
    return run


def test_overwrite_removes_the_files_of_a_run_only(tmp_path):
    run = _run(tmp_path / "run")
    (run.checkpoint_dir / ".last.pt.tmp-0123abcd").write_bytes(b"orphan")
    with RunDir.create(run.path, overwrite=True):
        assert sorted(os.listdir(run.path)) == [RunDir.LOCK, RunDir.MARKER]


@pytest.mark.parametrize(
    "stray, named",
    [("notes.txt", "file .*run/notes.txt"), ("checkpoints/epoch10.pt", "file .*run/checkpoints/epoch10.pt"),
     ("model/README.md", "file .*run/model/README.md"), ("data/x.png", "folder .*run/data")],
)
def test_overwrite_refuses_a_run_holding_anything_else_naming_it(tmp_path, stray, named):
    run = _run(tmp_path / "run", **{stray: "mine"})
    with pytest.raises(FileExistsError, match=f"refusing to overwrite .*: the {named} is not part of an rkd-pml run"):
        RunDir.create(run.path, overwrite=True)
    assert (run.path / stray).read_text() == "mine"
    assert run.last_checkpoint.is_file() and run.config_path.is_file()  # nothing removed


def test_a_saved_model_or_a_project_folder_is_never_overwritten(tmp_path):
    from rkd_pml.models import EmbeddingModel

    model = EmbeddingModel("resnet10t", 4, data_config={"input_size": (3, 16, 16)})
    saved = model.save(tmp_path / "model")
    with pytest.raises(FileExistsError, match="saved model"):
        RunDir.create(saved, overwrite=True)
    with pytest.raises(FileNotFoundError, match="cannot resume"):
        RunDir.create(saved, resume=True)
    assert sorted(os.listdir(saved)) == ["config.json", "model.safetensors"]  # no lock file either
    project = tmp_path / "project"
    project.mkdir()
    (project / "config.json").write_text('{"name": "my project"}')
    with pytest.raises(FileExistsError, match="not an rkd-pml run directory"):
        RunDir.create(project, overwrite=True)
    assert os.listdir(project) == ["config.json"]


def test_a_run_written_before_the_marker_is_still_a_run(tmp_path):
    run = _run(tmp_path / "old")
    (run.path / RunDir.MARKER).unlink()
    assert not (run.path / RunDir.LOCK).exists()  # a clean release removes the lock file
    with RunDir.create(run.path, resume=True):
        assert (run.path / RunDir.MARKER).is_file()  # marked from now on
    (run.path / RunDir.MARKER).unlink()
    RunDir.create(run.path, overwrite=True).close()
    assert not run.config_path.exists()


def test_overwrite_replaces_nested_runs_of_a_demo(tmp_path):
    demo = RunDir.create(tmp_path / "demo")
    demo.write_config({"job": "demo"})
    demo.close()
    _run(demo.path / "teacher")
    _run(demo.path / "rkd")
    with RunDir.create(demo.path, overwrite=True):
        assert sorted(os.listdir(demo.path)) == [RunDir.LOCK, RunDir.MARKER]
    _run(demo.path / "teacher", **{"mine.txt": "x"})
    with pytest.raises(FileExistsError, match="teacher/mine.txt"):
        RunDir.create(demo.path, overwrite=True)


def test_overwrite_removes_links_not_what_they_point_to(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "last.pt").write_text("precious")
    run = _run(tmp_path / "run")
    shutil.rmtree(run.checkpoint_dir)
    run.checkpoint_dir.symlink_to(elsewhere)
    RunDir.create(run.path, overwrite=True).close()
    assert not run.checkpoint_dir.exists() and (elsewhere / "last.pt").read_text() == "precious"


# --------------------------------------------------------------------------- the inputs of a run


@pytest.mark.parametrize("options", [{}, {"overwrite": True}, {"resume": True}])
def test_the_output_may_not_be_an_input(tmp_path, options):
    teacher = _run(tmp_path / "runs" / "t").path
    (tmp_path / "link").symlink_to(teacher)
    for out, relation in [(teacher, "is"), (tmp_path / "link", "is"), (teacher / "student", "lies inside"),
                          (tmp_path / "runs", "contains"), (tmp_path / "runs" / "." / "t", "is")]:
        with pytest.raises(ValueError, match=f"{relation} .*an input of this run"):
            RunDir.create(out, inputs=[teacher], **options)
    assert RunDir(teacher).read_metrics() == [{"epoch": 1}] and (teacher / "model").is_dir()
    assert not (teacher / "student").exists()
    RunDir.create(tmp_path / "runs" / "s", inputs=[teacher, None, "resnet18"]).close()  # a sibling is fine


# --------------------------------------------------------------------------- resuming


def test_resume_removes_orphaned_temporary_files_only(tmp_path):
    run = _run(tmp_path / "run")
    orphans = [run.checkpoint_dir / ".last.pt.tmp-0123abcd", run.path / ".metrics.jsonl.tmp-89abcdef",
               run.model_dir / ".model.safetensors.tmp-00ff00ff", run.checkpoint_dir / ".last.pt.k2_x9abc.tmp"]
    kept = [run.checkpoint_dir / ".last.pt.tmp-notes", run.checkpoint_dir / "last.pt.tmp-0123abcd",
            run.path / ".mine.k2_x9abc.tmp"]
    for path in orphans + kept:
        path.write_bytes(b"x" * 100)
    with RunDir.create(run.path, resume=True):
        assert not [p for p in orphans if p.exists()]
        assert all(p.exists() for p in kept)
        assert load_checkpoint(run.last_checkpoint)["step"] == 1


def test_resume_needs_a_started_run(tmp_path):
    RunDir.create(tmp_path / "new").close()
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        RunDir.create(tmp_path / "new", resume=True)


@pytest.mark.parametrize(
    "text, message",
    [("{not json", r"config.json is not valid JSON \(line 1, column 2"), ('["a"]', "expected a JSON object"),
     ("", "not valid JSON"), ("\xff", "not valid JSON")],
)
def test_a_malformed_config_is_one_line_naming_the_file(tmp_path, text, message):
    run = _run(tmp_path / "run")
    run.config_path.write_bytes(text.encode("latin-1"))
    with RunDir.create(run.path, resume=True) as again:
        with pytest.raises(ValueError, match=message) as info:
            again.read_config()
    assert str(run.config_path) in str(info.value) and "\n" not in str(info.value)


def test_damaged_metrics_name_the_file_and_line(tmp_path):
    run = _run(tmp_path / "run")
    run.metrics_path.write_text('{"epoch": 1}\n{"ep\n{"epoch": 3}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl, line 2"):
        run.read_metrics()


def test_keep_metrics_and_appends_after_a_crash(tmp_path):
    run = RunDir.create(tmp_path / "run")
    run.append_metrics({"epoch": 1, "loss": float("nan")})
    with open(run.metrics_path, "a") as f:
        f.write('{"epoch": 2, "lo')
    run.append_metrics({"epoch": 2})
    assert run.read_metrics() == [{"epoch": 1, "loss": None}, {"epoch": 2}]
    run.keep_metrics(run.read_metrics()[:1])
    assert run.metrics_path.read_text() == '{"epoch": 1, "loss": null}\n'
    run.close()


# --------------------------------------------------------------------------- several processes


def test_only_rank_zero_prepares_and_every_rank_shares_its_refusal(tmp_path, monkeypatch):
    import rkd_pml.runs.folder as run_dir

    sent = []
    monkeypatch.setattr(run_dir, "_broadcast", lambda obj: sent.append(obj) or obj)
    _run(tmp_path / "run")
    with pytest.raises(FileExistsError, match="--overwrite"):
        RunDir.create(tmp_path / "run")  # rank 0 (a single process)
    assert isinstance(sent[-1], FileExistsError)

    monkeypatch.setattr(run_dir, "is_main_process", lambda: False)  # another rank
    monkeypatch.setattr(run_dir, "_broadcast", lambda obj: sent[-1])
    with pytest.raises(FileExistsError, match="--overwrite"):
        RunDir.create(tmp_path / "run")
    monkeypatch.setattr(run_dir, "_broadcast", lambda obj: None)
    other = RunDir.create(tmp_path / "new", overwrite=True)
    assert not other.locked and not (tmp_path / "new").exists()  # rank 0 alone creates and locks
    other.close()
