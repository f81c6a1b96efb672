"""The Triton kernel of the all-triplets angle term, checked on the CPU with Triton's
interpreter against the eager kernel in float64 (small batches: the interpreter is slow).

``TRITON_INTERPRET=1`` is set here, before the kernel module (and, where not yet done,
Triton) is imported; it only matters for ``backend="triton"``: ``"auto"`` picks Triton on
CUDA only.
"""

import importlib
import os
import sys
import warnings

os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from rkd_pml import RKDAngleLoss  # noqa: E402
from rkd_pml.functional import angle_backend, angle_tiles  # noqa: E402
from rkd_pml.functional.angle_tiles import angle_sums  # noqa: E402
from rkd_pml.functional.angle_triton import BLOCK_T, triton_angle_sums, triton_installed  # noqa: E402
from rkd_pml.functional.relations import relations  # noqa: E402



def needs_triton(test):
    """The ``triton`` marker, and a skip where Triton is not installed."""
    return pytest.mark.triton(pytest.mark.skipif(not triton_installed(), reason="Triton is not installed")(test))


if triton_installed() and "rkd_pml.functional.angle_triton_kernel" in sys.modules:
    importlib.reload(sys.modules["rkd_pml.functional.angle_triton_kernel"])  # decorated before the variable was set


def batch(n, ds=5, dt=7, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, ds, generator=g, dtype=dtype), torch.randn(n, dt, generator=g, dtype=dtype)


def sums(s, t, **kw):
    rs, rt = relations(s), relations(t)
    return angle_sums(rs.half_sq_dist, rs.inv_dist, rt.half_sq_dist, rt.inv_dist, **kw)


def max_rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


@needs_triton
@pytest.mark.parametrize("n", [8, 24, BLOCK_T + 8])  # one tile; one tile with padding; two tiles
@pytest.mark.parametrize("vertices", [None, (3, 7)])
@pytest.mark.parametrize("need_grad", [True, False])
def test_float64_equals_eager(n, vertices, need_grad):
    s, t = batch(n, seed=n)
    kw = dict(need_grad=need_grad, compute_dtype=torch.float64, vertices=vertices)
    got = sums(s, t, backend="triton", **kw)
    ref = sums(s, t, backend="eager", **kw)
    assert float(ref[0]) > 0
    assert float(got[0]) == pytest.approx(float(ref[0]), rel=1e-12)
    if need_grad:
        # h is symmetric: a pair's opposite-side gradient may sit at (b, c) or (c, b).
        assert max_rel(got[1] + got[1].T, ref[1] + ref[1].T) < 1e-12
        assert max_rel(got[2], ref[2]) < 1e-12
    else:
        assert got[1] is None and got[2] is None


def near_duplicate_batch(n, d, seed, offset):
    """Pairs at 1e-2 and 1e-3 of the norm, and an exact duplicate, in float32."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) + offset
    for src, dst, dist in [(0, 1, 1e-2), (2, 3, 1e-3), (5, 6, 1e-3)]:
        u = torch.randn(d, generator=g, dtype=torch.float64)
        x[dst] = x[src] + dist * x[src].norm() * u / u.norm()
    x[11] = x[4]
    return x.float()


@needs_triton
@pytest.mark.parametrize("offset", [0.0, 3.0])
def test_float32_error_against_float64(offset):
    """Float32 arithmetic with near-duplicate pairs (70 examples, three tiles): loss within
    3e-7 and gradient within 7e-5 (relative) of the float64 eager kernel on the same inputs,
    as the float32 eager kernel (most of the error is the relations' rounding to float32)."""
    s = near_duplicate_batch(70, 16, seed=6, offset=offset)
    t = F.normalize(near_duplicate_batch(70, 48, seed=7, offset=offset), dim=1)

    def loss_grad(x, y, backend):
        x = x.clone().requires_grad_(True)
        loss = RKDAngleLoss(backend=backend)(x, ref_emb=y)
        (grad,) = torch.autograd.grad(loss, x)
        return loss.detach().double(), grad.double()

    loss, grad = loss_grad(s, t, "triton")
    ref, ref_grad = loss_grad(s.double(), t.double(), "eager")
    assert torch.isfinite(grad).all()
    assert abs(float(loss - ref)) <= 3e-7 * float(ref)
    assert float((grad - ref_grad).norm() / ref_grad.norm()) <= 7e-5


@needs_triton
def test_second_derivative_is_the_exact_one():
    """create_graph through the Triton forward: the Hessian-vector product of the eager path."""
    s, t = batch(12, seed=3)
    v = torch.randn(12, 5, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    out = []
    for backend in ("triton", "eager"):
        x = s.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(RKDAngleLoss(backend=backend)(x, ref_emb=t), x, create_graph=True)
        (hvp,) = torch.autograd.grad((grad * v).sum(), x)
        out.append((grad.detach(), hvp))
    assert max_rel(out[0][0], out[1][0]) < 1e-12
    assert max_rel(out[0][1], out[1][1]) < 1e-12


# ------------------------------------------------------------- selection (no Triton needed)


def test_auto_picks_triton_on_cuda_float32_only(monkeypatch):
    monkeypatch.delenv(angle_backend.BACKEND_ENV, raising=False)
    monkeypatch.setattr(angle_backend, "triton_supports", lambda device: True)
    monkeypatch.setattr(angle_backend, "_FAILURES", {})
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert angle_backend.wants_triton("auto", cuda, torch.float32)
    assert not angle_backend.wants_triton("auto", cuda, torch.float64)
    assert not angle_backend.wants_triton("auto", cpu, torch.float32)
    assert not angle_backend.wants_triton("compiled", cuda, torch.float32)
    assert angle_backend.wants_triton("triton", cpu, torch.float32)
    monkeypatch.setenv(angle_backend.BACKEND_ENV, "eager")
    assert not angle_backend.wants_triton("auto", cuda, torch.float32)
    monkeypatch.setenv(angle_backend.BACKEND_ENV, "triton")
    assert angle_backend.wants_triton("auto", cpu, torch.float32)
    monkeypatch.setattr(angle_backend, "triton_supports", lambda device: False)
    monkeypatch.delenv(angle_backend.BACKEND_ENV)
    assert not angle_backend.wants_triton("auto", cuda, torch.float32)


def test_a_triton_failure_falls_back_once_and_is_remembered(monkeypatch):
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("no GPU compiler here")

    monkeypatch.delenv(angle_backend.BACKEND_ENV, raising=False)
    monkeypatch.setattr(angle_backend, "_FAILURES", {})
    monkeypatch.setattr(angle_backend, "_WARNED", set())
    monkeypatch.setattr(angle_backend, "triton_supports", lambda device: True)
    monkeypatch.setattr(angle_tiles, "triton_angle_sums", broken)
    # Let "auto" choose Triton on this CPU for float32 as it would on CUDA.
    real = angle_backend.wants_triton
    monkeypatch.setattr(angle_tiles, "wants_triton", lambda b, d, dt: real(b, torch.device("cuda"), dt))
    s, t = batch(10, dtype=torch.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a = sums(s, t, backend="auto", need_grad=True)
        b = sums(s, t, backend="auto", need_grad=True)
    assert len(calls) == 1
    assert sum("Triton RKD angle kernel failed" in str(w.message) for w in caught) == 1
    ref = sums(s, t, backend="eager", need_grad=True)
    assert float(a[0]) == float(b[0]) == float(ref[0])
    with pytest.raises(RuntimeError, match="backend='triton'"):
        sums(s, t, backend="triton", need_grad=True)
