"""The package on a CUDA GPU: losses, autocast, the fp16 gradient scaler, compile, the teacher
cache, export and a one-process NCCL group.

Tests marked ``cuda`` are skipped without a GPU (tests/conftest.py) and selected alone by
``pytest -m cuda`` (benchmarks/gpu_check.sh). Where a test takes the device as a parameter,
its ``cpu`` case runs in the default suite, so the same code path is exercised everywhere.
References are independent of the device under test: the official formulas in float64 on
the CPU, eager against compiled, the live teacher against its cache, the EmbeddingModel against
the exported timm model.
"""

from __future__ import annotations

import json

import pytest
import timm
import torch
import torch.nn.functional as F

from rkd_pml import EmbeddingModel, RKDLoss
from rkd_pml.functional import official
from rkd_pml.training import distill, load_checkpoint
from rkd_pml.training.speed import autocast

CUDA = pytest.param("cuda", marks=pytest.mark.cuda)
DEVICES = ["cpu", CUDA]


def _pair(n: int = 24, ds: int = 8, dt: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, ds, generator=g, dtype=torch.float64), F.normalize(torch.randn(n, dt, generator=g, dtype=torch.float64), dim=1)


def _reference(student: torch.Tensor, teacher: torch.Tensor, w_dist: float = 1.0, w_angle: float = 2.0) -> torch.Tensor:
    """The package's RKD from the official formulas: they average over all N^2 pairs and N^3
    triplets, the package over the N (N - 1) pairs and N (N - 1) (N - 2) triplets of distinct
    examples (tests/losses/test_rkd_official.py)."""
    n = len(student)
    return (w_dist * n / (n - 1) * official.rkd_distance(student, teacher)
            + w_angle * n * n / ((n - 1) * (n - 2)) * official.rkd_angle(student, teacher))  # fmt: skip


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("weights", [(1.0, 2.0), (1.0, 0.0), (0.0, 1.0)])
def test_float32_loss_and_gradient_on_device_match_float64_official(device, weights):
    s64, t64 = _pair()
    ref_s = s64.clone().requires_grad_(True)
    expected = _reference(ref_s, t64, *weights)
    expected.backward()
    s = s64.float().to(device).requires_grad_(True)
    loss = RKDLoss(distance_weight=weights[0], angle_weight=weights[1])(s, ref_emb=t64.float().to(device))
    loss.backward()
    assert loss.device.type == device
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)
    torch.testing.assert_close(s.grad.cpu().double(), ref_s.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("device, precision", [
    ("cpu", "bf16"),
    pytest.param("cuda", "bf16", marks=pytest.mark.cuda),
    pytest.param("cuda", "fp16", marks=pytest.mark.cuda),
])  # fmt: skip
@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e4])
def test_autocast_forward_gives_finite_loss_and_gradients(device, precision, scale):
    torch.manual_seed(0)
    student = EmbeddingModel("resnet10t", 8).to(device)
    teacher = EmbeddingModel("resnet10t", 16, l2_normalize=True).to(device).eval()
    images = torch.rand(12, 3, 32, 32, generator=torch.Generator().manual_seed(1)).to(device)
    with autocast(precision, torch.device(device)):
        emb = student(images) * scale
        with torch.no_grad():
            ref = teacher(images) * scale
    assert emb.dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]  # autocast really ran
    loss = RKDLoss()(emb.float(), ref_emb=ref.float())
    loss.backward()
    assert torch.isfinite(loss) and float(loss) > 0
    assert all(torch.isfinite(p.grad).all() for p in student.parameters() if p.grad is not None)


@pytest.mark.cuda
def test_fp16_gradient_scaler_run_resumes(teacher_dir, tmp_path, tiny, monkeypatch):
    # deterministic cuDNN kernels: the resumed run can then end with the uninterrupted run's weights
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    settings = dict(teacher=teacher_dir, student="resnet10t", embedding_dim=4, precision="fp16", device="cuda",
                    **{**tiny, "lr_milestones": (1,)})  # fmt: skip
    distill(out=str(tmp_path / "straight"), **{**settings, "epochs": 2})
    distill(out=str(tmp_path / "resumed"), **{**settings, "epochs": 1})
    after_epoch_1 = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt", map_location="cpu")
    distill(out=str(tmp_path / "resumed"), resume=True, **{**settings, "epochs": 2})
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt", map_location="cpu")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt", map_location="cpu")
    assert after_epoch_1["scaler"]["scale"] > 0  # the scaler was enabled and its state saved
    assert a["scaler"] == b["scaler"] and a["loop"]["epoch"] == b["loop"]["epoch"] == 2
    skipped = sum(r.get("skipped_steps", 0) for r in map(json.loads, (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()))
    assert skipped == 0  # with fp16 the scaler skips steps itself; the loop's own check never fires
    moved = max(float((a["model"][k].float() - after_epoch_1["model"][k].float()).abs().max()) for k in a["model"])
    diff = max(float((a["model"][k].float() - b["model"][k].float()).abs().max()) for k in a["model"])
    assert moved > 0 and diff <= 1e-3 * moved


@pytest.mark.cuda
def test_compiled_loss_equals_eager_on_cuda():
    s64, t64 = _pair(n=64, ds=16, dt=32)
    s, t = s64.float().cuda(), t64.float().cuda()
    results = []
    for fn in (RKDLoss(), torch.compile(RKDLoss()), RKDLoss(backend="compiled")):
        x = s.clone().requires_grad_(True)
        loss = fn(x, ref_emb=t)
        loss.backward()
        results.append((float(loss), x.grad.cpu()))
    expected = float(_reference(s64, t64))
    for value, grad in results:
        assert value == pytest.approx(expected, rel=1e-5)
        torch.testing.assert_close(grad, results[0][1], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_teacher_cache_built_on_device_holds_the_live_teachers_embeddings(teacher_dir, tmp_path, tiny, device):
    from rkd_pml.data import load_dataset
    from rkd_pml.data.teacher_cache import TeacherCache, build_teacher_cache_from_saved
    from rkd_pml.models import load_teacher

    out = build_teacher_cache_from_saved(teacher_dir, dataset="digits", views=1, out=tmp_path / "cache", image_size=16,
                                         train_transform="none", student="resnet10t", device=device, progress=False)  # fmt: skip
    cache = TeacherCache.open(out)
    teacher = load_teacher(teacher_dir, "cpu").eval()  # the reference: the live teacher on the CPU
    data_config = {k: v for k, v in EmbeddingModel("resnet10t", 4).data_config.items() if k != "input_size"}
    train, _ = load_dataset("digits", image_size=16, train_transform="none", data_config=data_config)
    rows = cache.rows_of(train)[:10]
    images = torch.stack([train[i][0] for i in range(10)])
    with torch.no_grad():
        expected = teacher(images)
    torch.testing.assert_close(cache.embeddings(rows, [0] * 10), expected, rtol=1e-4, atol=1e-5)
    results = distill(teacher_cache=str(out), student="resnet10t", embedding_dim=4, device=device,
                      out=str(tmp_path / "s"), **{**tiny, "train_transform": "none"})  # fmt: skip
    assert results["teacher_cache"] == str(out) and 0 <= results["best"]["test"]["recall@1"] <= 1


@pytest.mark.parametrize("device", DEVICES)
def test_exported_model_reloads_with_the_same_embeddings_on_device(tmp_path, device):
    from rkd_pml.models.export import export_timm

    torch.manual_seed(0)
    model = EmbeddingModel("resnet10t", embedding_dim=12, l2_normalize=True).eval()
    model.save(tmp_path / "model")
    out = export_timm(tmp_path / "model", tmp_path / "export")
    loaded = timm.create_model(f"local-dir:{out}", pretrained=True).eval().to(device)
    cfg = timm.data.resolve_model_data_config(loaded)
    images = torch.rand(5, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    mean, std = torch.tensor(cfg["mean"]).view(1, -1, 1, 1), torch.tensor(cfg["std"]).view(1, -1, 1, 1)
    with torch.no_grad():
        expected = model(images)  # the EmbeddingModel on the CPU, on unnormalised images
        got = F.normalize(loaded(((images - mean) / std).to(device)), dim=1).cpu()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_one_process_group_distributed_rkd_is_the_plain_loss(tmp_path, device):
    # NCCL on a GPU (gloo on the CPU): the wrapped loss of one process is the single-process loss
    # (times world size 1), and so is its gradient
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from rkd_pml.distributed import distributed_rkd

    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    backend = "nccl" if device == "cuda" else "gloo"
    if device == "cuda":
        torch.cuda.set_device(0)
    dist.init_process_group(backend, init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        net = torch.nn.Linear(8, 6).to(device)
        ddp = DistributedDataParallel(net, device_ids=[0] if device == "cuda" else None)
        x64, t64 = _pair(n=16, ds=8, dt=10)
        x, t = x64.float().to(device), t64.float().to(device)
        labels = (torch.arange(16) % 4).to(device)
        loss_fn, _ = distributed_rkd(RKDLoss())
        loss = loss_fn(ddp(x), labels, None, ref_emb=t)
        loss.backward()
        got_grad = net.weight.grad.detach().cpu().clone()
        # reference: the official formula in float64 on the CPU, same weights
        w = net.weight.detach().cpu().double().requires_grad_(True)
        b = net.bias.detach().cpu().double()
        expected = _reference(x64 @ w.T + b, t64)
        expected.backward()
        assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)
        torch.testing.assert_close(got_grad.double(), w.grad, rtol=1e-4, atol=1e-6)
    finally:
        dist.destroy_process_group()
