"""Cross-model (asymmetric) retrieval: queries from one set of embeddings, the gallery from another.

The reference is a plain brute-force search written here: all query-gallery distances with
torch.cdist in float64, the diagonal (the query's own image) masked, any same-class hit in
the top K, over the queries whose class has another image."""

import pytest
import torch
from torch.utils.data import Subset

from rkd_pml.data import load_dataset
from rkd_pml.evaluation import cross_knn_search, evaluate, evaluate_embeddings
from rkd_pml.models import EmbeddingModel

KS = (1, 2, 4, 8)


def brute_distances(queries, gallery):
    d = torch.cdist(queries.double(), gallery.double())
    d.fill_diagonal_(float("inf"))  # the query's own image is not in its gallery
    return d


def brute_asymmetric_recall(queries, gallery, labels, k):
    nearest = brute_distances(queries, gallery).topk(k, dim=1, largest=False).indices
    valid = (labels[:, None] == labels[None, :]).sum(1) > 1
    return (labels[nearest] == labels[:, None]).any(dim=1)[valid].double().mean().item()


def brute_asymmetric_r_precision(queries, gallery, labels):
    order = brute_distances(queries, gallery).argsort(dim=1)
    values = []
    for i in range(len(labels)):
        r = int((labels == labels[i]).sum()) - 1  # the same-class images other than the query's
        if r > 0:
            values.append((labels[order[i, :r]] == labels[i]).double().mean().item())
    return sum(values) / len(values)


@pytest.fixture
def pair():
    """Labels (7 classes, one of a single image), queries and a gallery that is a noisy copy of
    them: a query's own gallery embedding is often, not always, its nearest."""
    g = torch.Generator().manual_seed(3)
    labels = torch.cat([torch.arange(6).repeat_interleave(9), torch.tensor([6])])
    queries = torch.randn(len(labels), 8, generator=g) + 0.8 * torch.nn.functional.one_hot(labels % 8, 8)
    gallery = queries + 0.7 * torch.randn(queries.shape, generator=g)
    return queries, gallery, labels


def test_asymmetric_recall_matches_brute_force(pair):
    queries, gallery, labels = pair
    own_first = (torch.cdist(queries, gallery).argmin(dim=1) == torch.arange(len(labels))).double().mean()
    assert 0.2 < own_first < 0.95, own_first  # excluding by index, not the first column, is exercised
    metrics = evaluate_embeddings(queries, labels, ks=KS, gallery_embeddings=gallery)
    for k in KS:
        assert metrics[f"asymmetric_recall@{k}"] == pytest.approx(
            brute_asymmetric_recall(queries, gallery, labels, k), abs=1e-12)
    assert metrics["asymmetric_precision_at_1"] == pytest.approx(metrics["asymmetric_recall@1"], abs=1e-12)
    assert metrics["asymmetric_r_precision"] == pytest.approx(
        brute_asymmetric_r_precision(queries, gallery, labels), abs=1e-9)
    # beside them, the queries' own symmetric figures (gallery = the queries themselves)
    for k in KS:
        assert metrics[f"recall@{k}"] == pytest.approx(brute_asymmetric_recall(queries, queries, labels, k), abs=1e-12)
    assert metrics["asymmetric_recall@1"] != metrics["recall@1"]


def test_search_excludes_the_own_image_by_index(pair):
    queries, gallery, labels = pair
    n = len(labels)
    distances, indices = cross_knn_search(queries, gallery, n - 1, batch_size=16)
    assert indices.shape == (n, n - 1)
    assert not (indices == torch.arange(n)[:, None]).any()
    # every other image exactly once, nearest first, at its brute-force distance
    assert torch.equal(indices.sort(dim=1).values, torch.stack([torch.cat([torch.arange(i), torch.arange(i + 1, n)])
                                                               for i in range(n)]))
    expected = brute_distances(queries, gallery).sort(dim=1).values[:, : n - 1]
    assert torch.allclose(distances.double(), expected, atol=1e-5)


def test_embeddings_against_themselves_give_the_symmetric_figures(pair):
    queries, _, labels = pair
    metrics = evaluate_embeddings(queries, labels, ks=KS, gallery_embeddings=queries.clone())
    for name in ("recall@1", "recall@2", "recall@4", "recall@8", "precision_at_1", "r_precision",
                 "mean_average_precision_at_r"):
        assert metrics[f"asymmetric_{name}"] == pytest.approx(metrics[name], abs=1e-12), name


def test_width_mismatch_is_refused_naming_both_widths(pair):
    queries, gallery, labels = pair
    with pytest.raises(ValueError, match=r"6-d.*8-d.*same width") as exc:
        evaluate_embeddings(queries, labels, gallery_embeddings=gallery[:, :6])
    assert "\n" not in str(exc.value)


def test_models_own_preprocessing_and_self_gallery():
    """A model as its own gallery equals its symmetric figures; a gallery model with other input
    channels embeds its own view of the same images, scored as the brute-force reference."""
    torch.manual_seed(0)
    _, rgb = load_dataset("digits", image_size=16)
    _, grey = load_dataset("digits", image_size=16, in_chans=1)
    chosen = list(range(0, len(rgb), 8))
    student = EmbeddingModel("resnet10t", embedding_dim=8)
    teacher = EmbeddingModel("resnet10t", embedding_dim=8, in_chans=1, l2_normalize=True)
    own = evaluate(student, Subset(rgb, chosen), ks=KS, progress=False, gallery_model=student)
    for k in KS:
        assert own[f"asymmetric_recall@{k}"] == pytest.approx(own[f"recall@{k}"], abs=1e-12)
    cross = evaluate(student, Subset(rgb, chosen), ks=KS, progress=False, gallery_model=teacher,
                     gallery_dataset=Subset(grey, chosen))
    with torch.no_grad():
        queries = student.eval()(torch.stack([rgb[i][0] for i in chosen]))
        gallery = teacher.eval()(torch.stack([grey[i][0] for i in chosen]))
    labels = torch.as_tensor(rgb.labels[chosen])
    for k in KS:
        assert cross[f"asymmetric_recall@{k}"] == pytest.approx(brute_asymmetric_recall(queries, gallery, labels, k),
                                                                abs=1e-12)
    with pytest.raises(ValueError, match="4-d"):
        evaluate(student, Subset(rgb, chosen), progress=False, gallery_model=EmbeddingModel("resnet10t", embedding_dim=4))
