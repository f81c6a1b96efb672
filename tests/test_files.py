"""The package's file helpers: atomic writes, permissions, write errors, JSON Lines, one-line errors."""

import errno
import json
import os
import pickle
import stat

import pytest

from rkd_pml import files
from rkd_pml.files import (
    WriteError,
    append_jsonl,
    atomic_write,
    atomic_write_path,
    is_temporary,
    one_line,
    read_json_object,
    read_jsonl,
    remove_orphaned_temporaries,
    to_json,
)


@pytest.fixture
def umask():
    """Set a umask for one test, restoring the previous one after it."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_new_files_get_the_permissions_open_would_give(tmp_path, umask, mask):
    umask(mask)
    atomic_write(tmp_path / "a.txt", "text")
    atomic_write(tmp_path / "b.bin", b"bytes")
    atomic_write(tmp_path / "c.bin", lambda f: f.write(b"callback"))
    atomic_write_path(tmp_path / "d.bin", lambda name: open(name, "wb").write(b"by name"))
    with open(tmp_path / "reference", "w"):
        pass
    expected = _mode(tmp_path / "reference")
    assert expected == 0o666 & ~mask
    for name in ("a.txt", "b.bin", "c.bin", "d.bin"):
        assert _mode(tmp_path / name) == expected, name
    assert (tmp_path / "a.txt").read_text() == "text"
    assert (tmp_path / "d.bin").read_bytes() == b"by name"


def test_text_callback_and_missing_parent(tmp_path):
    atomic_write(tmp_path / "new" / "dir" / "t.txt", lambda f: f.write("é\n"), mode="w")
    assert (tmp_path / "new" / "dir" / "t.txt").read_text(encoding="utf-8") == "é\n"


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "f.bin"
    atomic_write(target, b"old")

    def crash(f):
        f.write(b"partial")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="killed"):
        atomic_write(target, crash)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.bin"]


class _FullDisk:
    """A file object that fails with ``code`` after ``room`` bytes, as a full disk does."""

    def __init__(self, f, code, room=10):
        self.f, self.code, self.room = f, code, room

    def write(self, data):
        if len(data) > self.room:
            raise OSError(self.code, os.strerror(self.code))
        self.room -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


@pytest.fixture
def full_disk(monkeypatch):
    def install(code=errno.ENOSPC):
        monkeypatch.setattr(files.atomic, "_fdopen", lambda fd, mode, **kw: _FullDisk(os.fdopen(fd, mode, **kw), code))
    return install


@pytest.mark.parametrize(
    "code, reason",
    [(errno.ENOSPC, "no space left on device; free some space"), (errno.EDQUOT, "disk quota exceeded"),
     (errno.EIO, "input/output error")],
)
def test_a_full_disk_is_one_error_naming_the_file(tmp_path, full_disk, code, reason):
    target = tmp_path / "results.json"
    atomic_write(target, "old\n")
    full_disk(code)
    with pytest.raises(WriteError) as info:
        atomic_write(target, "x" * 1000)
    assert str(info.value).startswith(f"cannot write {target}: {reason}")
    assert "\n" not in str(info.value)
    assert info.value.errno == code and info.value.filename == str(target)
    assert isinstance(info.value, OSError)
    assert target.read_text() == "old\n" and os.listdir(tmp_path) == ["results.json"]
    again = pickle.loads(pickle.dumps(info.value))  # travels between processes unchanged
    assert str(again) == str(info.value) and again.errno == code


def test_a_failing_fsync_is_a_write_error_too(tmp_path, monkeypatch):
    def no_room(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_room)
    with pytest.raises(WriteError, match="cannot write .*x.txt: no space left on device"):
        atomic_write(tmp_path / "x.txt", "data")
    assert os.listdir(tmp_path) == []


def test_temporary_names_are_recognisable(tmp_path):
    name = files.temp_name(tmp_path / "last.pt").name
    assert name.startswith(".last.pt.tmp-") and is_temporary(name)
    assert not is_temporary("last.pt.tmp-0123abcd")  # no leading dot: a user's file
    assert not is_temporary(".last.pt.tmp-notes")
    assert is_temporary(".last.pt.ab_12xyz.tmp", legacy_targets=["last.pt"])
    assert not is_temporary(".mine.ab_12xyz.tmp", legacy_targets=["last.pt"])


def test_orphaned_temporaries_are_removed_and_nothing_else(tmp_path):
    for name in (".last.pt.tmp-0123abcd", ".config.json.a1b2c3d4.tmp", ".last.pt.tmp-notes",
                 "last.pt.tmp-0123abcd", "keep.txt", ".mine.a1b2c3d4.tmp"):
        (tmp_path / name).write_text("x")
    (tmp_path / ".dir.tmp-0123abcd").mkdir()  # a folder is never a temporary file
    removed = remove_orphaned_temporaries(tmp_path, legacy_targets=["config.json"])
    assert sorted(p.name for p in removed) == [".config.json.a1b2c3d4.tmp", ".last.pt.tmp-0123abcd"]
    assert sorted(os.listdir(tmp_path)) == [
        ".dir.tmp-0123abcd", ".last.pt.tmp-notes", ".mine.a1b2c3d4.tmp", "keep.txt", "last.pt.tmp-0123abcd"
    ]
    assert remove_orphaned_temporaries(tmp_path / "missing") == []


def test_jsonl_tolerates_a_cut_last_line_only(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"epoch": 1}\n\n{"epoch": 2}\n{"epoch": 3, "lo')
    assert read_jsonl(path) == [{"epoch": 1}, {"epoch": 2}]
    path.write_text('{"epoch": 1}\n{"epoch": 2, "lo\n{"epoch": 3}\n')
    with pytest.raises(ValueError, match=r"m.jsonl, line 2: not a JSON record"):
        read_jsonl(path)
    path.write_text('{"epoch": 1}\n[1, 2]\n{"epoch": 3}\n')
    with pytest.raises(ValueError, match=r"m.jsonl, line 2: expected a JSON object, got a JSON array"):
        read_jsonl(path)
    path.write_text('{"epoch": 1}\n{"epoch": 2, "lo\n')  # a complete line that is damaged
    with pytest.raises(ValueError, match="line 2"):
        read_jsonl(path)
    path.write_bytes(b'{"epoch": 1}\n\xff\xfe\n{"epoch": 3}\n')
    with pytest.raises(ValueError, match="line 2"):
        read_jsonl(path)


def test_append_after_a_cut_line_starts_a_line_of_its_own(tmp_path):
    path = tmp_path / "m.jsonl"
    append_jsonl(path, {"epoch": 1, "loss": float("nan")})
    with open(path, "a") as f:
        f.write('{"epoch": 2, "lo')
    append_jsonl(path, {"epoch": 2})
    assert path.read_text() == '{"epoch": 1, "loss": null}\n{"epoch": 2}\n'
    path.write_text('{"cut')  # no complete line at all
    append_jsonl(path, {"epoch": 1})
    assert read_jsonl(path) == [{"epoch": 1}]


def test_append_on_a_full_disk_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    path = tmp_path / "m.jsonl"
    append_jsonl(path, {"epoch": 1})
    before = path.read_bytes()

    def no_room(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_room)
    with pytest.raises(WriteError, match=r"cannot write .*m.jsonl: no space left on device"):
        append_jsonl(path, {"epoch": 2})
    assert path.read_bytes() == before


def test_read_json_object_errors_name_the_file(tmp_path):
    path = tmp_path / "config.json"
    with pytest.raises(FileNotFoundError, match="config.json: missing"):
        read_json_object(path)
    for text, message in [
        ('{"a": 1,\n "b": }', r"config.json is not valid JSON \(line 2, column"),
        ("[1, 2]", "expected a JSON object .*got a JSON array"),
        ('"text"', "got a JSON string"),
        ("", "not valid JSON"),
    ]:
        path.write_text(text)
        with pytest.raises(ValueError, match=message) as info:
            read_json_object(path)
        assert "\n" not in str(info.value)
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ValueError, match="not UTF-8"):
        read_json_object(path)
    path.write_text('{"a": 1}')
    assert read_json_object(path) == {"a": 1}


def test_to_json_and_one_line():
    import torch

    data = json.loads(to_json({"a": float("inf"), "t": torch.tensor(float("nan")), "p": (1, 2)}))
    assert data == {"a": None, "t": None, "p": [1, 2]}
    assert one_line(ValueError("a\n  b\tc")) == "a b c"
    assert one_line(KeyError()) == "KeyError"
    assert one_line(ValueError("x" * 500), limit=20) == "x" * 17 + "..."


def test_saved_models_respect_the_umask(tmp_path, umask):
    from rkd_pml.models import EmbeddingModel

    umask(0o022)
    model = EmbeddingModel("resnet10t", 4, data_config={"input_size": (3, 16, 16)})
    out = model.save(tmp_path / "m")
    assert sorted(os.listdir(out)) == ["config.json", "model.safetensors"]
    for name in ("config.json", "model.safetensors"):
        assert _mode(out / name) == 0o644, name
    assert EmbeddingModel.load(out).embedding_dim == 4
