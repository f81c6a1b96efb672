"""Retrieval evaluation: Recall@K next to PML's accuracy metrics, within one model or across two."""

from .cross_model import ASYMMETRIC, check_widths, cross_knn_search, cross_retrieval_metrics
from .evaluate import DEFAULT_METRICS, embed, evaluate, evaluate_embeddings
from .few_shot import episode_accuracies, few_shot_accuracy, few_shot_accuracy_from_embeddings, sample_episodes
from .recall import PrecomputedKNN, SklearnKMeans, knn_search, recall_at_k, retrieval_metrics

__all__ = [
    "ASYMMETRIC",
    "DEFAULT_METRICS",
    "PrecomputedKNN",
    "SklearnKMeans",
    "check_widths",
    "cross_knn_search",
    "cross_retrieval_metrics",
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
