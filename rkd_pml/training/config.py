"""One dataclass per job, the single source of truth of every setting: default, type, choices,
help text and command-line flag (see :mod:`rkd_pml.settings`); the RKD paper's recipe by default.

* teacher: ResNet-50 + Linear(512) + L2, triplet loss (margin 0.2) on distance-weighted
  triplets, Adam lr 1e-5 / weight decay 1e-5, 40 epochs x 100 iterations, lr x0.5 at
  epochs 25, 30, 35;
* student: ResNet-18 + Linear(64), no L2, RKD-DA (1 x distance + 2 x angle) only,
  Adam lr 1e-4 / weight decay 1e-5, 80 epochs x 100 iterations, lr x0.1 at epochs 40, 60;
* batches of 128 with 4 images per class (the paper: about 5; PML's sampler needs a divisor
  of the batch size); Recall@1/2/4/8 on the test classes.

Settings left at ``None`` are resolved before a run starts (:mod:`.resolve`): from the
teacher's run for ``distill`` (data set, root, image size, channels, test transform), else
from the data set and the model; each run's ``config.json`` holds the resolved values.

Two deliberate differences from the paper: ``pretrained`` is off by default (turn it on, or
pass a local ``weights`` file, when ImageNet weights are available), and the image size
defaults to the data set's own default instead of 224.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from ..settings import (MAX_BATCH, MAX_EMBEDDING_DIM, MAX_IMAGE_SIZE, MAX_RATE, MAX_SEED, MAX_STEPS, MAX_WEIGHT, WORKER_LIMIT,
                        check_bounds, from_mapping, redefault, runtime_fields, setting, to_mapping, worker_limit)
from .loss_settings import LOSS_OPTIONS, check_loss_options, fold_loss_options, option_settings, recorded_loss_options


def _datasets() -> list[str]:
    from ..data import DATASETS

    return sorted(DATASETS)


def _losses() -> list[str]:
    from ..losses.registry import distillation_loss_names

    return distillation_loss_names()


#: the validation fraction used when none is given (where the data allows one)
AUTO_VAL_FRACTION = 0.2
TRANSFORMS = ("paper", "random_resized_crop", "none")
PRECISIONS = ("fp32", "bf16", "fp16")

#: augmented views per image of a teacher cache
MAX_VIEWS = 1024
@dataclass
class TrainConfig:
    """Settings shared by every training job."""

    # data
    dataset: str | None = setting(None, "data set", choices=_datasets, shown="the teacher's, else digits")
    root: str | None = setting(None, "where the data set lives (a folder, or omniglot's .zip)", metavar="PATH")
    test_root: str | None = setting(
        None, "folder data: a separate folder of test classes (then --root holds only training classes)", metavar="PATH"
    )
    image_size: int | None = setting(None, "image side in pixels", metavar="PX", shown="the teacher's, else the data set's",
                                     high=MAX_IMAGE_SIZE)
    in_chans: int | None = setting(None, "input channels: 3 (RGB) or 1 (grey)", metavar="C", shown="the teacher's, else 3")
    train_transform: str = setting(
        "paper", "training augmentation: paper = resize to S*256/224, random SxS crop, flip; "
        "random_resized_crop = timm's; none = the test transform", choices=TRANSFORMS,
    )
    test_transform: str | None = setting(
        None, "paper = resize to S*256/224, centre crop; timm = timm's eval transform",
        choices=("paper", "timm"), shown="paper with the paper's training transform, else timm",
    )
    val_fraction: float | None = setting(
        None, "fraction of the training classes held out as a validation split that picks the best epoch "
        "(0: pick by test Recall@1, as the paper)", metavar="F",
        shown=f"{AUTO_VAL_FRACTION} where that holds out >= 2 classes and keeps >= 2, else 0",
    )
    # batches and schedule
    epochs: int = setting(40, "number of epochs", metavar="N", runtime=True, high=MAX_STEPS)
    iterations_per_epoch: int = setting(100, "training steps per epoch", flags=("--iterations-per-epoch", "--iters"), metavar="N",
                                        high=MAX_STEPS)
    batch_size: int = setting(128, "images per batch (under torchrun: the global batch)", metavar="N", high=MAX_BATCH)
    m_per_class: int | None = setting(
        None, "images of each class in a batch", metavar="M", high=MAX_BATCH,
        shown="4, or the smallest divisor of the batch size that the training classes fill",
    )
    lr: float = setting(1e-5, "Adam learning rate", metavar="LR", high=MAX_RATE)
    weight_decay: float = setting(1e-5, "Adam weight decay", metavar="WD", high=MAX_RATE)
    lr_milestones: tuple[int, ...] = setting((25, 30, 35), "epochs after which the learning rate is multiplied by --lr-gamma",
                                             metavar="E1,E2,...", high=MAX_STEPS)
    lr_gamma: float = setting(0.5, "learning-rate factor at each milestone", metavar="G", high=MAX_RATE)
    # evaluation
    recall_ks: tuple[int, ...] | None = setting(None, "Ks of Recall@K (must include 1)", metavar="K1,K2,...", shown="1,2,4,8; sop: 1,10,100,1000",
                                                high=MAX_STEPS)
    eval_every: int = setting(1, "evaluate every N epochs (and after the last)", metavar="N", runtime=True, high=MAX_STEPS)
    eval_batch_size: int = setting(256, "batch size when embedding the evaluation images", metavar="N", runtime=True,
                                   high=MAX_BATCH)
    # speed
    precision: str = setting(
        "fp32", "autocast precision of the forward passes: bf16 (CPU, CUDA), fp16 (CUDA, with a gradient scaler)",
        choices=PRECISIONS,
    )
    channels_last: bool = setting(False, "channels-last memory format for the models")
    compile: bool = setting(False, "torch.compile the models (falls back to eager once, with a warning)")
    input_pipeline: str = setting(
        "fast", "fast = images decoded once, each batch cropped, flipped and resized on --device (the view draws of "
        "pil; pixels within 1/255 of pil's but for a few bicubic ones); pil = each image decoded and transformed with PIL in the loader",
        choices=("fast", "pil"),
    )
    num_workers: int = setting(0, "data-loading worker processes (resume stays exact: each batch is seeded)", metavar="N",
                               runtime=True, high=worker_limit, limit=WORKER_LIMIT)
    # run
    out: str | None = setting(None, "output directory: config.json, metrics.jsonl, results.json, recall.png, checkpoints/, model/", metavar="DIR", shown="runs/<job>", runtime=True)
    seed: int = setting(0, "random seed (weights, batches, augmentation)", metavar="S", low=0, high=MAX_SEED)
    device: str = setting("auto", "cpu, cuda, cuda:N, mps or auto (CUDA when available)", metavar="DEV", runtime=True)
    checkpoint_every: int = setting(0, "also save the resume checkpoint every N steps within an epoch (0: at epoch ends)",
                                    metavar="N", runtime=True, high=MAX_STEPS)
    resume: bool = setting(False, "continue the interrupted run in --out from its last checkpoint (its saved settings are reused)", runtime=True)
    overwrite: bool = setting(False, "replace an existing run of this package in --out", runtime=True)
    progress: bool = setting(True, "progress bars", runtime=True)
    check_images: bool = setting(True, "decode every image once before the run starts (turn off for very large "
                                 "data sets: a corrupt image then stops the run when it is first read)", runtime=True)
    keep_checkpoints: bool = setting(True, "keep checkpoints/ when the run has ended (without: the model directory "
                                     "holds the best weights; the run cannot be resumed or extended)", runtime=True)
    tensorboard: bool = setting(False, "also write the logged scalars for TensorBoard (needs the tensorboard package)", runtime=True)
    sync_bn: bool = setting(False, "under torchrun on GPUs: SyncBatchNorm, so BatchNorm sees the global batch", runtime=True)

    #: name of the job, written to config.json
    job = "train"
    #: flags that name a field differently in this job
    flag_names = {}

    def to_dict(self) -> dict[str, Any]:
        """JSON values, with the job's name; loss or miner objects are recorded by class name."""
        return {"job": self.job, **to_mapping(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config", complete: bool = False):
        """Inverse of :meth:`to_dict`, with every value type-checked (see :func:`rkd_pml.settings.from_mapping`)."""
        return from_mapping(cls, data, source, complete)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def validate(self) -> None:
        """Raise ValueError for settings that cannot work, naming the setting."""
        for name in ("epochs", "iterations_per_epoch", "batch_size", "eval_every", "eval_batch_size"):
            _at_least(name, getattr(self, name), 1)
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be at least 2 (BatchNorm and every loss compare images), got {self.batch_size}")
        for name in ("checkpoint_every", "num_workers"):
            _at_least(name, getattr(self, name), 0)
        if self.m_per_class is not None:
            _at_least("m_per_class", self.m_per_class, 1)
            if self.batch_size % self.m_per_class:
                raise ValueError(f"batch_size ({self.batch_size}) must be a multiple of m_per_class ({self.m_per_class})")
        if self.val_fraction is not None and not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        _positive("lr", self.lr)
        _positive("lr_gamma", self.lr_gamma)
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be a finite number >= 0, got {self.weight_decay}")
        if self.image_size is not None and self.image_size < 8:
            raise ValueError(f"image_size must be at least 8 pixels, got {self.image_size}")
        if self.in_chans not in (None, 1, 3):
            raise ValueError(f"in_chans must be 1 or 3, got {self.in_chans}")
        if self.recall_ks is not None:
            if not self.recall_ks or any(int(k) < 1 for k in self.recall_ks):
                raise ValueError(f"recall_ks must be positive integers, got {self.recall_ks}")
            if 1 not in self.recall_ks:
                raise ValueError(f"recall_ks must include 1 (Recall@1 selects the best epoch), got {self.recall_ks}")
        if any(int(m) < 1 for m in self.lr_milestones):
            raise ValueError(f"lr_milestones must be epochs >= 1, got {self.lr_milestones}")
        check_bounds(self)
        _check_peak_lr(self.lr, self.lr_gamma, self.lr_milestones)
        for name, allowed in (("train_transform", TRANSFORMS), ("precision", PRECISIONS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.test_root is not None and self.dataset not in (None, "folder"):
            raise ValueError(f"test_root is for the folder data set, not {self.dataset!r}")


def _check_peak_lr(lr: float, gamma: float, milestones: tuple[int, ...]) -> None:
    """ValueError if a factor above 1 raises the learning rate past :data:`MAX_RATE` (PyTorch's
    MultiStepLR applies it once per milestone, repeated ones included)."""
    if gamma > 1 and milestones and math.log(lr) + len(milestones) * math.log(gamma) > math.log(MAX_RATE):
        raise ValueError(f"lr_gamma ({gamma}) raises the learning rate {lr} past {MAX_RATE} at the {len(milestones)} "
                         f"lr_milestones ({lr} x {gamma}^{len(milestones)}); use a smaller --lr-gamma or fewer milestones")


def _at_least(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def _non_negative(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


@dataclass
class TripletConfig(TrainConfig):
    """A model trained on its own with triplet loss on distance-weighted triplets."""

    model: str = setting("resnet50", "a timm model name (e.g. resnet18) or a saved model directory to start from", metavar="NAME|DIR")
    embedding_dim: int = setting(512, "width of the embedding (linear head after the pooled features)", metavar="D",
                                 high=MAX_EMBEDDING_DIM)
    pretrained: bool = setting(False, "start from timm's ImageNet weights (needs network access or a cached copy)")
    weights: str | None = setting(None, "start from a local timm weights file (.safetensors/.pth)", metavar="FILE")
    l2_normalize: bool = setting(True, "L2-normalise the embedding")
    margin: float = setting(0.2, "triplet margin", metavar="M", high=MAX_WEIGHT)
    #: "distance_weighted" (the recipe), "none" (all triplets) or a PML miner object
    miner: Any = setting("distance_weighted", "triplet sampling: distance-weighted (Wu et al. 2017) or all triplets", choices=("distance_weighted", "none"))
    triplet_reduction: str = setting("mean", "mean over all mined triplets (official RKD code) or over the non-zero ones (PML's default)", choices=("mean", "avg_nonzero"))

    job = "train-triplet"

    def validate(self) -> None:
        super().validate()
        _at_least("embedding_dim", self.embedding_dim, 1)
        _non_negative("margin", self.margin)
        if self.triplet_reduction not in ("mean", "avg_nonzero"):
            raise ValueError(f"triplet_reduction must be 'mean' or 'avg_nonzero', got {self.triplet_reduction!r}")


@dataclass
class TeacherConfig(TripletConfig):
    """Teacher: ResNet-50 + Linear(512) + L2, triplet loss, the paper's teacher schedule."""

    job = "train-teacher"
    #: flags of another job that this one refuses with the one it means (distill's --teacher is a run)
    moved_flags = {"--teacher": "--model NAME for the architecture (--teacher is distill's: a trained teacher's run)"}


@dataclass
class BaselineConfig(TripletConfig):
    """Baseline student: the student's architecture trained like the teacher (triplet)."""

    model: str = redefault(TripletConfig, "model", "resnet18")
    embedding_dim: int = redefault(TripletConfig, "embedding_dim", 64)

    job = "train-baseline"
    flag_names = {"model": "--student"}


@dataclass
class DistillConfig(TrainConfig):
    """Student distilled from a frozen, saved teacher with RKD (by default RKD-DA only)."""

    teacher: str | None = setting(None, "the trained teacher: a run directory of train-teacher or a saved model directory", metavar="DIR")
    teacher_cache: str | None = setting(None, "read the teacher's embeddings from a cache written by 'rkd-pml teacher-cache' instead of running it", metavar="DIR")
    student: str = setting("resnet18", "the student: a timm model name or a saved model directory to start from", metavar="NAME|DIR")
    embedding_dim: int = setting(64, "student embedding width", metavar="D", high=MAX_EMBEDDING_DIM)
    pretrained: bool = setting(False, "start the student from timm's ImageNet weights (network or cache needed)")
    weights: str | None = setting(None, "start the student from a local timm weights file", metavar="FILE")
    l2_normalize: bool = setting(False, "L2-normalise the student's embedding (the paper: off)")
    #: a registered name, "triplet" (no teacher), or a loss object called as
    #: ``loss(student_emb, labels, indices_tuple, ref_emb=teacher_emb)``
    loss: Any = setting("rkd", "distillation loss (rkd = RKD-DA; triplet = the student's triplet loss alone, no teacher)", choices=_losses)
    loss_options: dict[str, Any] = setting({}, "options of the loss by name, declared by the loss (each is a flag too)",
                                           cli=False)
    distill_weight: float = setting(1.0, "multiplier of the whole distillation loss", metavar="W", high=MAX_WEIGHT)
    compat_weight: float = setting(
        0.0, "weight of a coordinate term mean ||s_i - t_i||^2 between the student's and the teacher's embeddings "
        "as each model outputs them, added to the distillation loss so the student's queries can search a "
        "teacher-indexed gallery (needs --embedding-dim equal to the teacher's; 0: off)", metavar="W", high=MAX_WEIGHT,
        absent=0.0,
    )
    #: None, "triplet" or a PML loss object
    student_metric_loss: Any = setting(None, "a metric loss on the student too", choices=("triplet",))
    student_metric_weight: float = setting(1.0, "weight of the student's metric loss", metavar="W", high=MAX_WEIGHT)
    student_miner: Any = setting("distance_weighted", "miner of the student's metric loss", choices=("distance_weighted", "none"))
    margin: float = setting(0.2, "margin of the student triplet loss", metavar="M", high=MAX_WEIGHT)
    triplet_reduction: str = setting("mean", "reduction of the student triplet loss", choices=("mean", "avg_nonzero"))
    # the paper's student schedule
    epochs: int = redefault(TrainConfig, "epochs", 80)
    lr: float = redefault(TrainConfig, "lr", 1e-4)
    lr_milestones: tuple[int, ...] = redefault(TrainConfig, "lr_milestones", (40, 60))
    lr_gamma: float = redefault(TrainConfig, "lr_gamma", 0.1)

    job = "distill"
    #: the setting whose values are the options the losses declare (a flag each, see :mod:`.loss_settings`)
    options_field = LOSS_OPTIONS

    @staticmethod
    def option_settings() -> dict[str, tuple[dataclasses.Field, Any, str]]:
        return option_settings(DistillConfig.__dataclass_fields__)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config", complete: bool = False):
        return from_mapping(cls, fold_loss_options(data, source, complete, cls.__dataclass_fields__), source, complete)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), LOSS_OPTIONS: recorded_loss_options(self.loss, self.loss_options)}

    @property
    def uses_teacher(self) -> bool:
        return not (isinstance(self.loss, str) and self.loss.lower() == "triplet")

    def validate(self) -> None:
        super().validate()
        _at_least("embedding_dim", self.embedding_dim, 1)
        for name in ("distill_weight", "compat_weight", "student_metric_weight", "margin"):
            _non_negative(name, getattr(self, name))
        if self.compat_weight > 0 and not self.uses_teacher:
            raise ValueError(f"compat_weight ({self.compat_weight}) pulls the student onto the teacher's embeddings: "
                             f"it needs a distillation loss, not loss={self.loss!r}")
        if isinstance(self.loss, str) and self.loss.lower() not in _losses():
            raise ValueError(f"unknown distillation loss {self.loss!r}; choose one of {', '.join(_losses())}")
        check_loss_options(self.loss, self.loss_options)
        if self.triplet_reduction not in ("mean", "avg_nonzero"):
            raise ValueError(f"triplet_reduction must be 'mean' or 'avg_nonzero', got {self.triplet_reduction!r}")
        if self.uses_teacher and not (self.teacher or self.teacher_cache):
            raise ValueError("distill needs a trained teacher: teacher=DIR (--teacher DIR), a directory written by train-teacher")


CONFIG_CLASSES: dict[str, type[TrainConfig]] = {
    cls.job: cls for cls in (TeacherConfig, BaselineConfig, DistillConfig, TripletConfig)
}


def config_from_dict(data: dict[str, Any], source: str = "config.json", complete: bool = True) -> TrainConfig:
    """Rebuild the config of a run from its ``config.json`` (every setting present and typed)."""
    job = data.get("job") if isinstance(data, dict) else None
    if job not in CONFIG_CLASSES:
        raise ValueError(f"{source}: unknown job {job!r}; expected one of {', '.join(CONFIG_CLASSES)}")
    return CONFIG_CLASSES[job].from_dict(data, source, complete)


def config_differences(saved: TrainConfig, current: TrainConfig) -> list[str]:
    """Settings (other than runtime ones) whose values differ, as ``name: saved -> current``."""
    a, b = saved.to_dict(), current.to_dict()
    runtime = runtime_fields(type(current))
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if k not in runtime and a.get(k) != b.get(k)]


__all__ = [
    "BaselineConfig",
    "DistillConfig",
    "TeacherConfig",
    "TrainConfig",
    "TripletConfig",
    "config_differences",
    "config_from_dict",
]
