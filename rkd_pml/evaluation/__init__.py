"""Retrieval evaluation: Recall@K next to PML's accuracy metrics."""

from .evaluate import DEFAULT_METRICS, embed, evaluate, evaluate_embeddings
from .recall import RecallAtKCalculator, SklearnKMeans, recall_metric_name

__all__ = [
    "DEFAULT_METRICS",
    "RecallAtKCalculator",
    "SklearnKMeans",
    "embed",
    "evaluate",
    "evaluate_embeddings",
    "recall_metric_name",
]
