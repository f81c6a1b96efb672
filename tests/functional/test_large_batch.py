"""The tiled all-triplets angle loss: exact in float64, accurate in float32, O(N^2) memory,
the same through every backend."""

import warnings

import pytest
import torch
from torch.nn import functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from rkd_pml.functional import angle_backend, fused
from rkd_pml.functional.angle import rkd_angle_all_triplets_mean
from rkd_pml.functional.relations import relations

#: Not a multiple of the CPU tile (64): two vertex blocks, a diagonal and an off-diagonal
#: end tile, and padding.
N = 70


def _compiled_available() -> bool:
    try:
        fused.compiled_kernel(torch.device("cpu"), torch.float64, fused.tile_size("cpu"), True)
    except fused.CompiledKernelUnavailable:
        return False
    return True


needs_compile = pytest.mark.skipif("not _compiled_available()", reason="torch.compile unavailable")


def reference_angle_mean(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """The official formulation (unit difference vectors, all N^3 cosines), float64, as a
    mean over ordered triplets of distinct examples; an exact duplicate (zero difference)
    gives a zero vector without gradient."""

    def cosines(x):
        diff = x.unsqueeze(0) - x.unsqueeze(1)  # diff[a, b] = x_b - x_a
        norm = diff.norm(dim=2, keepdim=True)
        safe = torch.where(norm > 0, norm, torch.ones_like(norm))
        unit = torch.where(norm > 0, diff / safe, torch.zeros_like(diff))
        return torch.bmm(unit, unit.transpose(1, 2))

    n = len(student)
    with torch.no_grad():
        target = cosines(teacher.double())
    err = F.smooth_l1_loss(cosines(student.double()), target, reduction="none", beta=1.0)
    idx = torch.arange(n)
    distinct = (idx[:, None, None] != idx[None, :, None]) & (idx[:, None, None] != idx[None, None, :])
    distinct &= idx[None, :, None] != idx[None, None, :]
    return err[distinct].sum() / (n * (n - 1) * (n - 2))


def ours(student, teacher, backend):
    return rkd_angle_all_triplets_mean(relations(student), relations(teacher), backend=backend)


def loss_and_grad(fn, student, teacher, *args):
    s = student.detach().clone().requires_grad_(True)
    loss = fn(s, teacher, *args)
    (grad,) = torch.autograd.grad(loss, s)
    return loss.detach().double(), grad.double()


def rel(a, b):
    return float((a - b).norm() / b.norm())


def near_duplicate_batch(n, d, dtype, seed, offset=3.0):
    """An uncentred batch with near-duplicate pairs (1e-2 and 1e-3 of the embedding norm)
    and exact duplicates."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) + offset
    for src, dst, rel_dist in [(0, 1, 1e-2), (2, 3, 1e-3), (5, 6, 1e-2), (7, 8, 1e-3), (9, 10, 1e-3)]:
        u = torch.randn(d, generator=g, dtype=torch.float64)
        x[dst] = x[src] + rel_dist * x[src].norm() * u / u.norm()
    x[11] = x[4]  # exact duplicates
    x[12] = x[4]
    return x.to(dtype)


# ---------------------------------------------------------------- float64: exact identities


@pytest.mark.parametrize("backend", ["eager", pytest.param("compiled", marks=needs_compile)])
def test_float64_matches_official_formula(backend):
    g = torch.Generator().manual_seed(1)
    s = torch.randn(N, 16, generator=g, dtype=torch.float64)
    t = torch.randn(N, 40, generator=g, dtype=torch.float64) * 3
    loss, grad = loss_and_grad(ours, s, t, backend)
    ref, ref_grad = loss_and_grad(reference_angle_mean, s, t)
    assert rel(loss, ref) < 1e-10
    assert rel(grad, ref_grad) < 1e-10


@pytest.mark.parametrize("backend", ["eager", pytest.param("compiled", marks=needs_compile)])
def test_float64_with_exact_duplicates(backend):
    s = near_duplicate_batch(N, 12, torch.float64, seed=2)
    t = near_duplicate_batch(N, 20, torch.float64, seed=3)
    t[20] = t[21]  # a teacher-only duplicate
    loss, grad = loss_and_grad(ours, s, t, backend)
    ref, ref_grad = loss_and_grad(reference_angle_mean, s, t)
    assert torch.isfinite(grad).all()
    assert rel(loss, ref) < 1e-9
    assert rel(grad, ref_grad) < 1e-8


@pytest.mark.parametrize("n", [3, 4, 63, 64, 65])
def test_tile_boundaries(n):
    g = torch.Generator().manual_seed(n)
    s = torch.randn(n, 5, generator=g, dtype=torch.float64)
    t = torch.randn(n, 7, generator=g, dtype=torch.float64)
    ref, ref_grad = loss_and_grad(reference_angle_mean, s, t)
    for tile in (16, 64):
        fn = lambda a, b: rkd_angle_all_triplets_mean(relations(a), relations(b), backend="eager", tile=tile)  # noqa: E731
        loss, grad = loss_and_grad(fn, s, t)
        assert rel(loss, ref) < 1e-10 and rel(grad, ref_grad) < 1e-10, tile


@needs_compile
def test_compiled_equals_eager_without_grad():
    s = near_duplicate_batch(N, 9, torch.float32, seed=4)
    t = near_duplicate_batch(N, 30, torch.float32, seed=5)
    with torch.no_grad():
        a = ours(s, t, "compiled")
        b = ours(s, t, "eager")
    assert abs(float(a) - float(b)) <= 1e-5 * float(b)  # float32 sums in different orders


# ------------------------------------------------------------------- float32: accuracy


@pytest.mark.parametrize("backend", ["eager", pytest.param("compiled", marks=needs_compile)])
@pytest.mark.parametrize("offset", [0.0, 3.0])
def test_float32_accuracy_with_near_duplicates(backend, offset):
    s = near_duplicate_batch(N, 16, torch.float32, seed=6, offset=offset)
    t = F.normalize(near_duplicate_batch(N, 48, torch.float32, seed=7, offset=offset), dim=1)
    loss, grad = loss_and_grad(ours, s, t, backend)
    ref, ref_grad = loss_and_grad(reference_angle_mean, s.double(), t.double())
    assert torch.isfinite(grad).all()
    assert rel(loss, ref) < 1e-4
    assert rel(grad, ref_grad) < 1e-3


@pytest.mark.parametrize("distance", [1e-2, 1e-3, 1e-4])
def test_float32_error_grows_as_the_inverse_distance_of_the_nearest_pair(distance):
    """The float32 error is set by the nearest pair (its cosines are ill-conditioned): over
    four batches of 70 (centred and uncentred), two pairs at ``distance`` of the norm and an
    exact duplicate, the gradient stays within ``3e-7 / distance`` and the loss within
    ``5e-7 + 3e-10 / distance`` (relative) of the official formula in float64 (measured worst
    cases at 1e-2, 1e-3, 1e-4: gradient 6.0e-6, 1.1e-4, 6.6e-4; loss 1.2e-7, 1.4e-7, 5.5e-7)."""
    worst_loss = worst_grad = 0.0
    for seed in range(2):
        for offset in (0.0, 3.0):
            g = torch.Generator().manual_seed(seed)
            xs = []
            for d in (16, 48):
                x = torch.randn(N, d, generator=g, dtype=torch.float64) + offset
                for src, dst in [(0, 1), (2, 3)]:
                    u = torch.randn(d, generator=g, dtype=torch.float64)
                    x[dst] = x[src] + distance * x[src].norm() * u / u.norm()
                x[11] = x[4]
                xs.append(x.float())
            s, t = xs[0], F.normalize(xs[1], dim=1)
            loss, grad = loss_and_grad(ours, s, t, "eager")
            ref, ref_grad = loss_and_grad(reference_angle_mean, s.double(), t.double())
            worst_loss, worst_grad = max(worst_loss, rel(loss, ref)), max(worst_grad, rel(grad, ref_grad))
    assert worst_grad <= 3e-7 / distance
    assert worst_loss <= 5e-7 + 3e-10 / distance


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_get_gradient_in_their_dtype(dtype):
    s = torch.randn(N, 8).to(dtype).requires_grad_(True)
    t = torch.randn(N, 12).to(dtype)
    loss = ours(s, t, "eager")
    loss.backward()
    assert s.grad.dtype == dtype and torch.isfinite(s.grad).all()
    ref = reference_angle_mean(s.detach().double(), t.double())
    assert abs(float(loss.detach()) - float(ref)) < 1e-4 * float(ref)


# ----------------------------------------------------------------- memory: O(N^2) only


class _LargestTensor(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_no_n_cubed_or_n2d_tensor_is_saved_or_created():
    n, d, t_dim = 200, 32, 96
    s = torch.randn(n, d, requires_grad=True)
    t = torch.randn(n, t_dim)
    saved = []

    def pack(x):
        saved.append(x.numel())
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x), _LargestTensor() as mode:
        loss = ours(s, t, "eager")
    loss.backward()
    assert max(saved) <= n * n
    tile = fused.tile_size("cpu")
    # the working block is one tile (T^3), far below N^3 and N^2 D
    assert mode.largest <= max(tile**3, n * max(d, t_dim), n * n)
    assert mode.largest < n * n * d and mode.largest < n**3 // 16


def test_compiled_backend_saves_only_n_squared():
    if not _compiled_available():
        pytest.skip("torch.compile unavailable")
    n = 130
    s, t = torch.randn(n, 8, requires_grad=True), torch.randn(n, 16)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda x: saved.append(x.numel()) or x, lambda x: x):
        loss = ours(s, t, "compiled")
    loss.backward()
    assert max(saved) <= n * n


# ------------------------------------------------------------------- backend selection


def test_backend_resolution(monkeypatch):
    monkeypatch.delenv(fused.BACKEND_ENV, raising=False)
    assert fused.resolve_backend("eager", 10_000) == "eager"
    assert fused.resolve_backend("compiled", 3) == "compiled"
    assert fused.resolve_backend("auto", fused.AUTO_COMPILE_MIN_BATCH - 1) == "eager"
    monkeypatch.setenv(fused.BACKEND_ENV, "eager")
    assert fused.resolve_backend("auto", 10_000) == "eager"
    with pytest.raises(ValueError):
        fused.resolve_backend("fast", 10)


def test_compile_failure_is_caught_once_and_remembered(monkeypatch):
    calls = []

    def broken_compile(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken_compile)
    monkeypatch.delenv(fused.BACKEND_ENV, raising=False)
    # fresh caches, so the real kernels are untouched
    monkeypatch.setattr(angle_backend, "_COMPILED", {})
    monkeypatch.setattr(angle_backend, "_FAILURES", {})
    monkeypatch.setattr(angle_backend, "_WARNED", set())
    tile = 5
    s, t = torch.randn(12, 4, dtype=torch.float64), torch.randn(12, 6, dtype=torch.float64)
    rel_s, rel_t = relations(s.requires_grad_(True)), relations(t)
    monkeypatch.setattr(angle_backend, "AUTO_COMPILE_MIN_BATCH", 0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a = rkd_angle_all_triplets_mean(rel_s, rel_t, backend="auto", tile=tile)
        b = rkd_angle_all_triplets_mean(rel_s, rel_t, backend="auto", tile=tile)
    assert len(calls) == 1  # tried once, remembered
    assert sum("torch.compile is unavailable" in str(w.message) for w in caught) == 1
    ref = rkd_angle_all_triplets_mean(rel_s, rel_t, backend="eager", tile=tile)
    assert float(a.detach()) == float(b.detach()) == float(ref.detach())
    with pytest.raises(RuntimeError, match="backend='compiled'"):
        rkd_angle_all_triplets_mean(rel_s, rel_t, backend="compiled", tile=tile)
    assert len(calls) == 1 and ("cpu", torch.float64, tile, True) in fused.compile_failures()


def test_forward_without_grad_skips_the_gradient(monkeypatch):
    seen = []
    original = fused.angle_sums

    def spy(*args, **kwargs):
        seen.append(kwargs["need_grad"])
        return original(*args, **kwargs)

    monkeypatch.setattr(fused, "angle_sums", spy)
    s, t = torch.randn(10, 3, requires_grad=True), torch.randn(10, 5)
    with torch.no_grad():
        a = ours(s, t, "eager")
    b = ours(s, t, "eager")
    assert seen == [False, True] and float(a) == pytest.approx(float(b.detach()), rel=1e-6)
