"""Data sets with class-disjoint train/test splits, transforms, class-balanced and episodic sampling."""

from ._common import LoadOptions
from .base import ImageDataset
from .episodes import EpisodicBatchSampler
from .registry import DATASETS, RECALL_KS, load_dataset, recall_ks
from .sampler import class_balanced_sampler
from .teacher_cache import CachedViews, TeacherCache, build_teacher_cache
from .transforms import TRAIN_TRANSFORMS, build_transforms
from .views import RandomView, View, build_view, view_of

__all__ = [
    "CachedViews",
    "DATASETS",
    "EpisodicBatchSampler",
    "ImageDataset",
    "LoadOptions",
    "RECALL_KS",
    "RandomView",
    "TRAIN_TRANSFORMS",
    "TeacherCache",
    "View",
    "build_teacher_cache",
    "build_transforms",
    "build_view",
    "class_balanced_sampler",
    "load_dataset",
    "recall_ks",
    "view_of",
]
