"""One dataclass per job, with the RKD paper's metric-learning recipe as defaults.

Every field can be overridden, from Python (``DistillConfig(lr=3e-4)``) or from the command
line. The defaults reproduce the official recipe (Park et al., CVPR 2019):

* teacher: ResNet-50 + Linear(512) + L2, triplet loss (margin 0.2) on distance-weighted
  triplets, Adam lr 1e-5 / weight decay 1e-5, 40 epochs x 100 iterations, lr x0.5 at
  epochs 25, 30, 35;
* student: ResNet-18 + Linear(64), no L2, RKD-DA (1 x distance + 2 x angle) only,
  Adam lr 1e-4 / weight decay 1e-5, 80 epochs x 100 iterations, lr x0.1 at epochs 40, 60;
* batches of 128 with 4 images per class (the paper: about 5; PML's sampler needs a divisor
  of the batch size); Recall@1/2/4/8 on the test classes.

Under ``torchrun`` the same jobs run on several processes; ``batch_size`` is then the global
batch, split evenly across them (see :mod:`rkd_pml.training.distributed_setup`).

Two deliberate differences: ``pretrained`` is off by default (the paper starts from ImageNet
weights; turn it on, or pass a local ``weights`` file, when they are available), and the
image size defaults to the data set's own default instead of 224.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any

#: Fields that may differ when a run is resumed: how it executes, how often it evaluates or
#: checkpoints (neither changes the weights), and ``epochs`` (to train an ended run longer).
RUNTIME_FIELDS = frozenset(
    {
        "resume", "overwrite", "progress", "device", "num_workers", "eval_batch_size", "out",
        "epochs", "eval_every", "checkpoint_every", "sync_bn",
    }
)


@dataclass
class TrainConfig:
    """Settings shared by every training job."""

    # data
    dataset: str = "digits"
    root: str | None = None
    image_size: int | None = None
    #: "paper" (resize to S*256/224, random S crop, flip), "random_resized_crop" or "none"
    train_transform: str = "paper"
    val_fraction: float = 0.0
    # batches and schedule
    epochs: int = 40
    iterations_per_epoch: int = 100
    batch_size: int = 128
    #: images per class in a batch. None: 4 (the paper samples "about 5"; PML's sampler needs a
    #: divisor of the batch size), raised to the smallest divisor that fills a batch when the
    #: training split has fewer than batch_size / 4 classes
    m_per_class: int | None = None
    lr: float = 1e-5
    weight_decay: float = 1e-5
    lr_milestones: tuple[int, ...] = (25, 30, 35)
    lr_gamma: float = 0.5
    # evaluation
    #: Ks of Recall@K; None: the data set's usual ones (1, 2, 4, 8; SOP 1, 10, 100, 1000)
    recall_ks: tuple[int, ...] | None = None
    eval_every: int = 1
    eval_batch_size: int = 256
    # run
    out: str | None = None
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    checkpoint_every: int = 0
    resume: bool = False
    overwrite: bool = False
    progress: bool = True
    #: with several processes on GPUs (torchrun): SyncBatchNorm, so that BatchNorm normalises
    #: with the statistics of the global batch as in a single process; no effect in one process
    sync_bn: bool = False

    #: name of the job, written to config.json
    job = "train"

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view; loss or miner objects are recorded by their class name."""
        out: dict[str, Any] = {"job": self.job}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = list(value)
            elif value is not None and not isinstance(value, (str, int, float, bool, list, dict)):
                value = f"<{type(value).__module__}.{type(value).__qualname__}>"
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """Inverse of :meth:`to_dict`; objects recorded by name cannot be restored."""
        names = {f.name: f for f in fields(cls)}
        kwargs = {}
        for key, value in data.items():
            if key == "job":
                continue
            if key not in names:
                raise ValueError(f"unknown {cls.__name__} field {key!r}")
            if isinstance(value, list):
                value = tuple(value)
            kwargs[key] = value
        return cls(**kwargs)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def validate(self) -> None:
        """Raise ValueError for settings that cannot work, saying what to change."""
        positive = ("epochs", "iterations_per_epoch", "batch_size", "eval_every", "eval_batch_size")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.m_per_class is not None and self.m_per_class < 1:
            raise ValueError(f"m_per_class must be at least 1, got {self.m_per_class}")
        if self.m_per_class is not None and self.batch_size % self.m_per_class:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be a multiple of m_per_class "
                f"({self.m_per_class})"
            )
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be non-negative, got {self.weight_decay}")
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0, got {self.checkpoint_every}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.image_size is not None and self.image_size < 8:
            raise ValueError(f"image_size must be at least 8 pixels, got {self.image_size}")
        if self.train_transform not in ("paper", "random_resized_crop", "none"):
            raise ValueError(
                f"train_transform must be 'paper', 'random_resized_crop' or 'none', got {self.train_transform!r}"
            )
        if self.recall_ks is not None and (not self.recall_ks or any(int(k) < 1 for k in self.recall_ks)):
            raise ValueError(f"recall_ks must be positive integers, got {self.recall_ks}")
        if self.device not in ("auto", "cpu", "cuda", "mps") and not str(self.device).startswith("cuda:"):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")


@dataclass
class TripletConfig(TrainConfig):
    """A model trained on its own with triplet loss on distance-weighted triplets."""

    model: str = "resnet50"
    embedding_dim: int = 512
    pretrained: bool = False
    weights: str | None = None
    l2_normalize: bool = True
    margin: float = 0.2
    #: ``"distance_weighted"`` (the recipe), ``"none"`` (all triplets) or a PML miner object
    miner: Any = "distance_weighted"
    #: ``"mean"`` averages over every mined triplet as the official code does;
    #: ``"avg_nonzero"`` is PML's default (mean over triplets with a positive loss)
    triplet_reduction: str = "mean"

    job = "train-triplet"

    def validate(self) -> None:
        super().validate()
        if self.embedding_dim < 1:
            raise ValueError(f"embedding_dim must be at least 1, got {self.embedding_dim}")
        if self.margin < 0:
            raise ValueError(f"margin must be non-negative, got {self.margin}")
        if self.triplet_reduction not in ("mean", "avg_nonzero"):
            raise ValueError(f"triplet_reduction must be 'mean' or 'avg_nonzero', got {self.triplet_reduction!r}")


@dataclass
class TeacherConfig(TripletConfig):
    """Teacher: ResNet-50 + Linear(512) + L2, triplet loss, the paper's teacher schedule."""

    job = "train-teacher"


@dataclass
class BaselineConfig(TripletConfig):
    """Baseline student: the student's architecture trained like the teacher (triplet)."""

    model: str = "resnet18"
    embedding_dim: int = 64

    job = "train-baseline"


@dataclass
class DistillConfig(TrainConfig):
    """Student distilled from a frozen, saved teacher with RKD (by default RKD-DA only)."""

    #: directory of a saved teacher (a run directory or its ``model`` folder)
    teacher: str | None = None
    student: str = "resnet18"
    embedding_dim: int = 64
    pretrained: bool = False
    weights: str | None = None
    l2_normalize: bool = False
    #: "rkd" (RKD-DA), "rkd-d", "rkd-a", "triplet" (no distillation), a registered name, or a
    #: loss object called as ``loss(student_emb, labels, indices_tuple, ref_emb=teacher_emb)``
    loss: Any = "rkd"
    distance_weight: float = 1.0
    angle_weight: float = 2.0
    #: multiplies the distillation loss
    distill_weight: float = 1.0
    #: optional metric loss on the student: None, "triplet" or a PML loss object
    student_metric_loss: Any = None
    student_metric_weight: float = 1.0
    #: miner for the student metric loss: "distance_weighted", "none" or a PML miner object
    student_miner: Any = "distance_weighted"
    margin: float = 0.2
    triplet_reduction: str = "mean"
    # the paper's student schedule
    epochs: int = 80
    lr: float = 1e-4
    lr_milestones: tuple[int, ...] = (40, 60)
    lr_gamma: float = 0.1

    job = "distill"

    def validate(self) -> None:
        super().validate()
        if self.embedding_dim < 1:
            raise ValueError(f"embedding_dim must be at least 1, got {self.embedding_dim}")
        if self.distance_weight < 0 or self.angle_weight < 0 or self.distill_weight < 0:
            raise ValueError("loss weights must be non-negative")
        if self.student_metric_weight < 0:
            raise ValueError("student_metric_weight must be non-negative")
        if self.triplet_reduction not in ("mean", "avg_nonzero"):
            raise ValueError(f"triplet_reduction must be 'mean' or 'avg_nonzero', got {self.triplet_reduction!r}")


CONFIG_CLASSES: dict[str, type[TrainConfig]] = {
    cls.job: cls for cls in (TeacherConfig, BaselineConfig, DistillConfig, TripletConfig)
}


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Rebuild the config of a run from its ``config.json``."""
    job = data.get("job")
    if job not in CONFIG_CLASSES:
        raise ValueError(f"config.json has an unknown job {job!r}")
    return CONFIG_CLASSES[job].from_dict(data)


def config_differences(saved: TrainConfig, current: TrainConfig) -> list[str]:
    """Fields (other than runtime ones) whose values differ, as ``name: saved -> current``."""
    a, b = saved.to_dict(), current.to_dict()
    return [
        f"{k}: {a.get(k)!r} -> {b.get(k)!r}"
        for k in sorted(set(a) | set(b))
        if k not in RUNTIME_FIELDS and a.get(k) != b.get(k)
    ]


__all__ = [
    "BaselineConfig",
    "DistillConfig",
    "TeacherConfig",
    "TrainConfig",
    "TripletConfig",
    "config_differences",
    "config_from_dict",
]
