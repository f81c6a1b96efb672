"""Training workflow: teacher, triplet baseline and RKD student, as Python functions.

* :func:`train_teacher`, :func:`train_baseline`, :func:`distill`: one run each, configured by
  :class:`TeacherConfig`, :class:`BaselineConfig`, :class:`DistillConfig` (the RKD paper's
  recipe by default) or keyword overrides; each returns its results dict.
* :func:`evaluate_saved`: Recall@K of a saved model; :func:`demo`: the three runs on digits.
* :class:`DistillationTrainer`: the same distillation as a pytorch-metric-learning 2 trainer
  (imported on demand: PML 3 has no trainers).

Under ``torchrun`` the jobs train on all the processes (see :mod:`rkd_pml.distributed.session`).
"""

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import BaselineConfig, DistillConfig, TeacherConfig, TrainConfig, TripletConfig
from .demo import DEMO_SETTINGS, demo
from .evaluate_job import evaluate_all, evaluate_saved
from .jobs import distill, resolve_device, run_job, train_baseline, train_teacher
from .loop import TrainingSetup, fit
from .objective import Objective, build_objective
from .resolve import SettingWarning
from .run_dir import RunDir, is_main_process
from .signals import TrainingInterrupted, request_stop, stop_on_signals

__all__ = [
    "BaselineConfig",
    "CheckpointError",
    "DEMO_SETTINGS",
    "DistillConfig",
    "Objective",
    "RunDir",
    "SettingWarning",
    "TeacherConfig",
    "TrainConfig",
    "TrainingInterrupted",
    "TrainingSetup",
    "TripletConfig",
    "build_objective",
    "demo",
    "distill",
    "evaluate_all",
    "evaluate_saved",
    "fit",
    "is_main_process",
    "load_checkpoint",
    "request_stop",
    "resolve_device",
    "run_job",
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
