"""Data sets with class-disjoint train/test splits, transforms, class-balanced and episodic sampling."""

from .base import ImageDataset
from .episodes import EpisodicBatchSampler
from .registry import DATASETS, RECALL_KS, load_dataset, recall_ks
from .sampler import class_balanced_sampler
from .settings import DataSettings, SettingWarning, resolve_data_settings
from .teacher_cache import CachedViews, TeacherCache, build_teacher_cache
from .transforms import TRAIN_TRANSFORMS, build_transforms, build_view
from .views import RandomView, View, view_of

__all__ = [
    "CachedViews",
    "DATASETS",
    "DataSettings",
    "EpisodicBatchSampler",
    "ImageDataset",
    "RECALL_KS",
    "RandomView",
    "SettingWarning",
    "TRAIN_TRANSFORMS",
    "TeacherCache",
    "View",
    "build_teacher_cache",
    "build_transforms",
    "build_view",
    "class_balanced_sampler",
    "load_dataset",
    "recall_ks",
    "resolve_data_settings",
    "view_of",
]
