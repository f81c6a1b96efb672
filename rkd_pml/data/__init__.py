"""Data sets with class-disjoint train/test splits, transforms and class-balanced sampling."""

from ._common import LoadOptions
from .base import ImageDataset
from .registry import DATASETS, RECALL_KS, load_dataset, recall_ks
from .sampler import class_balanced_sampler
from .transforms import TRAIN_TRANSFORMS, build_transforms

__all__ = [
    "DATASETS",
    "ImageDataset",
    "LoadOptions",
    "RECALL_KS",
    "TRAIN_TRANSFORMS",
    "build_transforms",
    "class_balanced_sampler",
    "load_dataset",
    "recall_ks",
]
