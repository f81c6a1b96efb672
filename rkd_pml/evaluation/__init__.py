"""Retrieval evaluation: Recall@K next to PML's accuracy metrics."""

from .evaluate import DEFAULT_METRICS, embed, evaluate, evaluate_embeddings
from .few_shot import episode_accuracies, few_shot_accuracy, few_shot_accuracy_from_embeddings, sample_episodes
from .recall import PrecomputedKNN, SklearnKMeans, knn_search, recall_at_k, retrieval_metrics

__all__ = [
    "DEFAULT_METRICS",
    "PrecomputedKNN",
    "SklearnKMeans",
    "embed",
    "episode_accuracies",
    "evaluate",
    "evaluate_embeddings",
    "few_shot_accuracy",
    "few_shot_accuracy_from_embeddings",
    "knn_search",
    "recall_at_k",
    "retrieval_metrics",
    "sample_episodes",
]
