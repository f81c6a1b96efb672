"""Cross-model (asymmetric) retrieval: queries embedded by one model, the gallery by another.

The deployment case of a distilled student: a gallery indexed with the teacher's embeddings,
searched with the student's. Both models embed the same images in the same order; every image
is a query (its query-model embedding) against the gallery of all the OTHER images (their
gallery-model embeddings). The query's own image is excluded by its index, not by position or
distance: its gallery embedding is a different vector, so it need not be the nearest. A hit at
K: one of the K nearest shares the query's class; queries of classes with a single image are
dropped (PML's rule, as in :mod:`.recall`). Neighbours are Euclidean on the embeddings as each
model outputs them (each applies its own L2 normalisation, if it was trained with one).

A relational student (RKD) keeps the teacher's distances and angles, not its coordinates, so
its asymmetric Recall@K can be near chance even where its symmetric Recall@K is high.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from .._pml import CustomKNN, LpDistance
from .recall import AT_R_METRICS, CLUSTERING_METRICS, check_ks, pml_metrics, recall_at_k

#: Prefix of the asymmetric metrics' names next to the query model's own (symmetric) ones.
ASYMMETRIC = "asymmetric_"


def check_widths(query_dim: int, gallery_dim: int, query_name: str = "the query model",
                 gallery_name: str = "the gallery model") -> None:
    """ValueError, one line naming both widths, unless the two models' embeddings are as wide."""
    if int(query_dim) != int(gallery_dim):
        raise ValueError(
            f"{gallery_name} gives {gallery_dim}-d embeddings and {query_name} {query_dim}-d: "
            "cross-model retrieval needs embeddings of the same width"
        )


def cross_knn_search(queries: Tensor, gallery: Tensor, k: int, batch_size: int = 512) -> tuple[Tensor, Tensor]:
    """The ``k`` nearest gallery rows of each query row, the query's own row excluded by index.

    Args:
        queries: ``(N, D)``, row i an embedding of image i by the query model.
        gallery: ``(N, D)``, row i an embedding of the same image i by the gallery model.
        k: neighbours to keep, at most N - 1.
        batch_size: query rows per block of the exact search (memory O(batch_size * N + N * k)).

    Returns distances and gallery indices ``(N, k)``, nearest first, never index i in row i.
    """
    n = len(queries)
    if gallery.shape != queries.shape:
        raise ValueError(f"queries {tuple(queries.shape)} and gallery {tuple(gallery.shape)} must have the same shape")
    if not 1 <= k <= n - 1:
        raise ValueError(f"k must lie in 1..{n - 1} (the other images), got {k}")
    knn = CustomKNN(LpDistance(p=2, power=1, normalize_embeddings=False), batch_size=batch_size)
    # one more than asked: the query's own image may be among them; drop it by index, else the last
    distances, indices = knn(queries, k + 1, gallery, False)
    own = indices == torch.arange(n, device=indices.device)[:, None]
    own[~own.any(dim=1), -1] = True
    keep = ~own
    return distances[keep].view(n, k), indices[keep].view(n, k)


def cross_retrieval_metrics(
    queries: Tensor,
    gallery: Tensor,
    labels: Tensor,
    ks: Iterable[int] = (1, 2, 4, 8),
    metrics: Sequence[str] = (),
    knn_batch_size: int = 512,
) -> dict[str, float]:
    """``{"asymmetric_recall@K": ...}`` for each K, then ``"asymmetric_<PML metric>"`` for each of
    ``metrics`` (kNN metrics only: precision_at_1, r_precision, mean_average_precision_at_r...),
    of ``queries`` ``(N, D)`` searched in ``gallery`` ``(N, D)``, both with ``labels`` ``(N,)``.

    One search (see :func:`cross_knn_search`) with k = max(max(ks), largest class - 1 when an @R
    metric is asked), capped at N - 1. PML's AccuracyCalculator scores that search: its relevant
    references are those of the query set less the query itself, which are the gallery's here
    (same images, the own image excluded).
    """
    ks = check_ks(ks)
    clustering = set(CLUSTERING_METRICS) & set(metrics)
    if clustering:
        raise ValueError(f"{', '.join(sorted(clustering))} cluster one model's embeddings: not a cross-model metric")
    check_widths(queries.shape[-1], gallery.shape[-1])
    if len(gallery) != len(queries) or len(labels) != len(queries):
        raise ValueError(
            f"queries {tuple(queries.shape)}, gallery {tuple(gallery.shape)} and labels {tuple(labels.shape)} "
            "must hold the same images in the same order"
        )
    n = len(labels)
    if n < 2:
        raise ValueError("need at least 2 images to retrieve anything")
    inverse = torch.unique(labels, return_inverse=True)[1]
    counts = torch.bincount(inverse)
    k = max(ks)
    if set(AT_R_METRICS) & set(metrics):
        k = max(k, int(counts.max()) - 1)
    knn = cross_knn_search(queries, gallery, min(k, n - 1), knn_batch_size)
    recalls = recall_at_k(labels[knn[1]], labels, ks, counts[inverse] > 1)
    out = {f"{ASYMMETRIC}recall@{k}": value for k, value in recalls.items()}
    pml = pml_metrics(queries, labels, tuple(metrics), knn)
    out.update({f"{ASYMMETRIC}{name}": pml[name] for name in sorted(pml)})
    return out
