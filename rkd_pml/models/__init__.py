"""Embedding models on timm backbones, frozen teachers and weight loading."""

from .embedding import EmbeddingModel, resolve_data_config
from .export import export_timm
from .frozen import FrozenModel, freeze_teacher
from .saved import build_model, find_saved_model, load_teacher, saved_training_data
from .weights import PretrainedWeightsError, check_model_name, create_backbone

__all__ = [
    "EmbeddingModel",
    "FrozenModel",
    "PretrainedWeightsError",
    "build_model",
    "export_timm",
    "find_saved_model",
    "load_teacher",
    "saved_training_data",
    "check_model_name",
    "create_backbone",
    "freeze_teacher",
    "resolve_data_config",
]
