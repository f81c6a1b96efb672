"""Training workflow: teacher, triplet baseline and RKD student, as Python functions.

* :func:`train_teacher`, :func:`train_baseline`, :func:`distill`: one run each, configured by
  :class:`TeacherConfig`, :class:`BaselineConfig`, :class:`DistillConfig` (the RKD paper's
  recipe by default) or keyword overrides; each returns its results dict.
* :func:`evaluate_saved`: Recall@K of a saved model; :func:`demo`: the three runs on digits.
* :class:`DistillationTrainer`: the same distillation as a pytorch-metric-learning trainer.

Under ``torchrun`` the jobs train on all the processes (:func:`distributed_session`; see
:mod:`rkd_pml.training.distributed_setup`).
"""

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import BaselineConfig, DistillConfig, TeacherConfig, TrainConfig, TripletConfig
from .distributed_setup import DistributedContext, distributed_session
from .jobs import (
    DEMO_SETTINGS,
    build_model,
    demo,
    distill,
    evaluate_saved,
    find_saved_model,
    load_teacher,
    resolve_device,
    train_baseline,
    train_teacher,
)
from .loop import TrainingInterrupted, TrainingSetup, epoch_batches, fit, request_stop, stop_on_signals
from .objective import (
    DistributedObjective,
    Objective,
    build_objective,
    distillation_loss_names,
    register_distillation_loss,
)
from .run_dir import RunDir, is_main_process

__all__ = [
    "BaselineConfig",
    "CheckpointError",
    "DEMO_SETTINGS",
    "DistillConfig",
    "DistributedContext",
    "DistributedObjective",
    "Objective",
    "RunDir",
    "TeacherConfig",
    "TrainConfig",
    "TrainingInterrupted",
    "TrainingSetup",
    "TripletConfig",
    "build_model",
    "build_objective",
    "demo",
    "distill",
    "distillation_loss_names",
    "distributed_session",
    "epoch_batches",
    "evaluate_saved",
    "find_saved_model",
    "fit",
    "is_main_process",
    "load_checkpoint",
    "load_teacher",
    "register_distillation_loss",
    "request_stop",
    "resolve_device",
    "save_checkpoint",
    "stop_on_signals",
    "train_baseline",
    "train_teacher",
]


def __getattr__(name: str):
    # PML 2's trainers (which PML 3 removed) are imported only when the trainer is asked for
    if name == "DistillationTrainer":
        from .trainer import DistillationTrainer

        return DistillationTrainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
