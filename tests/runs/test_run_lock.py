"""One process per run directory: a second one is refused, naming the first; a dead one never blocks."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import rkd_pml.files.lock as run_lock  # the lock alone: standard library only
from rkd_pml.runs import RunDir
from rkd_pml.runs.lock import LOCK_NAME, RunLock, RunLockedError, read_holder

# The holder imports the lock module alone (standard library only), so it starts in a moment.
_HOLDER = textwrap.dedent(
    """
    import importlib.util, sys, time
    spec = importlib.util.spec_from_file_location("run_lock", sys.argv[1])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    lock = module.RunLock.acquire(sys.argv[2])
    print("locked", flush=True)
    time.sleep(60)
    """
)


@pytest.fixture
def holder():
    """Start a process that locks a directory; yields ``start(path) -> Popen``."""
    started = []

    def start(path: Path) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, run_lock.__file__, str(path)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        started.append(proc)
        line = proc.stdout.readline()
        assert line.strip() == "locked", proc.stderr.read()
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()


def _started_run(path: Path) -> RunDir:
    run = RunDir.create(path)
    run.write_config({"job": "distill"})
    run.append_metrics({"epoch": 1})
    run.close()
    return run


def test_a_second_resume_is_refused_naming_the_first(tmp_path, holder):
    path = tmp_path / "run"
    _started_run(path)
    proc = holder(path)
    for options in ({"resume": True}, {"overwrite": True}):
        with pytest.raises(RunLockedError) as info:
            RunDir.create(path, **options)
        message = str(info.value)
        assert f"in use by process {proc.pid} on host {socket.gethostname()}" in message
        assert str(path) in message and "\n" not in message
        assert info.value.holder["pid"] == proc.pid
    assert RunDir(path).read_metrics() == [{"epoch": 1}]  # nothing was touched
    assert read_holder(path)["pid"] == proc.pid


def test_a_killed_holder_does_not_block(tmp_path, holder):
    path = tmp_path / "run"
    _started_run(path)
    proc = holder(path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert json.loads((path / LOCK_NAME).read_text())["pid"] == proc.pid  # its note stays...
    with RunDir.create(path, resume=True) as run:  # ...but the lock went with it
        assert run.locked
        assert read_holder(path)["pid"] == os.getpid()
    assert not run.locked
    assert read_holder(path) == {}  # released: no stale description left


def test_the_lock_is_held_until_close(tmp_path):
    path = tmp_path / "run"
    run = RunDir.create(path)
    assert run.locked and (path / LOCK_NAME).is_file()
    probe = [sys.executable, "-c", _HOLDER.replace("time.sleep(60)", ""), run_lock.__file__, str(path)]
    busy = subprocess.run(probe, capture_output=True, text=True, timeout=60)
    assert busy.returncode != 0 and "in use by process" in busy.stderr
    run.close()
    run.close()  # a second close does nothing
    free = subprocess.run(probe, capture_output=True, text=True, timeout=60)
    assert free.returncode == 0 and free.stdout.strip() == "locked"


def test_one_process_may_reopen_its_own_run(tmp_path):
    path = tmp_path / "run"
    first = _started_run(path)
    first._lock = RunLock.acquire(path)  # e.g. an interrupted job whose objects are still alive
    second = RunDir.create(path, resume=True)
    first.close()
    assert second.locked  # counted: the lock stays with the second holder
    second.close()
    assert not run_lock._HELD


def test_garbage_collection_releases_the_lock(tmp_path):
    path = tmp_path / "run"
    RunDir.create(path)  # not kept
    deadline = time.monotonic() + 5
    while run_lock._HELD and time.monotonic() < deadline:
        import gc

        gc.collect()
    assert not run_lock._HELD


def test_a_clean_release_removes_the_lock_file(tmp_path, teacher_dir):
    assert not (Path(teacher_dir) / LOCK_NAME).exists()  # a finished run leaves none
    path = tmp_path / "run"
    first = _started_run(path)
    assert not (path / LOCK_NAME).exists()
    first._lock = RunLock.acquire(path)
    second = RunDir.create(path, resume=True)
    first.close()
    assert (path / LOCK_NAME).is_file()  # still held (by the second holder)
    second.close()
    assert not (path / LOCK_NAME).exists()
    assert sorted(p.name for p in path.iterdir()) == [".rkd-pml-run", "config.json", "metrics.jsonl"]


def test_a_lock_held_by_another_process_is_never_removed(tmp_path, holder):
    path = tmp_path / "run"
    _started_run(path)
    proc = holder(path)
    with pytest.raises(RunLockedError):
        RunDir.create(path, resume=True)
    assert json.loads((path / LOCK_NAME).read_text())["pid"] == proc.pid
    assert not run_lock._HELD
