"""Smoke test of the few-shot study (``python -m studies.fewshot --quick``) on the shared Omniglot archive.

Checks the records (one per run, test cells for every setting, the checkpoint chosen on the
validation split), the rendered report and figure, and that the same command again trains
nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest



@pytest.fixture(scope="module")
def fewshot():
    """The study's command line (``main``) and its code (recipe, study directory)."""
    from studies.fewshot import __main__ as cli
    from studies.fewshot import study

    return SimpleNamespace(main=cli.main, Recipe=study.Recipe, QUICK=study.QUICK, open_study=study.open_study,
                           save_study=study.save_study)


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines() if line.strip()]


@pytest.mark.timeout(120)
def test_quick_study_records_report_and_resume(fewshot, omniglot_zip, tmp_path, capsys):
    out = tmp_path / "study"
    md, png = tmp_path / "report" / "FEWSHOT.md", tmp_path / "report" / "fewshot_curves.png"
    argv = ["--quick", "--root", omniglot_zip, "--out", str(out), "--seeds", "0", "--report-md", str(md),
            "--device", "cpu"]
    assert fewshot.main(argv) == 0
    first = capsys.readouterr().out
    records = _records(out)
    assert [r["key"] for r in records] == ["teacher-s0", "scratch-s0", "self-s0", "small-scratch-s0", "small-s0"]
    recipe = fewshot.Recipe(**fewshot.QUICK)
    settings = {f"{w}w{s}s" for w in recipe.eval_ways for s in recipe.eval_shots}
    for r in records:
        assert set(r["test"]) == settings and r["device"] == "cpu"
        for s, cell in r["test"].items():
            ways = int(s.split("w")[0])
            assert 0.0 <= cell["accuracy"] <= 1.0 and cell["ci95"] >= 0
            assert len(cell["correct"]) == recipe.test_episodes
            assert sum(cell["correct"]) / (recipe.test_episodes * ways * recipe.eval_queries) == pytest.approx(
                cell["accuracy"], abs=1e-6)
        vals = [c["val"] for c in r["curve"]]
        assert [c["iteration"] for c in r["curve"]] == [2, 4]
        assert r["selected_val"] == max(vals) and r["selected_iteration"] == r["curve"][vals.index(max(vals))]["iteration"]
        assert (r["teacher"] == "teacher-s0") == (r["model"] in ("self", "small"))
        assert (r["curve"][0]["rkd_loss"] is not None) == (r["model"] in ("self", "small"))
    assert "[  5/5]" in first and "ETA" in first

    text = md.read_text()
    assert png.is_file() and png.stat().st_size > 0
    for expected in ("Test accuracy", "Paired margins", "self-distilled − teacher", "Self-distilled",
                     "selected it.", "fewshot_curves.png", "Wall time", "torch thread(s) on cpu;"):
        assert expected in text, expected

    # the same command again: nothing is trained, the records stay as they are
    before = (out / "records.jsonl").read_text()
    assert fewshot.main(argv) == 0
    assert "nothing to train" in capsys.readouterr().out
    assert (out / "records.jsonl").read_text() == before
    assert len(json.loads((out / "study.json").read_text())["sessions"]) == 2


def test_other_recipe_in_the_same_directory_is_refused(fewshot, tmp_path):
    fewshot.save_study(tmp_path, fewshot.open_study(tmp_path, fewshot.Recipe(iterations=4, eval_every=2)))
    assert fewshot.open_study(tmp_path, fewshot.Recipe(iterations=4, eval_every=2))["sessions"] == []
    with pytest.raises(SystemExit, match="another recipe"):
        fewshot.open_study(tmp_path, fewshot.Recipe(iterations=8, eval_every=2))
