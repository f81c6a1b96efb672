"""Every subcommand end to end at tiny size, in process (``main(argv)``) and as a module."""

import json
from pathlib import Path

import pytest

from rkd_pml.cli import main

TINY_ARGS = [
    "--image-size", "16", "--epochs", "1", "--iters", "3", "--batch-size", "20", "--m-per-class", "5",
    "--lr", "1e-3", "--lr-milestones", "1", "--no-progress", "--eval-batch-size", "512",
]


def _train_teacher(out: Path, *extra: str) -> int:
    return main(["train-teacher", "--model", "resnet10t", "--embedding-dim", "8", "--out", str(out), *TINY_ARGS, *extra])


def test_train_teacher_distill_evaluate(tmp_path, capsys):
    assert _train_teacher(tmp_path / "t") == 0
    out = capsys.readouterr().out
    assert "best epoch 1" in out and str(tmp_path / "t" / "model") in out
    assert main(["distill", "--teacher", str(tmp_path / "t"), "--student", "resnet10t", "--embedding-dim", "4",
                 "--out", str(tmp_path / "s"), "--student-metric-loss", "triplet", "--student-metric-weight", "0.5", "--loss", "rkd-a", *TINY_ARGS]) == 0
    config = json.loads((tmp_path / "s" / "config.json").read_text())
    assert config["loss"] == "rkd-a" and config["student_metric_loss"] == "triplet"
    assert config["student_metric_weight"] == 0.5 and config["l2_normalize"] is False
    results = json.loads((tmp_path / "s" / "results.json").read_text())
    capsys.readouterr()
    # a run directory brings its data set, image size and transforms
    assert main(["evaluate", str(tmp_path / "s"), "--no-progress", "--json", str(tmp_path / "m.json")]) == 0
    printed = capsys.readouterr().out
    assert "recall@8" in printed
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["recall@1"] == pytest.approx(results["best"]["test"]["recall@1"])


def test_train_baseline_and_resume_of_a_finished_run(tmp_path, capsys):
    args = ["train-baseline", "--student", "resnet10t", "--embedding-dim", "4", "--out", str(tmp_path / "b"), *TINY_ARGS]
    assert main(args) == 0
    assert json.loads((tmp_path / "b" / "config.json").read_text())["job"] == "train-baseline"
    # --resume reuses the saved options: --out alone is enough; --epochs may extend the run
    assert main(["train-baseline", "--out", str(tmp_path / "b"), "--resume", "--epochs", "2", "--no-progress"]) == 0
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]


def test_distill_on_shared_omniglot(tmp_path, omniglot_zip):
    assert _train_teacher(tmp_path / "t", "--dataset", "omniglot", "--root", omniglot_zip) == 0
    assert main(["distill", "--teacher", str(tmp_path / "t"), "--student", "resnet10t", "--embedding-dim", "4",
                 "--dataset", "omniglot", "--root", omniglot_zip, "--val-fraction", "0.2",
                 "--out", str(tmp_path / "s"), *TINY_ARGS]) == 0
    results = json.loads((tmp_path / "s" / "results.json").read_text())
    assert results["selection_split"] == "val" and results["best"]["test"]["recall@1"] > 0
    assert main(["evaluate", str(tmp_path / "s"), "--dataset", "omniglot", "--root", omniglot_zip,
                 "--image-size", "16", "--no-progress"]) == 0


def test_demo_tiny(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--epochs", "1", "--iters", "2", "--batch-size", "20", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    for row in ("teacher", "baseline", "RKD-DA", "R@1", "R@8"):
        assert row in printed
    results = json.loads((out / "results.json").read_text())
    assert [r["run"] for r in results["rows"]] == ["teacher", "baseline", "rkd"]
    assert (out / "recall.png").is_file() and (out / "rkd" / "model" / "model.safetensors").is_file()
    with pytest.raises(SystemExit) as exc:  # an existing demo is never overwritten silently
        main(["demo", "--out", str(out), "--epochs", "1", "--iters", "2", "--batch-size", "20", "--no-progress"])
    assert exc.value.code == 2
    assert "--overwrite" in capsys.readouterr().err


def test_console_script_is_declared():
    """``rkd-pml`` points at ``main`` (``python -m rkd_pml`` runs for real in the kill/resume test)."""
    from importlib.metadata import entry_points

    (script,) = [ep for ep in entry_points(group="console_scripts") if ep.name == "rkd-pml"]
    assert script.value == "rkd_pml.cli:main" and script.load() is main


@pytest.mark.parametrize("command", ["demo", "train-teacher", "train-baseline", "distill", "evaluate"])
def test_help_explains_every_option(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    import re

    options = [line.split()[0].rstrip(",") for line in text.splitlines() if re.match(r"^  --?\w", line)]
    assert options
    # every option line is followed by a description (same line or the next one)
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^  --?\w", line):
            rest = re.split(r"\s{2,}", line.strip(), maxsplit=1)
            assert len(rest) == 2 or lines[i + 1].startswith(" " * 10), line


def test_export_a_run_as_a_timm_model(teacher_dir, tmp_path, capsys):
    import timm
    import torch

    from rkd_pml.models import EmbeddingModel

    assert main(["export", teacher_dir, "--out", str(tmp_path / "timm")]) == 0
    assert "timm model written to" in capsys.readouterr().out
    net = timm.create_model(f"local-dir:{tmp_path / 'timm'}", pretrained=True).eval()
    ours = EmbeddingModel.load(Path(teacher_dir) / "model").eval()
    images = torch.rand(3, 3, 16, 16)
    cfg = net.pretrained_cfg
    mean, std = torch.tensor(cfg["mean"]).view(1, -1, 1, 1), torch.tensor(cfg["std"]).view(1, -1, 1, 1)
    with torch.no_grad():
        theirs = torch.nn.functional.normalize(net((images - mean) / std), dim=1)  # the head's L2 is ours to apply
        assert torch.allclose(theirs, ours(images), atol=1e-5)
    with pytest.raises(SystemExit):  # an existing folder is never replaced silently
        main(["export", teacher_dir, "--out", str(tmp_path / "timm")])


def test_demo_keeps_each_runs_model_and_no_checkpoints(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--epochs", "1", "--iters", "2", "--batch-size", "20", "--no-progress"]) == 0
    for run in ("teacher", "baseline", "rkd", "baseline-seed1", "rkd-seed1", "baseline-seed2", "rkd-seed2"):
        assert (out / run / "model" / "model.safetensors").is_file() and not (out / run / "checkpoints").exists()
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    assert size < 170 * 2**20, size  # a resnet18 teacher (43 MB) and 3 seeds x 2 resnet10t students (19 MB each)
