"""Smoke tests of the reproduction study's end-to-end runs (``python -m studies.reproduction``) at tiny size.

The studies run on a tiny Omniglot-layout zip written by the test (16 characters of 6 drawings,
16 px; the ``tiny_zip`` fixture of conftest.py) with a few iterations, one seed and one embedding
size; the tests check the records, the rendered report (naming only what ran), that starting the
same command again trains nothing new, that a busy study directory is refused and that SIGTERM
stops the workers. The plan, the dry run and the reports without training: test_reproduce_plan.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _pages() -> dict[Path, int]:
    """The modification times of the pages in docs/ and of the study's own pages."""
    pages = [*(ROOT / "docs").glob("*"), *(ROOT / "studies" / "reproduction").glob("*.*")]
    return {p: p.stat().st_mtime_ns for p in pages if p.is_file()}


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines() if line.strip()]


def _snapshot(out: Path) -> dict[str, float]:
    """Modification times of every file the training jobs wrote."""
    return {str(p): p.stat().st_mtime_ns for p in (out / "runs").rglob("*") if p.is_file()}


@pytest.mark.timeout(180)
def test_study_records_report_and_resume(reproduce, tiny_zip, tmp_path, capsys):
    out = tmp_path / "study"
    md, png = tmp_path / "report" / "RESULTS.md", tmp_path / "report" / "figure.png"
    argv = [
        "--quick", "--root", str(tiny_zip), "--image-size", "16", "--out", str(out), "--seeds", "0", "--sizes", "8",
        "--methods", "triplet,rkd-da", "--iterations", "4", "--eval-every", "2",
        "--teacher-iterations", "2", "--teacher-eval-every", "2", "--batch-size", "16",
        "--workers", "1", "--render-every", "0", "--report-md", str(md), "--report-png", str(png), "--device", "cpu",
    ]

    assert reproduce.main(argv) == 0
    first = capsys.readouterr().out
    records = _records(out)
    keys = {r["key"] for r in records}
    assert keys == {"teacher-s0", "triplet-l2-d8-s0", "triplet-nol2-d8-s0", "rkd-da-l2-d8-s0", "rkd-da-nol2-d8-s0"}
    for r in records:
        assert r["trained"] is True
        sel, best = r["selected"]["test"]["recall@1"], r["best_on_test"]["test"]["recall@1"]
        assert 0.0 <= sel <= best <= 1.0
        assert set(r["selected"]["test"]) >= {"recall@1", "recall@2", "recall@4", "recall@8"}
        assert r["selected"]["val"] is not None  # the epoch was chosen on the validation split
        assert r["data"]["val"]["classes"] == 4 and r["data"]["test"]["classes"] == 8  # half of 8 for validation
        assert r["device"] == "cpu" and "earlier_device" not in r
    students = [r for r in records if r["kind"] == "student"]
    assert all(r["iterations"] == 4 and [c[0] for c in r["curve"]] == [2, 4] for r in students)
    assert {r["teacher"] for r in students if r["method"] == "rkd-da"} == {"teacher-s0"}
    assert "[  5/5]" in first and "ETA" in first

    study = json.loads((out / "study.json").read_text())
    assert study["recipe"]["iterations"] == 4 and len(study["sessions"]) == 1
    assert study["sessions"][0]["machine"]["threads_per_worker"] == 1
    assert study["sessions"][0]["machine"]["device"] == "cpu" and "device" not in study["recipe"]
    assert study["sessions"][0]["data"]["name"] == "tiny_omniglot.zip" and len(study["sessions"][0]["data"]["sha256"]) == 64
    assert sorted(study["sessions"][0]["planned_keys"]) == sorted(keys)

    text = md.read_text()
    assert png.is_file() and png.stat().st_size > 0
    for expected in ("Recall@1 (%)", "d = 8", "Triplet (no teacher)", "RKD-DA", "Teacher (triplet)",
                     "best-on-test", "validation", "The paper's claims, checked", "figure.png", "Wall time",
                     "tiny_omniglot.zip", "Model selection on the validation split"):
        assert expected in text, expected
    assert "–" not in text.split("## Recall@K")[0].split("Model selection")[1]  # every planned cell filled

    # the same command again: nothing new is trained, no run file is touched
    before = _snapshot(out)
    assert reproduce.main(argv) == 0
    second = capsys.readouterr().out
    assert "nothing to train" in second
    assert len(_records(out)) == 5
    assert _snapshot(out) == before
    assert len(json.loads((out / "study.json").read_text())["sessions"]) == 2

    # a run that finished but was not recorded (stopped in between) is collected, not retrained;
    # its record names the device it ran on (here: as if a GPU session had finished it)
    lines = (out / "records.jsonl").read_text().splitlines()
    (out / "records.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    last = json.loads(lines[-1])["key"]
    results_path = out / "runs" / last / "results.json"
    results = json.loads(results_path.read_text())
    assert results["config"]["device_used"] == "cpu"
    results["config"]["device_used"] = "cuda:0"
    results_path.write_text(json.dumps(results))
    before = _snapshot(out)
    assert reproduce.main(argv) == 0
    capsys.readouterr()
    recovered = {r["key"]: r for r in _records(out)}
    assert len(recovered) == 5
    assert recovered[last]["trained"] is False and recovered[last]["device"] == "cuda:0"
    assert _snapshot(out) == before
    assert "Devices the runs trained on: cpu (4 runs), cuda:0 (1 run)." in md.read_text()


@pytest.mark.timeout(120)
def test_quick_report_names_only_what_ran(reproduce, tiny_zip, tmp_path, capsys):
    out = tmp_path / "quick"
    docs_before = _pages()
    argv = ["--quick", "--root", str(tiny_zip), "--image-size", "16", "--out", str(out),
            "--methods", "triplet,rkd-da-fitnet", "--l2", "off", "--render-every", "0"]
    assert reproduce.main(argv) == 0
    capsys.readouterr()
    records = {r["key"]: r for r in _records(out)}
    assert set(records) == {"teacher-s0", "triplet-nol2-d16-s0", "rkd-da-fitnet-nol2-d16-s0"}
    for r in records.values():
        assert {"kind", "method", "iterations", "curve", "selected", "best_on_test", "last"} <= set(r)
    # the report goes into the study directory unless --docs says otherwise; the pages are untouched
    text = (out / "RESULTS.md").read_text()
    assert (out / "results_recall_vs_dim.png").is_file()
    assert _pages() == docs_before
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert any(line.startswith("| RKD-DA + FitNet | no |") for line in rows)
    assert any(line.startswith("| Triplet (no teacher) | no |") for line in rows)
    assert not any("| yes |" in line for line in rows if not line.startswith("| test_resnet-32 | Teacher"))
    for absent in ("DarkRank", "RKD-D:", "RKD-A", "| FitNet |", "d = 32", "images_background_small1",
                   "Self-distillation", "136 characters"):
        assert absent not in text, absent
    assert "tiny_omniglot.zip" in text and "d = 16" in text and "4 iterations" in text
    assert "the tiny --quick budgets" in text and "Short budget" in text  # the caveat matches the budget


def _hold_study(out: str, locked, release) -> None:
    from studies.reproduction.study_dir import lock_study

    with lock_study(Path(out)):
        locked.set()
        release.wait(60)


def test_a_second_command_in_a_busy_study_directory_is_refused(reproduce, tiny_zip, tmp_path):
    import multiprocessing

    from rkd_pml.files.lock import LOCK_NAME

    out = tmp_path / "study"
    argv = ["--quick", "--root", str(tiny_zip), "--image-size", "16", "--out", str(out), "--seeds", "0",
            "--sizes", "8", "--methods", "triplet", "--iterations", "2", "--eval-every", "2",
            "--teacher-iterations", "2", "--teacher-eval-every", "2", "--batch-size", "16", "--workers", "1",
            "--render-every", "0"]
    ctx = multiprocessing.get_context("fork")
    locked, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_study, args=(str(out), locked, release))
    holder.start()
    try:
        assert locked.wait(30)
        with pytest.raises(SystemExit, match=rf"in use by another study command \(process {holder.pid} "):
            reproduce.main(argv)
        assert not (out / "runs").exists()  # refused before any training
    finally:
        release.set()
        holder.join(30)
    assert reproduce.main(argv) == 0  # the lock is gone with its holder
    assert (out / "records.jsonl").is_file()
    assert LOCK_NAME in (out / ".gitignore").read_text().split()


def _sleep_until_terminated(flag: str) -> None:
    import signal as _signal
    import time as _time

    def on_term(*_):
        Path(flag).write_text("terminated")
        raise SystemExit(0)

    _signal.signal(_signal.SIGTERM, on_term)
    _time.sleep(60)


def test_sigterm_stops_the_workers_too(tmp_path):
    import multiprocessing
    import time

    from studies.reproduction.scheduler import _stop_workers_and_exit

    flag = tmp_path / "flag"
    child = multiprocessing.get_context("fork").Process(target=_sleep_until_terminated, args=(str(flag),))
    child.start()
    time.sleep(0.5)  # let it install its handler
    t0 = time.time()
    with pytest.raises(SystemExit) as exc:
        _stop_workers_and_exit()
    child.join(10)
    assert exc.value.code == 143
    assert not child.is_alive() and time.time() - t0 < 10
    assert flag.read_text() == "terminated"
