"""Recall@K from one exact k-nearest-neighbour search, next to PML's own retrieval metrics.

Recall@K: the fraction of queries with at least one same-class image among their K nearest
references (Euclidean distance on the embeddings as given, the query itself excluded). The
package computes it itself from the neighbours' labels (:func:`recall_at_k`); PML's
``AccuracyCalculator`` adds its own metrics (``precision_at_1`` = Recall@1, ``r_precision``,
``mean_average_precision_at_r``, ``NMI``, ...) from the same search, handed to it by
:class:`PrecomputedKNN`, so the search runs once.

Classes with a single image: as everywhere in PML, a query whose class has no other image
is dropped from every kNN metric (it cannot be retrieved); it still serves as a reference
(a distractor) for the other queries.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from .._pml import AccuracyCalculator, CustomKNN, LpDistance

#: PML metric names whose value depends on seeing every same-class reference.
AT_R_METRICS = ("r_precision", "mean_average_precision_at_r")
#: PML metrics that need a clustering instead of a kNN search.
CLUSTERING_METRICS = ("NMI", "AMI")


def check_ks(ks: Iterable[int]) -> tuple[int, ...]:
    """Sorted distinct Ks; ValueError unless they are positive ints."""
    ks = tuple(ks)
    if not ks or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 for k in ks):
        raise ValueError(f"ks must be positive ints, got {ks!r}")
    return tuple(sorted({int(k) for k in ks}))


def knn_search(embeddings: Tensor, k: int, batch_size: int = 512) -> tuple[Tensor, Tensor]:
    """The ``k`` nearest other rows of each row of ``embeddings`` ``(N, D)``, Euclidean.

    Returns distances and indices ``(N, k)``, nearest first; the query itself is excluded
    (even when an exact duplicate of another class sits at distance 0). Exact and blockwise
    (``batch_size`` query rows at a time): memory O(batch_size * N + N * k).
    """
    knn = CustomKNN(LpDistance(p=2, power=1, normalize_embeddings=False), batch_size=batch_size)
    return knn(embeddings, k, embeddings, True)


def recall_at_k(knn_labels: Tensor, query_labels: Tensor, ks: Sequence[int], valid: Tensor) -> dict[int, float]:
    """Recall@K for each K from the labels of the nearest references.

    Args:
        knn_labels: ``(Nq, k)`` labels of each query's neighbours, nearest first (k >= max(ks)
            unless fewer references exist).
        query_labels: ``(Nq,)``.
        ks: the Ks.
        valid: ``(Nq,)`` bool, queries that have another image of their class.

    Returns ``{K: recall}``; NaN when no query is valid.
    """
    hits = knn_labels[valid] == query_labels[valid, None]
    if hits.shape[0] == 0:
        return {k: float("nan") for k in ks}
    return {k: float(hits[:, :k].any(dim=1).double().mean()) for k in ks}


class PrecomputedKNN:
    """A ``knn_func`` for PML's AccuracyCalculator that returns a search already made.

    ``__call__(query, k, reference, ref_includes_query)`` gives the first ``k`` columns of
    the stored ``(distances, indices)``; the calculator must ask about the same query set.
    """

    def __init__(self, distances: Tensor, indices: Tensor):
        self.distances, self.indices = distances, indices

    def __call__(self, query: Tensor, k: int, reference: Tensor | None = None, ref_includes_query: bool = False):
        if len(query) != len(self.indices) or k > self.indices.shape[1]:
            raise ValueError(
                f"precomputed kNN holds {tuple(self.indices.shape)} neighbours; asked for k={k} of {len(query)} queries"
            )
        return self.distances[:, :k], self.indices[:, :k]


class SklearnKMeans:
    """k-means with scikit-learn for PML's clustering metrics (NMI, AMI) without faiss.

    ``__call__(x: (N, D), num_clusters) -> (N,)`` cluster ids. Slow for many clusters
    (e.g. SOP's 11,316): enable the clustering metrics on small test sets only.
    """

    def __init__(self, n_init: int = 1, seed: int = 0):
        self.n_init = n_init
        self.seed = seed

    def __call__(self, x: Tensor, num_clusters: int) -> Tensor:
        from sklearn.cluster import KMeans

        data = x.detach().cpu().to(torch.float64).numpy()
        labels = KMeans(num_clusters, n_init=self.n_init, random_state=self.seed).fit_predict(data)
        return torch.from_numpy(np.asarray(labels, dtype=np.int64))


def same_label(a: Tensor, b: Tensor) -> Tensor:
    """Elementwise label equality (broadcasting), as PML's default comparison."""
    return torch.eq(a, b)


def pml_metrics(
    embeddings: Tensor, labels: Tensor, metrics: Sequence[str], knn: tuple[Tensor, Tensor]
) -> dict[str, float]:
    """PML's own metrics (``precision_at_1``, ``r_precision``, MAP@R, NMI, ...) of every row
    queried against all the others, reusing the search ``knn`` (see :func:`knn_search`)."""
    if not metrics:
        return {}
    calculator = AccuracyCalculator(
        include=tuple(metrics),
        # the largest class less the query: what the @R metrics need (no more than was searched)
        k="max_bin_count" if set(AT_R_METRICS) & set(metrics) else int(knn[1].shape[1]),
        knn_func=PrecomputedKNN(*knn),
        kmeans_func=SklearnKMeans(),
        device=embeddings.device,
        # Plain equality, not PML's EQUALITY object: PML then counts the references of each
        # class in O(N) memory instead of a (classes x N) int64 matrix (GBs on SOP). PML
        # refuses a comparison function with its clustering metrics, which are opt-in.
        label_comparison_fn=None if set(CLUSTERING_METRICS) & set(metrics) else same_label,
    )
    return {name: float(value) for name, value in calculator.get_accuracy(embeddings, labels).items()}


def retrieval_metrics(
    embeddings: Tensor,
    labels: Tensor,
    ks: Iterable[int] = (1, 2, 4, 8),
    metrics: Sequence[str] = (),
    knn_batch_size: int = 512,
) -> dict[str, float]:
    """``{"recall@K": ...}`` for each K, then the PML ``metrics`` (sorted by name), from one
    search with k = max(max(ks), largest class - 1 when an @R metric is asked), capped at N - 1."""
    ks = check_ks(ks)
    n = len(labels)
    counts = torch.bincount(torch.unique(labels, return_inverse=True)[1])
    k = max(ks)
    if set(AT_R_METRICS) & set(metrics):
        k = max(k, int(counts.max()) - 1)
    knn = knn_search(embeddings, max(1, min(k, n - 1)), knn_batch_size)
    valid = counts[torch.unique(labels, return_inverse=True)[1]] > 1
    recalls = recall_at_k(labels[knn[1]], labels, ks, valid)
    out = {f"recall@{k}": value for k, value in recalls.items()}
    pml = pml_metrics(embeddings, labels, tuple(metrics), knn)
    out.update({name: pml[name] for name in sorted(pml)})
    return out
