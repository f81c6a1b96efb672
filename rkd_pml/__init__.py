"""Relational Knowledge Distillation for pytorch-metric-learning, with timm backbones."""

from ._lazy import lazy_package

# imported on first use (``rkd-pml --help`` needs none of them)
_EXPORTS = {
    **dict.fromkeys(("DATASETS", "class_balanced_sampler", "load_dataset"), ".data"),
    **dict.fromkeys(("embed", "evaluate"), ".evaluation"),
    **dict.fromkeys(
        (
            "CorrelationCongruenceLoss",
            "DarkRankLoss",
            "FitNetEmbeddingLoss",
            "PKTLoss",
            "RKDAngleLoss",
            "RKDDistanceLoss",
            "RKDLoss",
    "RelaxedContrastiveLoss",
    "SimilarityPreservingLoss",
            "RelaxedContrastiveLoss",
            "SimilarityPreservingLoss",
        ),
        ".losses",
    ),
    **dict.fromkeys(("EmbeddingModel", "FrozenModel", "freeze_teacher"), ".models"),
}
lazy_package(__name__, _EXPORTS)

__all__ = [
    "CorrelationCongruenceLoss",
    "DATASETS",
    "DarkRankLoss",
    "EmbeddingModel",
    "FitNetEmbeddingLoss",
    "FrozenModel",
    "PKTLoss",
    "RKDAngleLoss",
    "RKDDistanceLoss",
    "RKDLoss",
    "RelaxedContrastiveLoss",
    "SimilarityPreservingLoss",
    "class_balanced_sampler",
    "embed",
    "evaluate",
    "freeze_teacher",
    "load_dataset",
]
__version__ = "0.1.0"
