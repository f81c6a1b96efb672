"""Recall@K for any Ks as an extension of PML's AccuracyCalculator (pure torch, no faiss).

Recall@K: the fraction of queries with at least one same-class image among their K nearest
references (Euclidean distance, the query itself excluded when the references include the
queries). It sits next to PML's own metrics (``precision_at_1`` = Recall@1, ``r_precision``,
``mean_average_precision_at_r``, ``NMI``, ...), all computed from one k-nearest-neighbour
search with k = max(max(Ks), largest class size - 1), k capped at the number of references.

Classes with a single image: as everywhere in PML, a query whose class has no other image
in the references is dropped from every kNN metric (it cannot be retrieved); it still
serves as a reference (a distractor) for the other queries.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.utils.accuracy_calculator import (
    AccuracyCalculator,
    maybe_get_avg_of_avgs,
    nan_accuracy,
    try_getting_not_lone_labels,
)
from pytorch_metric_learning.utils.inference import CustomKNN

#: PML metric names whose value depends on seeing every same-class reference.
AT_R_METRICS = ("r_precision", "mean_average_precision_at_r")


def recall_metric_name(k: int) -> str:
    """PML-style metric name of Recall@k: ``recall_at_<k>``."""
    return f"recall_at_{k}"


def same_label(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elementwise label equality (broadcasting), as PML's default comparison."""
    return torch.eq(a, b)


class SklearnKMeans:
    """k-means with scikit-learn for PML's clustering metrics (NMI, AMI) without faiss.

    ``__call__(x: (N, D), num_clusters) -> (N,)`` cluster ids. Slow for many clusters
    (e.g. SOP's 11,316): enable the clustering metrics on small test sets only.
    """

    def __init__(self, n_init: int = 1, seed: int = 0):
        self.n_init = n_init
        self.seed = seed

    def __call__(self, x: torch.Tensor, num_clusters: int) -> torch.Tensor:
        from sklearn.cluster import KMeans

        data = x.detach().cpu().to(torch.float64).numpy()
        labels = KMeans(num_clusters, n_init=self.n_init, random_state=self.seed).fit_predict(data)
        return torch.from_numpy(np.asarray(labels, dtype=np.int64))


class RecallAtKCalculator(AccuracyCalculator):
    """PML's AccuracyCalculator plus ``recall_at_<k>`` for each k in ``ks``.

    Args:
        ks: the Ks of Recall@K (positive ints), e.g. (1, 2, 4, 8) or SOP's (1, 10, 100, 1000).
        knn_batch_size: query rows per block of the exact kNN search; memory is
            O(knn_batch_size * N + N * k), never N x N.
        include, exclude, avg_of_avgs, return_per_class, device, label_comparison_fn:
            as in PML's AccuracyCalculator.
        knn_func: default ``CustomKNN(LpDistance(normalize_embeddings=False), knn_batch_size)``
            (Euclidean, embeddings used as they are).
        kmeans_func: default :class:`SklearnKMeans`.

    ``get_accuracy(query (Nq, D), query_labels (Nq,), reference=None, ...)`` returns
    ``{metric name: value}``; with ``reference=None`` every query is searched against all
    the other queries (PML's ``ref_includes_query=True``).
    """

    def __init__(
        self,
        ks: Iterable[int] = (1, 2, 4, 8),
        include: tuple[str, ...] | list[str] = (),
        exclude: tuple[str, ...] | list[str] = (),
        knn_batch_size: int = 512,
        knn_func: Any = None,
        kmeans_func: Any = None,
        device: torch.device | str | None = None,
        label_comparison_fn: Any = None,
        **kwargs: Any,
    ):
        ks = tuple(ks)
        if not ks or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 for k in ks):
            raise ValueError(f"ks must be positive ints, got {ks!r}")
        self.ks = tuple(sorted({int(k) for k in ks}))
        for k in self.ks:  # found by AccuracyCalculator.__init__ through dir(self)
            setattr(self, "calculate_" + recall_metric_name(k), functools.partial(self._recall_at, k=k))
        if knn_func is None:
            knn_func = CustomKNN(
                LpDistance(p=2, power=1, normalize_embeddings=False), batch_size=knn_batch_size
            )
        super().__init__(
            include=tuple(include),
            exclude=tuple(exclude),
            k=max(self.ks),
            knn_func=knn_func,
            kmeans_func=SklearnKMeans() if kmeans_func is None else kmeans_func,
            device=torch.device("cpu") if device is None else torch.device(device),
            label_comparison_fn=label_comparison_fn,
            **kwargs,
        )
        if label_comparison_fn is None:
            # Plain equality, but not PML's EQUALITY object: PML then counts the references of
            # each class in O(N) memory instead of a (classes x N) int64 matrix (GBs on SOP); the
            # clustering metrics stay valid since this is exact equality of categorical labels.
            self.label_comparison_fn = same_label

    def requires_knn(self) -> list[str]:
        return super().requires_knn() + [recall_metric_name(k) for k in self.ks] + ["mean_reciprocal_rank"]

    def determine_k(
        self, bin_counts: torch.Tensor, num_reference_embeddings: int, ref_includes_query: bool
    ) -> int:
        """max(ks), raised to the largest class size (minus the query) when an @R metric is on."""
        self_count = int(ref_includes_query)
        k = max(self.ks)
        if set(AT_R_METRICS) & set(self.get_curr_metrics()):
            k = max(k, int(torch.max(bin_counts).item()) - self_count)
        return max(1, min(k, num_reference_embeddings - self_count))

    def _recall_at(
        self,
        knn_labels: torch.Tensor,
        query_labels: torch.Tensor,
        not_lone_query_mask: torch.Tensor,
        label_counts: tuple[torch.Tensor, torch.Tensor],
        k: int,
        **kwargs: Any,
    ) -> float | list[float]:
        """Recall@k from ``knn_labels`` ``(Nq, >= k)`` (nearest first) and ``query_labels`` ``(Nq,)``."""
        knn_labels, query_labels = try_getting_not_lone_labels(knn_labels, query_labels, not_lone_query_mask)
        if knn_labels is None:
            return nan_accuracy(label_counts[0], self.return_per_class)
        hits = self.label_comparison_fn(query_labels[:, None], knn_labels[:, :k]).any(dim=1)
        return maybe_get_avg_of_avgs(
            hits.to(torch.float64), query_labels[:, None], self.avg_of_avgs, self.return_per_class
        )
