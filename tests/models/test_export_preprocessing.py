"""An export records the preprocessing the model was trained and is evaluated with: timm's
own eval transform, built from ``resolve_model_data_config`` of the loaded export, gives the
embeddings ``rkd-pml evaluate`` computes for the same test images. And the export does not
depend on timm's ``save_for_hf`` (its ``data_config`` keyword is missing on timm 1.0.29, the
function itself from ``timm.models`` on timm 1.0.3).
"""

from __future__ import annotations

import json

import pytest
import timm
import timm.models
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Subset

import rkd_pml.evaluation
from rkd_pml.evaluation import embed
from rkd_pml.models.export import export_timm
from rkd_pml.training import train_teacher
from rkd_pml.training.evaluate_job import evaluate_saved

TEACHER_SIZE = 16  # conftest's teacher_dir: resnet10t, RGB, TINY settings (paper transform)


def _evaluated(run, monkeypatch):
    """The model and test set that ``rkd-pml evaluate RUN`` embeds (its Recall@K not computed)."""
    seen = {}

    def capture(model, data, **kwargs):
        seen.update(model=model, data=data)
        return {}

    monkeypatch.setattr(rkd_pml.evaluation, "evaluate", capture)
    evaluate_saved(run, progress=False)
    monkeypatch.undo()
    return seen["model"], seen["data"]


def _timm_transform_run(folder, tiny) -> str:
    """A grey test_resnet trained at 20 px with timm's crop (so evaluated with timm's test transform)."""
    settings = {**tiny, "image_size": 20, "train_transform": "random_resized_crop"}
    train_teacher(model="test_resnet", embedding_dim=8, in_chans=1, out=str(folder / "run"), **settings)
    return str(folder / "run")


@pytest.mark.parametrize("which", ["paper", "timm"])
def test_timms_transform_from_the_export_reproduces_evaluate(which, teacher_dir, tiny, tmp_path, monkeypatch):
    run = teacher_dir if which == "paper" else _timm_transform_run(tmp_path, tiny)
    size, chans = (TEACHER_SIZE, 3) if which == "paper" else (20, 1)
    out = export_timm(run, tmp_path / "export")
    net = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    cfg = timm.data.resolve_model_data_config(net)
    assert tuple(cfg["input_size"]) == (chans, size, size)  # the training size, not timm's (176 for resnet10t)
    transform = timm.data.create_transform(**cfg)  # timm's eval transform, Normalize included
    exported = json.loads((out / "config.json").read_text())

    model, data = _evaluated(run, monkeypatch)
    index = list(range(0, len(data), len(data) // 6))[:6]
    expected, _ = embed(model, Subset(data, index), progress=False)  # rkd-pml's path: its transform, its model
    images = [data.reader(data.samples[i]).convert(exported["image_mode"]) for i in index]
    with torch.no_grad():
        got = net(torch.stack([transform(image) for image in images]))
    if exported["l2_normalize"]:
        got = F.normalize(got, dim=1)
    assert got.shape == expected.shape == (6, 8)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)

    # digits are square; on other shapes too timm's transform is rkd-pml's, then Normalize
    mean, std = (torch.tensor(cfg[k]).view(-1, 1, 1) for k in ("mean", "std"))
    generator = torch.Generator().manual_seed(0)
    for height, width in ((30, 20), (17, 41)):
        pixels = torch.randint(0, 256, (height, width, 3), generator=generator, dtype=torch.uint8).numpy()
        image = Image.fromarray(pixels).convert(exported["image_mode"])
        torch.testing.assert_close(transform(image) * std + mean, data.transform(image), rtol=0, atol=1e-5)


def test_export_needs_no_save_for_hf(tmp_path, teacher_dir, monkeypatch):
    def save_for_hf(model, save_directory, model_config=None, model_args=None, safe_serialization=False):
        raise AssertionError("not expected to be called")  # timm 1.0.29's signature: no data_config

    monkeypatch.setattr(timm.models, "save_for_hf", save_for_hf)
    first = export_timm(teacher_dir, tmp_path / "a")
    monkeypatch.delattr(timm.models, "save_for_hf")  # timm 1.0.3: not in timm.models
    second = export_timm(teacher_dir, tmp_path / "b")
    for out in (first, second):
        net = timm.create_model(f"local-dir:{out}", pretrained=True)
        assert net.num_classes == 8 and tuple(net.pretrained_cfg["input_size"]) == (3, 16, 16)
