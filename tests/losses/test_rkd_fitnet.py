"""RKDFitNetLoss (registered as ``rkd-fitnet``) against the objective written out in float64 loops."""

import math

import torch

from rkd_pml.losses.registry import build_distillation_loss, distillation_loss_names
from rkd_pml.losses.rkd_fitnet import RKDFitNetLoss


def _huber(x: float) -> float:
    return 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5


def _dist(a, b):
    return math.sqrt(sum((u - v) ** 2 for u, v in zip(a, b)))


def reference(s, t, w, dw, aw, fw):
    """dw x RKD-D (normalised distances, mean over the pairs i != j) + aw x RKD-A (cosine of the
    angle at i, mean over the distinct triples) + fw x FitNet (mean over rows and teacher dims of
    (W s_i - t_i)^2), all by explicit loops."""
    n = len(s)
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]

    def normalised(x):
        mean = sum(_dist(x[i], x[j]) for i, j in pairs) / len(pairs)
        return {(i, j): _dist(x[i], x[j]) / mean for i, j in pairs}

    ds, dt = normalised(s), normalised(t)
    distance = sum(_huber(ds[p] - dt[p]) for p in pairs) / len(pairs)

    def cos(x, i, j, k):
        u = [a - b for a, b in zip(x[j], x[i])]
        v = [a - b for a, b in zip(x[k], x[i])]
        return sum(a * b for a, b in zip(u, v)) / (math.sqrt(sum(a * a for a in u)) * math.sqrt(sum(b * b for b in v)))

    triples = [(i, j, k) for i in range(n) for j in range(n) for k in range(n) if len({i, j, k}) == 3]
    angle = sum(_huber(cos(s, *tr) - cos(t, *tr)) for tr in triples) / len(triples)
    errors = [(sum(w[k][j] * s[i][j] for j in range(len(s[0]))) - t[i][k]) ** 2
              for i in range(n) for k in range(len(t[0]))]
    return dw * distance + aw * angle + fw * sum(errors) / len(errors)


def test_matches_the_written_out_objective_in_float64():
    torch.manual_seed(0)
    n, ds, dt = 6, 3, 5
    loss = RKDFitNetLoss(ds, dt, distance_weight=1.5, angle_weight=2.5, fitnet_weight=0.7).double()
    with torch.no_grad():
        loss.fitnet.regressor.weight.normal_()  # a map larger than the initial one
    s, t = torch.randn(n, ds, dtype=torch.float64), torch.randn(n, dt, dtype=torch.float64) * 2
    ours = loss(s, None, None, ref_emb=t)
    ref = reference(s.tolist(), t.tolist(), loss.fitnet.regressor.weight.detach().tolist(), 1.5, 2.5, 0.7)
    assert abs(ours.item() - ref) < 1e-10 * max(1.0, abs(ref))


def test_registered_under_rkd_fitnet_with_the_configs_weights_and_trainable_map():
    assert "rkd-fitnet" in distillation_loss_names()
    loss = build_distillation_loss("rkd-fitnet", {"distance_weight": 3.0, "angle_weight": 4.0}, 8, 16)
    assert isinstance(loss, RKDFitNetLoss) and loss.fitnet_weight == 1.0
    assert (loss.rkd.distance_weight, loss.rkd.angle_weight) == (3.0, 4.0)
    s, t = torch.randn(12, 8, requires_grad=True), torch.nn.functional.normalize(torch.randn(12, 16), dim=1)
    loss(s, None, None, ref_emb=t).backward()
    assert s.grad.abs().sum() > 0 and loss.fitnet.regressor.weight.grad is not None
    assert any(p is loss.fitnet.regressor.weight for p in loss.parameters())  # reaches the optimizer
