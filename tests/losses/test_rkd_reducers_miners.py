"""RKD with PML's reducers, miners, distances and regularisers: hand-computed expectations."""

import pytest
import torch
from pytorch_metric_learning import miners, reducers, regularizers
from pytorch_metric_learning.distances import CosineSimilarity, DotProductSimilarity, LpDistance

from rkd_pml import RKDAngleLoss, RKDDistanceLoss, RKDLoss


def _huber(x: float) -> float:
    return 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5


def _mean_dist(x: torch.Tensor) -> float:
    n = len(x)
    return sum(float((x[i] - x[j]).norm()) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))


def _pair_loss(s, t, i, j) -> float:
    return _huber(float((s[i] - s[j]).norm()) / _mean_dist(s) - float((t[i] - t[j]).norm()) / _mean_dist(t))


def _cos(x, v, a, b) -> float:
    u, w = x[a] - x[v], x[b] - x[v]
    return float(u @ w / (u.norm() * w.norm()))


def _triplet_loss(s, t, v, a, b) -> float:
    return _huber(_cos(s, v, a, b) - _cos(t, v, a, b))


def _all_pairs(n):
    return [(i, j) for i in range(n) for j in range(n) if i != j]


def _all_triplets(n):
    return [(v, a, b) for v in range(n) for a in range(n) for b in range(n) if len({v, a, b}) == 3]


@pytest.fixture
def batch():
    n = 8
    s = torch.randn(n, 3, dtype=torch.float64)
    t = torch.randn(n, 5, dtype=torch.float64) * 2
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])
    return s, t, labels


def test_pair_miner_restricts_distance_loss(batch):
    s, t, labels = batch
    median = float(torch.cdist(s, s).median())
    mined = miners.PairMarginMiner(pos_margin=median, neg_margin=median)(s, labels)
    a1, p, a2, neg = (x.tolist() for x in mined)
    pairs = list(zip(a1, p)) + list(zip(a2, neg))
    assert 0 < len(pairs) < len(_all_pairs(8))
    expected = sum(_pair_loss(s, t, i, j) for i, j in pairs) / len(pairs)
    assert float(RKDDistanceLoss()(s, labels, mined, ref_emb=t)) == pytest.approx(expected, rel=1e-10)


def test_triplet_miner_restricts_angle_loss(batch):
    s, t, labels = batch
    mined = miners.TripletMarginMiner(margin=10.0, type_of_triplets="all")(s, labels)
    trips = list(zip(*(x.tolist() for x in mined)))
    assert 0 < len(trips)
    expected = sum(_triplet_loss(s, t, v, a, b) for v, a, b in trips) / len(trips)
    assert float(RKDAngleLoss()(s, labels, mined, ref_emb=t)) == pytest.approx(expected, rel=1e-10)


def test_mixed_forms_are_converted_with_pml(batch):
    s, t, labels = batch
    trips = miners.TripletMarginMiner(margin=10.0, type_of_triplets="all")(s, labels)
    a, p, n = (x.tolist() for x in trips)
    pairs = list(zip(a, p)) + list(zip(a, n))
    expected_d = sum(_pair_loss(s, t, i, j) for i, j in pairs) / len(pairs)
    assert float(RKDDistanceLoss()(s, labels, trips, ref_emb=t)) == pytest.approx(expected_d, rel=1e-10)

    pair_tuple = miners.MultiSimilarityMiner(epsilon=10.0)(s, labels)
    a1, p, a2, neg = (x.tolist() for x in pair_tuple)
    converted = [(x, y, z) for x, y in zip(a1, p) for x2, z in zip(a2, neg) if x == x2]
    expected_a = sum(_triplet_loss(s, t, *tr) for tr in converted) / len(converted)
    assert float(RKDAngleLoss()(s, labels, pair_tuple, ref_emb=t)) == pytest.approx(expected_a, rel=1e-10)


def test_mu_comes_from_all_pairs_even_when_mined(batch):
    s, t, labels = batch
    one_pair = (torch.tensor([0]), torch.tensor([1]), torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long))
    expected = _pair_loss(s, t, 0, 1)
    assert float(RKDDistanceLoss()(s, labels, one_pair, ref_emb=t)) == pytest.approx(expected, rel=1e-10)


def test_rkd_da_with_mined_tuples_is_the_weighted_sum(batch):
    s, t, labels = batch
    mined = miners.TripletMarginMiner(margin=10.0, type_of_triplets="all")(s, labels)
    da = RKDLoss(distance_weight=0.5, angle_weight=3.0)(s, labels, mined, ref_emb=t)
    d = RKDDistanceLoss()(s, labels, mined, ref_emb=t)
    a = RKDAngleLoss()(s, labels, mined, ref_emb=t)
    assert float(da) == pytest.approx(float(0.5 * d + 3.0 * a), rel=1e-12)


def _per_tuple(kind, s, t):
    if kind == "distance":
        tuples = _all_pairs(len(s))
        return tuples, [_pair_loss(s, t, *x) for x in tuples]
    tuples = _all_triplets(len(s))
    return tuples, [_triplet_loss(s, t, *x) for x in tuples]


LOSS_OF = {"distance": RKDDistanceLoss, "angle": RKDAngleLoss}


@pytest.mark.parametrize("kind", ["distance", "angle"])
def test_sum_reducer(kind, batch):
    s, t, _ = batch
    _, values = _per_tuple(kind, s, t)
    got = LOSS_OF[kind](reducer=reducers.SumReducer())(s, ref_emb=t)
    assert float(got) == pytest.approx(sum(values), rel=1e-10)


@pytest.mark.parametrize("kind", ["distance", "angle"])
def test_threshold_and_avg_non_zero_reducers(kind, batch):
    s, t, _ = batch
    _, values = _per_tuple(kind, s, t)
    distinct = sorted(set(round(v, 9) for v in values))
    low = (distinct[len(distinct) // 2] + distinct[len(distinct) // 2 + 1]) / 2
    kept = [v for v in values if v > low]
    got = LOSS_OF[kind](reducer=reducers.ThresholdReducer(low=low))(s, ref_emb=t)
    assert float(got) == pytest.approx(sum(kept) / len(kept), rel=1e-10)
    nonzero = [v for v in values if v > 0]
    got = LOSS_OF[kind](reducer=reducers.AvgNonZeroReducer())(s, ref_emb=t)
    assert float(got) == pytest.approx(sum(nonzero) / len(nonzero), rel=1e-10)


@pytest.mark.parametrize("kind", ["distance", "angle"])
def test_class_weighted_reducer_uses_the_anchor_label(kind, batch):
    s, t, labels = batch
    weights = torch.tensor([1.0, 3.0, 0.5])
    tuples, values = _per_tuple(kind, s, t)
    expected = sum(v * float(weights[labels[tup[0]]]) for tup, v in zip(tuples, values)) / len(values)
    got = LOSS_OF[kind](reducer=reducers.ClassWeightedReducer(weights))(s, labels, ref_emb=t)
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_per_anchor_reducer_on_pairs(batch):
    s, t, _ = batch
    n = len(s)
    per_anchor = [sum(_pair_loss(s, t, i, j) for j in range(n) if j != i) / (n - 1) for i in range(n)]
    got = RKDDistanceLoss(reducer=reducers.PerAnchorReducer())(s, ref_emb=t)
    assert float(got) == pytest.approx(sum(per_anchor) / n, rel=1e-10)


@pytest.mark.parametrize("kind", ["distance", "angle"])
def test_do_nothing_reducer_returns_every_tuple(kind, batch):
    s, t, _ = batch
    tuples, values = _per_tuple(kind, s, t)
    out = LOSS_OF[kind](reducer=reducers.DoNothingReducer())(s, ref_emb=t)["loss"]
    got = dict(zip(zip(*(i.tolist() for i in out["indices"])), out["losses"].tolist()))
    assert set(got) == set(tuples)
    for tup, v in zip(tuples, values):
        assert got[tup] == pytest.approx(v, rel=1e-10, abs=1e-14)


def test_embedding_regularizer_is_added(batch):
    s, t, _ = batch
    reg = regularizers.LpRegularizer(p=2)
    got = RKDLoss(embedding_regularizer=reg, embedding_reg_weight=0.1)(s, ref_emb=t)
    plain = RKDLoss()(s, ref_emb=t)
    assert float(got) == pytest.approx(float(plain) + 0.1 * float(s.norm(dim=1).mean()), rel=1e-10)


def test_normalize_embeddings_is_honoured(batch):
    s, t, _ = batch
    fn = RKDLoss(distance=LpDistance(normalize_embeddings=True))
    expected = RKDLoss()(torch.nn.functional.normalize(s, dim=1), ref_emb=torch.nn.functional.normalize(t, dim=1))
    assert float(fn(s, ref_emb=t)) == pytest.approx(float(expected), rel=1e-10)
    assert float(RKDLoss()(s, ref_emb=t)) != pytest.approx(float(expected), rel=1e-3)


@pytest.mark.parametrize(
    "distance", [CosineSimilarity(), DotProductSimilarity(), LpDistance(p=1), LpDistance(power=2)]
)
def test_distances_that_cannot_be_honoured_are_rejected(distance):
    with pytest.raises(ValueError, match="Euclidean"):
        RKDLoss(distance=distance)


@pytest.mark.parametrize("loss_cls", [RKDDistanceLoss, RKDAngleLoss, RKDLoss])
def test_no_mined_tuple_gives_zero_that_backpropagates(loss_cls, batch):
    s, t, labels = batch
    s = s.clone().requires_grad_(True)
    empty = tuple(torch.tensor([], dtype=torch.long) for _ in range(3))
    loss = loss_cls()(s, labels, empty, ref_emb=t)
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.equal(s.grad, torch.zeros_like(s))


@pytest.mark.parametrize("backend", ["eager", "compiled"])
def test_backends_give_the_same_loss(backend, batch):
    s, t, _ = batch
    expected = RKDLoss(backend="eager")(s, ref_emb=t)
    assert float(RKDLoss(backend=backend)(s, ref_emb=t)) == pytest.approx(float(expected), rel=1e-10)


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="backend must be one of"):
        RKDAngleLoss(backend="cuda-graphs")
