"""The teacher cache in the pipeline: rkd-pml teacher-cache, then distill --teacher-cache."""

import json

import pytest
import torch

from rkd_pml.cli import main
from rkd_pml.training import distill, load_checkpoint

TINY = ["--image-size", "16", "--epochs", "1", "--iters", "3", "--batch-size", "20", "--m-per-class", "5",
        "--lr", "1e-3", "--lr-milestones", "1", "--no-progress", "--eval-batch-size", "512"]


def test_one_plain_view_equals_the_live_teacher(teacher_dir, tmp_path, tiny, capsys):
    assert main(["teacher-cache", "--teacher", teacher_dir, "--views", "1", "--train-transform", "none",
                 "--student", "resnet10t", "--out", str(tmp_path / "cache"), "--no-progress"]) == 0
    assert "teacher cache written to" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert manifest["views"] == 1 and manifest["image_size"] == 16  # the teacher's data settings
    settings = dict(student="resnet10t", embedding_dim=4, **{**tiny, "train_transform": "none"})
    live = distill(teacher=teacher_dir, out=str(tmp_path / "live"), **settings)
    cached = distill(teacher_cache=str(tmp_path / "cache"), out=str(tmp_path / "cached"), **settings)
    assert cached["teacher_cache"] == str(tmp_path / "cache")
    a = load_checkpoint(tmp_path / "live" / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "cached" / "checkpoints" / "last.pt")["model"]
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)
    assert cached["best"]["test"]["recall@1"] == pytest.approx(live["best"]["test"]["recall@1"], abs=0.01)


def test_a_cache_for_other_settings_is_refused_before_the_run(teacher_dir, tmp_path, tiny):
    assert main(["teacher-cache", "--teacher", teacher_dir, "--views", "2", "--student", "resnet10t",
                 "--out", str(tmp_path / "cache"), "--no-progress"]) == 0
    with pytest.raises(ValueError, match="does not match"):
        distill(teacher_cache=str(tmp_path / "cache"), student="resnet10t", embedding_dim=4, out=str(tmp_path / "s"),
                **{**tiny, "train_transform": "random_resized_crop"})
    assert not (tmp_path / "s").exists()


def test_augmented_views_train_and_resume_exactly(teacher_dir, tmp_path, tiny):
    assert main(["teacher-cache", "--teacher", teacher_dir, "--views", "2", "--student", "resnet10t",
                 "--out", str(tmp_path / "cache"), "--no-progress"]) == 0
    settings = dict(teacher_cache=str(tmp_path / "cache"), student="resnet10t", embedding_dim=4,
                    **{**tiny, "lr_milestones": (1,)})
    distill(out=str(tmp_path / "straight"), **{**settings, "epochs": 2})
    distill(out=str(tmp_path / "resumed"), **{**settings, "epochs": 1})
    distill(out=str(tmp_path / "resumed"), resume=True, **{**settings, "epochs": 2})
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cli_refuses_a_users_folder_and_a_full_disk_in_one_line(teacher_dir, tmp_path, capsys, monkeypatch):
    import errno
    import os

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "manifest.json").write_text('{"project": "my notes"}\n')
    args = ["teacher-cache", "--teacher", teacher_dir, "--views", "1", "--train-transform", "none",
            "--student", "resnet10t", "--no-progress", "--overwrite"]
    with pytest.raises(SystemExit) as info:
        main([*args, "--out", str(mine)])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and "\n" not in err
    assert f"refusing to overwrite {mine}: it is not a teacher cache" in err
    assert (mine / "manifest.json").read_text() == '{"project": "my notes"}\n' and os.listdir(mine) == ["manifest.json"]

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full, raising=False)
    with pytest.raises(SystemExit) as info:
        main([*args, "--out", str(tmp_path / "full")])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and "\n" not in err
    assert f"cannot write teacher cache {tmp_path / 'full'}: no space left on device" in err
    assert not (tmp_path / "full").exists()
    monkeypatch.undo()
    assert main([*args, "--out", str(tmp_path / "full")]) == 0  # the rerun needs nothing removed
