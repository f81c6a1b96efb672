"""Relational Knowledge Distillation for pytorch-metric-learning, with timm backbones."""

from ._lazy import lazy_package

# imported on first use (``rkd-pml --help`` needs none of them)
_EXPORTS = {
    **dict.fromkeys(("DATASETS", "DataSettings", "class_balanced_sampler", "load_dataset", "resolve_data_settings"), ".data"),
    **dict.fromkeys(("embed", "evaluate"), ".evaluation"),
    **dict.fromkeys(
        (
            "CorrelationCongruenceLoss",
            "DarkRankLoss",
            "FitNetEmbeddingLoss",
            "PKTLoss",
            "RKDAngleLoss",
            "RKDDistanceLoss",
            "EmbeddingCompatibilityLoss",
            "RKDFitNetLoss",
            "RKDLoss",
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
    "DataSettings",
    "EmbeddingCompatibilityLoss",
    "EmbeddingModel",
    "FitNetEmbeddingLoss",
    "FrozenModel",
    "PKTLoss",
    "RKDAngleLoss",
    "RKDDistanceLoss",
    "RKDFitNetLoss",
    "RKDLoss",
    "RelaxedContrastiveLoss",
    "SimilarityPreservingLoss",
    "class_balanced_sampler",
    "embed",
    "evaluate",
    "freeze_teacher",
    "load_dataset",
    "resolve_data_settings",
]
__version__ = "0.1.0"
