"""What ``export_timm`` may write or replace: only its own marked folders (or empty ones),
never a user's files, a run, a locked folder, an input or the current directory; the folder
and files it writes follow the umask; a full disk is one error naming the folder, with
nothing left behind.

Every refusal is tested with a user's file in the way, which must still be there afterwards.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path

import pytest

import rkd_pml.files.atomic as atomic
from rkd_pml import EmbeddingModel
from rkd_pml.cli import main
from rkd_pml.models.export import export_timm
from rkd_pml.runs.lock import RunLock

NOTE = "my notes, not rkd-pml's"
EXPORT_NAMES = [".rkd-pml-export", "config.json", "model.safetensors"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("source") / "model"
    EmbeddingModel("test_resnet", embedding_dim=8).save(folder)
    return folder


def _tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (relative name -> sha256)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_folder_without_the_export_marker_is_never_replaced(model_dir, tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text(NOTE)
    with pytest.raises(FileExistsError, match="overwrite"):
        export_timm(model_dir, notes)
    with pytest.raises(FileExistsError, match="no .rkd-pml-export marker"):
        export_timm(model_dir, notes, overwrite=True)
    # even one that looks like an export (timm's two files) but was not written by rkd-pml
    (notes / "config.json").write_text("{}")
    with pytest.raises(FileExistsError, match="marker"):
        export_timm(model_dir, notes, overwrite=True)
    assert (notes / "todo.txt").read_text() == NOTE
    assert _hidden(tmp_path) == []  # no temporary folder was created


def test_a_users_file_in_an_export_folder_stops_the_replacement_named(model_dir, tmp_path):
    out = tmp_path / "export"
    export_timm(model_dir, out)
    before = _tree(out)
    (out / "sub").mkdir()
    (out / "sub" / "mine.txt").write_text(NOTE)
    with pytest.raises(FileExistsError, match=r"folder .*sub was not written by rkd-pml export"):
        export_timm(model_dir, out, overwrite=True)
    os.rename(out / "sub" / "mine.txt", tmp_path / "mine.txt")
    os.rmdir(out / "sub")
    os.symlink(tmp_path / "mine.txt", out / "README.md")  # a link the export did not write
    with pytest.raises(FileExistsError, match="README.md"):
        export_timm(model_dir, out, overwrite=True)
    assert (tmp_path / "mine.txt").read_text() == NOTE
    os.unlink(out / "README.md")
    assert _tree(out) == before
    export_timm(model_dir, out, overwrite=True)  # a clean export folder is replaced
    assert sorted(p.name for p in out.iterdir()) == EXPORT_NAMES
    assert _hidden(tmp_path) == []  # neither the temporary nor the previous folder is left


@pytest.mark.parametrize("kind", ["marker", "legacy", "marker-and-export-marker"])
def test_a_run_directory_is_never_replaced(model_dir, tmp_path, kind):
    run = tmp_path / "run"
    run.mkdir()
    if kind != "legacy":
        (run / ".rkd-pml-run").write_text("")
    if kind == "marker-and-export-marker":
        (run / ".rkd-pml-export").write_text("")
    (run / "config.json").write_text(json.dumps({"job": "train-teacher", "epochs": 40}))
    (run / "metrics.jsonl").write_text('{"epoch": 1}\n')
    before = _tree(run)
    with pytest.raises(FileExistsError, match="run directory"):
        export_timm(model_dir, run, overwrite=True)
    assert _tree(run) == before


def test_a_locked_folder_is_never_replaced(model_dir, tmp_path):
    starting = tmp_path / "starting"  # a job that locked its empty folder and writes into it
    starting.mkdir()
    out = tmp_path / "export"
    export_timm(model_dir, out)
    locks = [RunLock.acquire(starting), RunLock.acquire(out)]
    (starting / "partial.bin").write_bytes(b"being written")
    try:
        for folder in (starting, out):
            before = _tree(folder)
            with pytest.raises(OSError, match=f"in use by process {os.getpid()}"):
                export_timm(model_dir, folder, overwrite=True)
            assert _tree(folder) == before
    finally:
        for lock in locks:
            lock.release()
    export_timm(model_dir, out, overwrite=True)  # the lock file left behind is not in use
    assert not (out / ".rkd-pml-lock").exists()


def test_an_empty_folder_is_written_without_overwrite(model_dir, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    export_timm(model_dir, out)
    assert sorted(p.name for p in out.iterdir()) == EXPORT_NAMES


def test_never_the_current_directory_a_parent_of_it_or_of_an_input(model_dir, tmp_path, monkeypatch):
    work = tmp_path / "work"
    (work / "inner").mkdir(parents=True)
    (work / "inner" / "notes.txt").write_text(NOTE)
    monkeypatch.chdir(work / "inner")
    for out in (".", "..", str(work / "inner"), ""):
        with pytest.raises(ValueError, match="current directory|empty"):
            export_timm(model_dir, out, overwrite=True)
    assert (work / "inner" / "notes.txt").read_text() == NOTE
    run = tmp_path / "run"
    EmbeddingModel("test_resnet", embedding_dim=8).save(run / "model")
    (run / "notes.txt").write_text(NOTE)
    for out in (run, run / "model", tmp_path):  # the input given, the model in it, a folder above
        with pytest.raises(ValueError, match="source"):
            export_timm(run, out, overwrite=True)
    assert (run / "notes.txt").read_text() == NOTE and (run / "model" / "config.json").is_file()


def test_bad_out_values_are_one_line_before_any_folder_is_created(model_dir, tmp_path, capsys):
    (tmp_path / "file.txt").write_text(NOTE)
    cases = {
        str(tmp_path / "file.txt"): "not a directory",
        str(tmp_path / "file.txt" / "export"): "not a directory",
        "": "empty",
    }
    for out, reason in cases.items():
        with pytest.raises(SystemExit) as exit_info:
            main(["export", str(model_dir), "--out", out])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert reason in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]
    assert (tmp_path / "file.txt").read_text() == NOTE


@pytest.mark.parametrize("umask, folder_mode, file_mode", [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_folder_and_files_follow_the_umask(model_dir, tmp_path, umask, folder_mode, file_mode):
    previous = os.umask(umask)
    try:
        out = export_timm(model_dir, tmp_path / "export")
    finally:
        os.umask(previous)
    assert out.stat().st_mode & 0o777 == folder_mode
    assert {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()} == {n: file_mode for n in EXPORT_NAMES}


class _FullDisk:
    """A file object that fails like a full disk once more than 1000 bytes were written."""

    def __init__(self, file):
        self._file, self._written = file, 0

    def write(self, data):
        self._written += len(data)
        if self._written > 1000:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self._file.write(data)

    def __getattr__(self, name):
        return getattr(self._file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._file.__exit__(*exc)


def test_a_full_disk_is_one_line_naming_the_folder_and_leaves_nothing(model_dir, tmp_path, monkeypatch, capsys):
    real_fdopen = atomic._fdopen
    out = tmp_path / "export"
    monkeypatch.setattr(atomic, "_fdopen", lambda *a, **k: _FullDisk(real_fdopen(*a, **k)))
    with pytest.raises(OSError, match="no space left on device") as error:
        export_timm(model_dir, out)
    assert error.value.errno == errno.ENOSPC and str(out) in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no temporary folder, no export
    with pytest.raises(SystemExit):
        main(["export", str(model_dir), "--out", str(out)])
    err = capsys.readouterr().err
    assert f"cannot write the export {out}: no space left on device" in err and err.count("\n") == 1, err
    monkeypatch.undo()
    export_timm(model_dir, out)  # the rerun needs no --overwrite
    before = _tree(out)
    monkeypatch.setattr(atomic, "_fdopen", lambda *a, **k: _FullDisk(real_fdopen(*a, **k)))
    with pytest.raises(OSError, match="no space left on device"):
        export_timm(model_dir, out, overwrite=True)
    assert _tree(out) == before and _hidden(tmp_path) == []  # the previous export is intact
