"""Where a teacher cache is built: only a cache of this package is replaced, never a user's
files or an input; one build at a time; a full disk or a killed build never blocks the next."""

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import rkd_pml.files.lock as lock_module
from rkd_pml.data import ImageDataset, build_transforms
from rkd_pml.data.digits import ArrayImageReader
from rkd_pml.data.teacher_cache import TeacherCache, build_teacher_cache
from rkd_pml.files import WriteError
from rkd_pml.files.lock import LOCK_NAME, RunLock, RunLockedError
from rkd_pml.models import EmbeddingModel

SIZE = 16
CACHE_FILES = {".rkd-pml-cache", "cache.safetensors", "samples.json", "manifest.json"}

# A process that holds a folder's lock: the lock module alone (standard library only).
_HOLDER = textwrap.dedent(
    """
    import importlib.util, sys, time
    spec = importlib.util.spec_from_file_location("lock", sys.argv[1])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    lock = module.RunLock.acquire(sys.argv[2])
    print("locked", flush=True)
    time.sleep(60)
    """
)


def _dataset(n=6):
    pixels = np.random.RandomState(0).randint(0, 256, (n, 20, 26, 3), dtype=np.uint8)
    train, _ = build_transforms(SIZE, train_transform="none", data_config={"interpolation": "bilinear"})
    return ImageDataset(list(range(n)), np.arange(n) % 3, ["a", "b", "c"], ArrayImageReader(pixels), train, "RGB", "t")


def _teacher():
    torch.manual_seed(0)
    return EmbeddingModel("test_resnet", embedding_dim=8).eval()


def _build(out, **kwargs):
    return build_teacher_cache(_teacher(), _dataset(), 1, out, batch_size=4, progress=False, **kwargs)


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line(exc) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize("what", ["notes", "manifest", "run", "cache_and_notes"])
def test_overwrite_replaces_only_a_cache_and_a_users_files_survive(tmp_path, what):
    out = tmp_path / "out"
    if what == "cache_and_notes":
        _build(out)
    out.mkdir(exist_ok=True)
    if what == "manifest":  # a user's own manifest.json, where the cache's would go
        (out / "manifest.json").write_text(json.dumps({"name": "my project", "version": 3}))
        (out / "samples.json").write_text("[1, 2, 3]")
    elif what == "run":  # a run directory of this package
        (out / ".rkd-pml-run").write_text("{}")
        (out / "config.json").write_text(json.dumps({"job": "distill"}))
    else:
        (out / "notes.txt").write_text("my notes")
    before = _tree(out)
    for overwrite in (True, False):
        with pytest.raises(FileExistsError) as info:
            _build(out, overwrite=overwrite)
        assert str(out) in _one_line(info) and "choose another --out" in str(info.value)
    if what == "notes":
        assert "notes.txt" in str(info.value)
    assert _tree(out) == before  # nothing removed, nothing added (no marker, no lock file)
    if what == "cache_and_notes":
        assert TeacherCache.open(out).num_images == 6


def test_a_cache_is_replaced_with_overwrite_and_only_its_files_remain(tmp_path):
    out = _build(tmp_path / "out")
    assert set(os.listdir(out)) == CACHE_FILES  # the lock file went with the build
    with pytest.raises(FileExistsError, match="is a teacher cache; pass overwrite=True"):
        _build(out)
    build_teacher_cache(_teacher(), _dataset(n=4), 1, out, progress=False, overwrite=True)
    assert TeacherCache.open(out).num_images == 4 and set(os.listdir(out)) == CACHE_FILES
    legacy = tmp_path / "legacy"  # a cache written before the marker existed
    _build(legacy)
    (legacy / ".rkd-pml-cache").unlink()
    _build(legacy, overwrite=True)
    assert TeacherCache.open(legacy).num_images == 6


def test_inputs_and_parents_of_the_current_directory_are_refused(tmp_path, monkeypatch):
    teacher = tmp_path / "teacher"
    _teacher().save(teacher)
    before = _tree(teacher)
    for out, relation in ((teacher, "is"), (tmp_path, "contains"), (teacher / "cache", "lies inside")):
        with pytest.raises(ValueError) as info:
            _build(out, overwrite=True, teacher_source=str(teacher))
        assert f"{out} {relation} {teacher}, the teacher" in _one_line(info)
    data = tmp_path / "data"
    (data / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match="the data root"):
        _build(data / "a" / "cache", root=str(data))
    (tmp_path / "work" / "here").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "work" / "here")
    with pytest.raises(ValueError, match="contains the current directory"):
        _build(tmp_path / "work", overwrite=True)
    assert _tree(teacher) == before and not (teacher / "cache").exists() and not (data / "a" / "cache").exists()
    assert _build(Path(".")).samefile(tmp_path / "work" / "here")  # the current directory itself is fine


def test_a_second_build_is_refused_while_another_process_builds(tmp_path):
    out = _build(tmp_path / "out")
    before = _tree(out)
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, lock_module.__file__, str(out)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked", holder.stderr.read()
        with pytest.raises(RunLockedError) as info:
            _build(out, overwrite=True)
        assert f"teacher cache {out} is in use by process {holder.pid}" in _one_line(info)
        assert {k: v for k, v in _tree(out).items() if k != LOCK_NAME} == before  # untouched
        cache = TeacherCache.open(out)
        assert cache.embeddings(range(6), [0] * 6).shape == (6, 8)
    finally:
        holder.kill()
        holder.wait(timeout=10)
        holder.stdout.close()
        holder.stderr.close()
    _build(out, overwrite=True)  # the holder is gone: its lock went with it
    assert set(os.listdir(out)) == CACHE_FILES


def test_a_removed_lock_file_is_never_held_by_two(tmp_path, monkeypatch):
    """A process that opened the lock file just before its holder removed it and locked the
    removed file must start over with the folder's new lock file."""
    real_flock = lock_module.fcntl.flock
    raced = []

    def flock(fd, op):
        if not raced and op & lock_module.fcntl.LOCK_EX:  # the holder removes the file now...
            raced.append(os.fstat(fd).st_ino)
            os.unlink(tmp_path / LOCK_NAME)
            (tmp_path / LOCK_NAME).write_text("")  # ...and someone creates the next one
        return real_flock(fd, op)

    monkeypatch.setattr(lock_module.fcntl, "flock", flock)
    held = RunLock.acquire(tmp_path, remove=True)
    fd = lock_module._HELD[os.path.realpath(tmp_path / LOCK_NAME)].fd
    assert raced and os.fstat(fd).st_ino == os.stat(tmp_path / LOCK_NAME).st_ino != raced[0]
    held.release()
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_full_disk_is_one_line_and_a_rerun_works(tmp_path, monkeypatch, capsys):
    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full, raising=False)
    for out in (tmp_path / "new", tmp_path / "empty"):
        if out.name == "empty":
            out.mkdir()
        with pytest.raises(WriteError) as info:
            _build(out)
        assert f"cannot write teacher cache {out}: no space left on device" in _one_line(info)
        assert info.value.errno == errno.ENOSPC
        assert (out.exists() and not os.listdir(out)) == (out.name == "empty")  # nothing left behind
    monkeypatch.undo()
    assert TeacherCache.open(_build(tmp_path / "new")).num_images == 6


def test_a_killed_build_leaves_nothing_that_blocks_a_rerun(tmp_path):
    """What a build killed while writing its tensors leaves (copied at that moment: marker,
    partial tensors, an unheld lock file) does not stop the next build, nor need --overwrite."""
    out, dead = tmp_path / "out", tmp_path / "dead"
    teacher = _teacher()

    def snapshot(module, args, output):
        if not dead.exists() and (out / ".cache.safetensors.partial").exists():
            shutil.copytree(out, dead)

    teacher.register_forward_hook(snapshot)
    build_teacher_cache(teacher, _dataset(), 1, out, batch_size=4, progress=False)
    assert ".cache.safetensors.partial" in os.listdir(dead) and "manifest.json" not in os.listdir(dead)
    assert TeacherCache.open(_build(dead)).num_images == 6
    assert set(os.listdir(dead)) == CACHE_FILES


def test_a_stale_partial_file_goes_only_when_it_is_ours(tmp_path):
    from rkd_pml.data.teacher_cache_format import StreamedSafetensors

    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ours.mkdir()
    theirs.mkdir()
    StreamedSafetensors(ours / ".cache.safetensors.partial", {"embeddings": (2, 1, 8)},
                        {"content": "rkd_pml.TeacherCache"}).close()  # an earlier version's, killed
    (theirs / ".cache.safetensors.partial").write_bytes(b"a user's file")
    assert TeacherCache.open(_build(ours)).num_images == 6
    with pytest.raises(FileExistsError, match="not a teacher cache"):
        _build(theirs, overwrite=True)
    assert (theirs / ".cache.safetensors.partial").read_bytes() == b"a user's file"


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_files_honour_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        out = _build(tmp_path / "out")
    finally:
        os.umask(old)
    for name in CACHE_FILES:
        assert stat.S_IMODE(os.stat(out / name).st_mode) == 0o666 & ~mask, name
