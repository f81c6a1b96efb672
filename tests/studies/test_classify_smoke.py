"""Smoke test of the classification study (``python -m studies.classification --quick``) on the shared Omniglot
archive (skipped where it is absent): records, report, resuming, and the data split."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest



@pytest.fixture(scope="module")
def classify():
    """The study's command line (``main``) and its code (recipe, methods, labels, data)."""
    from studies.classification import __main__ as cli
    from studies.classification import study

    return SimpleNamespace(main=cli.main, METHODS=study.METHODS, QUICK=study.QUICK, LABELS=study.LABELS,
                           load_splits=study.load_splits)


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines() if line.strip()]


@pytest.mark.timeout(180)
def test_quick_study_records_report_and_resume(classify, omniglot_zip, tmp_path, capsys):
    out = tmp_path / "study"
    argv = ["--quick", "--zip", omniglot_zip, "--out", str(out), "--seeds", "0,1", "--device", "cpu"]
    assert classify.main(argv) == 0
    first = capsys.readouterr().out
    records = _records(out)
    expected = {"teacher-s0"} | {f"{m}-s{s}" for m in classify.METHODS for s in (0, 1)}
    assert {r["key"] for r in records} == expected and len(records) == len(expected)
    quick = classify.QUICK
    for r in records:
        assert r["recipe"] == quick.key() and r["threads"] == 1 and r["device"] == "cpu"
        assert [c["epoch"] for c in r["curve"]] == list(range(1, r["epochs"] + 1))
        chosen = r["curve"][r["selected_epoch"] - 1]
        assert chosen["val"] == max(c["val"] for c in r["curve"])  # the epoch is chosen on validation
        assert r["test"] == chosen["test"] and 0.0 <= r["test"] <= r["best_test"] <= 1.0
    terms = {r["method"]: set(r["curve"][0]) for r in records}
    assert {"rkd_distance_loss", "rkd_angle_loss"} <= terms["rkd"]
    assert {"rkd_distance_loss", "rkd_angle_loss", "kd_loss"} <= terms["kd+rkd"]
    assert "kd_loss" in terms["kd"] and "kd_loss" in terms["fitnet"] and "rkd_angle_loss" not in terms["ce"]
    assert "[ 1/11] teacher seed 0" in first and "ETA" in first
    table = (out / "table.md").read_text()
    for label in classify.LABELS.values():
        assert label in table
    assert (out / "curves.png").stat().st_size > 0

    # resuming: nothing recorded is trained again; a lost record is trained again alone
    assert classify.main(argv) == 0
    assert "11 of 11 runs recorded, 0 to go" in capsys.readouterr().out
    lines = (out / "records.jsonl").read_text().splitlines()
    (out / "records.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    assert classify.main(argv) == 0
    assert "10 of 11 runs recorded, 1 to go" in capsys.readouterr().out
    assert sorted(r["key"] for r in _records(out)) == sorted(json.loads(x)["key"] for x in lines)


def test_splits_are_disjoint_drawings_of_the_same_characters(classify, omniglot_zip):
    recipe = replace(classify.QUICK, max_classes=3)
    data = classify.load_splits(Path(omniglot_zip), recipe)
    sizes = {s: len(data[s][1]) for s in ("train", "val", "test")}
    assert sizes == {"train": 3 * 12, "val": 3 * 3, "test": 3 * 5}
    for split in ("train", "val", "test"):
        images, labels = data[split]
        assert images.shape[1:] == (1, 32, 32) and set(labels.tolist()) == {0, 1, 2}
        assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0
        assert float(images.mean()) < 0.5  # ink is 1 on a 0 background
    flat = {s: {tuple(x.flatten().tolist()) for x in data[s][0]} for s in data}
    assert not (flat["train"] & flat["test"]) and not (flat["val"] & flat["test"])


def test_unknown_method_is_refused(classify, tmp_path):
    with pytest.raises(SystemExit):
        classify.main(["--quick", "--out", str(tmp_path), "--methods", "ce,nope"])
