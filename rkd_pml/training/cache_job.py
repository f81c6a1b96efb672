"""``teacher-cache``: run a saved teacher once over K augmented views of the training images
(see :mod:`rkd_pml.data.teacher_cache`), with the data settings resolved as ``distill`` resolves
them, so that ``distill --teacher-cache DIR`` finds the same images, size and transform."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..data.settings import resolve_data_settings
from ..models import build_model, load_teacher
from .config import (MAX_BATCH, MAX_IMAGE_SIZE, MAX_SEED, MAX_VIEWS, PRECISIONS, TRANSFORMS, WORKER_LIMIT,
                     _datasets, worker_limit)
from .jobs import resolve_device
from ..settings import setting
from .speed import AUTOCAST_DTYPES, check_precision


@dataclass
class TeacherCacheConfig:
    """Settings of a teacher cache (the data settings default to the teacher's, as in distill)."""

    teacher: str | None = setting(None, "the trained teacher: a run directory or a saved model directory", metavar="DIR")
    views: int = setting(8, "augmented views per training image (1 with --train-transform none: the plain images)", metavar="K",
                         high=MAX_VIEWS)
    out: str | None = setting(None, "the cache directory to write", metavar="DIR")
    dataset: str | None = setting(None, "data set", choices=_datasets, shown="the teacher's, else digits")
    root: str | None = setting(None, "where the data set lives", metavar="PATH")
    image_size: int | None = setting(None, "image side in pixels", metavar="PX", shown="the teacher's, else the data set's",
                                     high=MAX_IMAGE_SIZE)
    in_chans: int | None = setting(None, "input channels: 3 (RGB) or 1 (grey)", metavar="C", shown="the teacher's, else 3")
    train_transform: str = setting("paper", "the distillation run's training augmentation", choices=TRANSFORMS)
    student: str = setting("resnet18", "the student the cache is for (its data config sets the interpolation)", metavar="NAME|DIR")
    seed: int = setting(0, "seed of the views' random draws", metavar="S", low=0, high=MAX_SEED)
    batch_size: int = setting(128, "teacher batch size", metavar="N", high=MAX_BATCH)
    precision: str = setting("fp32", "autocast precision of the teacher", choices=PRECISIONS)
    device: str = setting("auto", "cpu, cuda, cuda:N or auto", metavar="DEV")
    num_workers: int = setting(0, "data-loading worker processes", metavar="N", high=worker_limit, limit=WORKER_LIMIT)
    overwrite: bool = setting(False, "replace an existing cache in --out")
    progress: bool = setting(True, "progress bar")

    job = "teacher-cache"
    flag_names = {}

    @classmethod
    def from_dict(cls, data, source: str = "config", complete: bool = False):
        from ..settings import from_mapping

        return from_mapping(cls, data, source, complete)


def build_cache(cfg: TeacherCacheConfig) -> Path:
    """Build the cache ``cfg`` describes; returns its directory."""
    from ..data import load_dataset
    from ..data.teacher_cache import build_teacher_cache

    if not cfg.teacher or not cfg.out:
        raise ValueError("teacher-cache needs --teacher DIR and --out DIR")
    if cfg.views < 1 or cfg.batch_size < 1:
        raise ValueError(f"--views and --batch-size must be >= 1, got {cfg.views} and {cfg.batch_size}")
    device = resolve_device(cfg.device)
    check_precision(cfg.precision, device)
    teacher = load_teacher(cfg.teacher, device)
    data = resolve_data_settings(cfg, teacher.training_data or {}, f"the teacher {cfg.teacher}")
    student = build_model(cfg.student, 8, in_chans=data.in_chans)  # for its data config only
    train_set, _ = load_dataset(data.for_model(student.data_config))
    return build_teacher_cache(
        teacher, train_set, cfg.views, cfg.out, seed=cfg.seed, batch_size=cfg.batch_size, device=device,
        progress=cfg.progress, overwrite=cfg.overwrite, root=data.root, num_workers=cfg.num_workers,
        autocast_dtype=AUTOCAST_DTYPES.get(cfg.precision), teacher_source=str(cfg.teacher),
        inputs={"the test data root": data.test_root, "the student": cfg.student},
    )
