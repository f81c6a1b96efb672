"""Smoke test of the relational study (``python -m studies.relational --quick``) on Omniglot at 16 px.

One teacher and two students (RKD-DA, RKD-DA + compat) of a few iterations, end to end: the
records (students' seeds not their teacher's), the asymmetric Recall@1 of each student against a
brute-force search written out here, the report with its asymmetric column and its status while a
run is missing, and the same command continuing the study without training again.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from studies.relational.cli import main

METHODS = "rkd-da,rkd-da-compat"


def _records(out: Path) -> dict[str, dict]:
    lines = (out / "records.jsonl").read_text().splitlines()
    return {r["key"]: r for r in map(json.loads, filter(None, lines))}


def _embed(model_dir: Path, zip_path: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, D)`` embeddings of the 16 px test images by the saved model, and their labels ``(N,)``."""
    from rkd_pml.data import load_dataset
    from rkd_pml.models import EmbeddingModel

    model = EmbeddingModel.load(model_dir).eval()
    test = load_dataset("omniglot", root=zip_path, image_size=16, data_config=model.data_config)[1]
    images = torch.stack([test[i][0] for i in range(len(test))])
    with torch.no_grad():
        return model(images), torch.as_tensor(test.labels)


def _recall_at_1(queries: torch.Tensor, gallery: torch.Tensor, labels: torch.Tensor) -> float:
    """Row i of ``queries`` against the gallery rows of every other image; a hit: the nearest shares i's label."""
    d = torch.cdist(queries.double(), gallery.double())
    d.fill_diagonal_(float("inf"))
    return (labels[d.argmin(dim=1)] == labels).double().mean().item()


@pytest.mark.timeout(240)
def test_quick_study_records_asymmetric_recall_reports_and_resumes(omniglot_zip, tmp_path, capsys):
    out = tmp_path / "study"
    argv = ["--quick", "--root", omniglot_zip, "--image-size", "16", "--out", str(out), "--methods", METHODS,
            "--render-every", "0", "--device", "cpu"]
    assert main(argv + ["--dry-run"]) == 0
    dry = capsys.readouterr().out
    assert "3 runs (1 teachers, 2 students)" in dry and "students seeds 100" in dry and not out.exists()

    assert main(argv) == 0
    records = _records(out)
    assert sorted(records) == ["rkd-da-compat-nol2-d32-s100", "rkd-da-nol2-d32-s100", "teacher-s0"]
    teacher = records["teacher-s0"]
    teacher_seed = json.loads((out / "runs" / "teacher-s0" / "config.json").read_text())["seed"]
    assert teacher["seed"] == teacher_seed == 0
    t_emb, labels = _embed(out / "runs" / "teacher-s0" / "model", omniglot_zip)
    for key in ("rkd-da-nol2-d32-s100", "rkd-da-compat-nol2-d32-s100"):
        rec = records[key]
        run_seed = json.loads((out / "runs" / key / "config.json").read_text())["seed"]
        assert rec["seed"] == run_seed != teacher_seed and rec["teacher"] == "teacher-s0"
        s_emb, s_labels = _embed(out / "runs" / key / "model", omniglot_zip)
        assert torch.equal(s_labels, labels) and len(labels) == 1360
        # the saved model is the selected epoch's, and its queries are searched in the teacher's gallery
        assert rec["selected"]["test"]["recall@1"] == pytest.approx(_recall_at_1(s_emb, s_emb, labels), abs=1e-5)
        assert rec["asymmetric"]["gallery"] == "teacher-s0"
        assert rec["asymmetric"]["test"]["recall@1"] == pytest.approx(_recall_at_1(s_emb, t_emb, labels), abs=1e-5)

    report = (out / "RELATIONAL.md").read_text()
    assert "Status: complete: all 3 planned runs recorded" in report
    assert "asymmetric R@1 (teacher's gallery)" in report and "not results" in report
    compat = records["rkd-da-compat-nol2-d32-s100"]
    row = next(line for line in report.splitlines() if line.startswith("| RKD-DA + compat |"))
    assert f"| {100 * compat['asymmetric']['test']['recall@1']:.1f} |" in row
    assert f"| {100 * compat['selected']['test']['recall@1']:.1f} |" in row
    assert "wall time over 1 session(s)" in report

    # a run that finished but was not recorded (the command stopped in between): the report says the
    # study is partial, and the same command collects it without training
    lines = (out / "records.jsonl").read_text().splitlines()
    (out / "records.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    assert main(argv + ["--report-only"]) == 0
    assert "partial: 2 of 3 planned runs recorded" in (out / "RELATIONAL.md").read_text()
    weights = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("model.safetensors")}
    assert main(argv) == 0
    again = _records(out)
    assert len(again) == 3 and not again[json.loads(lines[-1])["key"]]["trained"]
    assert again[json.loads(lines[-1])["key"]]["asymmetric"] == json.loads(lines[-1])["asymmetric"]
    assert {p: p.stat().st_mtime_ns for p in weights} == weights
    assert "Status: complete" in (out / "RELATIONAL.md").read_text()


def test_missing_data_refused_in_one_line_before_any_folder(tmp_path, capsys):
    out = tmp_path / "study"
    with pytest.raises(SystemExit) as exc:
        main(["--quick", "--root", str(tmp_path / "absent.zip"), "--out", str(out)])
    assert "--root" in str(exc.value) and "absent.zip" in str(exc.value) and not out.exists()
