"""Data sets with class-disjoint train/test splits, transforms, class-balanced and episodic sampling."""

from ._common import LoadOptions
from .base import ImageDataset
from .episodes import EpisodicBatchSampler
from .registry import DATASETS, RECALL_KS, load_dataset, recall_ks
from .sampler import class_balanced_sampler
from .transforms import TRAIN_TRANSFORMS, build_transforms

__all__ = [
    "DATASETS",
    "EpisodicBatchSampler",
    "ImageDataset",
    "LoadOptions",
    "RECALL_KS",
    "TRAIN_TRANSFORMS",
    "build_transforms",
    "class_balanced_sampler",
    "load_dataset",
    "recall_ks",
]
