"""Retrieval evaluation: Recall@K next to PML's accuracy metrics."""

from .evaluate import DEFAULT_METRICS, embed, evaluate, evaluate_embeddings
from .recall import PrecomputedKNN, SklearnKMeans, knn_search, recall_at_k, retrieval_metrics

__all__ = [
    "DEFAULT_METRICS",
    "PrecomputedKNN",
    "SklearnKMeans",
    "embed",
    "evaluate",
    "evaluate_embeddings",
    "knn_search",
    "recall_at_k",
    "retrieval_metrics",
]
