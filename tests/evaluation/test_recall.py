"""Recall@K (and PML's metrics from the same search) against brute-force Recall@K, MAP@R and R-precision written here."""

import pytest
import torch

from rkd_pml.evaluation import evaluate_embeddings


def brute_force(embeddings, labels, ks):
    """Per-query Recall@K bounds over every tie-breaking: (pessimistic, optimistic), plus the
    mask of queries with another image of their class (others are dropped, as in PML)."""
    x = embeddings.double()
    d = torch.cdist(x, x)
    n = len(labels)
    d.fill_diagonal_(float("inf"))  # the query itself never counts
    same = labels[:, None] == labels[None, :]
    same.fill_diagonal_(False)
    has_pair = same.any(dim=1)
    low, high = {}, {}
    for k in ks:
        kk = min(k, n - 1)
        kth = d.sort(dim=1).values[:, kk - 1 : kk]  # distance of the K-th neighbour
        strictly_closer = (d < kth) & same
        at_kth = (d == kth) & same
        closer_count = (d < kth).sum(dim=1)
        tie_count = (d == kth).sum(dim=1)
        slots = kk - closer_count  # how many of the tied neighbours make it into the top K
        optimistic = strictly_closer.any(1) | (at_kth.any(1) & (slots > 0))
        # pessimistic: the tied different-class neighbours fill the slots first
        different_tied = tie_count - at_kth.sum(1)
        pessimistic = strictly_closer.any(1) | (at_kth.any(1) & (slots > different_tied))
        low[k] = pessimistic[has_pair].double().mean().item()
        high[k] = optimistic[has_pair].double().mean().item()
    return low, high, has_pair


def brute_force_at_r(embeddings, labels):
    """MAP@R and R-precision (Musgrave et al.) for data without distance ties."""
    d = torch.cdist(embeddings.double(), embeddings.double())
    d.fill_diagonal_(float("inf"))
    order = d.argsort(dim=1)
    maps, rps = [], []
    for i in range(len(labels)):
        r = int((labels == labels[i]).sum()) - 1
        if r == 0:
            continue
        hits = (labels[order[i, :r]] == labels[i]).double()
        precision = hits.cumsum(0) / torch.arange(1, r + 1)
        maps.append((precision * hits).sum().item() / r)
        rps.append(hits.mean().item())
    return sum(maps) / len(maps), sum(rps) / len(rps)


def lattice_data(seed, n=150, dim=3, classes=25):
    """Integer coordinates in a small box: many exactly tied distances and duplicate points;
    labels 100.. are singletons."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 3, (n, dim), generator=g).float()
    y = torch.randint(0, classes, (n,), generator=g)
    y[:6] = torch.arange(100, 106)
    return x, y


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recall_within_brute_force_bounds_with_ties(seed):
    x, y = lattice_data(seed)
    ks = (1, 2, 4, 8, 16)
    low, high, has_pair = brute_force(x, y, ks)
    assert (~has_pair).sum() >= 6
    result = evaluate_embeddings(x, y, ks=ks, metrics=("precision_at_1",))
    assert any(low[k] < high[k] for k in ks)  # the data really has decisive ties
    for k in ks:
        assert low[k] - 1e-12 <= result[f"recall@{k}"] <= high[k] + 1e-12, k
    assert result["precision_at_1"] == result["recall@1"]


def test_exact_on_data_without_ties_and_with_singletons():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(300, 8, generator=g)
    y = torch.randint(0, 40, (300,), generator=g)
    y[:10] = torch.arange(1000, 1010)  # classes of one image
    ks = (1, 3, 5, 10, 1000)
    low, high, _ = brute_force(x, y, ks)
    assert low == high
    result = evaluate_embeddings(x, y, ks=ks)
    for k in ks:
        assert result[f"recall@{k}"] == pytest.approx(low[k], abs=1e-12)
    assert result["recall@1000"] == 1.0  # K beyond N - 1: every non-singleton query finds a match
    map_r, r_precision = brute_force_at_r(x, y)
    assert result["mean_average_precision_at_r"] == pytest.approx(map_r, abs=1e-9)
    assert result["r_precision"] == pytest.approx(r_precision, abs=1e-9)


def test_duplicates_of_another_class_do_not_hide_the_query():
    # Points 0 and 1 coincide but differ in class: whichever of the two the search lists
    # first, the query itself must be the one left out (dropping "the first neighbour", as
    # the official code does, would count the query as its own match).
    x = torch.tensor([[0.0], [0.0], [3.0], [3.2], [12.0], [17.0], [17.5]])
    y = torch.tensor([0, 1, 0, 0, 1, 2, 2])
    low, high, _ = brute_force(x, y, (1, 2, 4))
    assert low == high == pytest.approx({1: 4 / 7, 2: 5 / 7, 4: 6 / 7})
    result = evaluate_embeddings(x, y, ks=(1, 2, 4), metrics=())
    assert [result[f"recall@{k}"] for k in (1, 2, 4)] == pytest.approx([4 / 7, 5 / 7, 6 / 7])
    reversed_order = evaluate_embeddings(x.flip(0), y.flip(0), ks=(1, 2, 4), metrics=())
    assert reversed_order == pytest.approx(result)


def test_large_classes_raise_k_for_map_at_r():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(120, 4, generator=g)
    y = torch.arange(120) % 3  # classes of 40 images, far more than max(ks) = 2
    result = evaluate_embeddings(x, y, ks=(1, 2))
    map_r, r_precision = brute_force_at_r(x, y)
    assert result["mean_average_precision_at_r"] == pytest.approx(map_r, abs=1e-9)
    assert result["r_precision"] == pytest.approx(r_precision, abs=1e-9)


def test_no_pairs_at_all_gives_nan():
    result = evaluate_embeddings(torch.randn(4, 2), torch.arange(4), ks=(1,), metrics=())
    assert result["recall@1"] != result["recall@1"]


@pytest.mark.parametrize("ks", [(), (0,), (1.5,), (True,)])
def test_bad_ks(ks):
    with pytest.raises(ValueError, match="ks"):
        evaluate_embeddings(torch.randn(4, 2), torch.arange(4) % 2, ks=ks)


def test_metric_names_and_order():
    result = evaluate_embeddings(torch.randn(20, 3), torch.arange(20) % 4, ks=(8, 1, 2))
    assert list(result) == [
        "recall@1",
        "recall@2",
        "recall@8",
        "mean_average_precision_at_r",
        "precision_at_1",
        "r_precision",
    ]


def test_clustering_metrics_without_faiss():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0]])
    y = torch.arange(60) % 3
    x = centres[y] + torch.randn(60, 2, generator=g)
    result = evaluate_embeddings(x, y, ks=(1,), metrics=("NMI", "AMI"))
    assert result["NMI"] == pytest.approx(1.0) and result["AMI"] == pytest.approx(1.0)
    shuffled = evaluate_embeddings(torch.randn(60, 2, generator=g), y, ks=(1,), metrics=("NMI",))
    assert shuffled["NMI"] < 0.5
