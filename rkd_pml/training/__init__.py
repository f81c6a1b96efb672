"""Training workflow: teacher, triplet baseline and RKD student, as Python functions.

* :func:`train_teacher`, :func:`train_baseline`, :func:`distill`: one run each, configured by
  :class:`TeacherConfig`, :class:`BaselineConfig`, :class:`DistillConfig` (the RKD paper's
  recipe by default) or keyword overrides; each returns its results dict.
* :func:`evaluate_saved`: Recall@K of a saved model; :func:`demo`: the three runs on digits.
* :class:`DistillationTrainer`: the same distillation as a pytorch-metric-learning 2 trainer
  (imported on demand: PML 3 has no trainers).

Under ``torchrun`` the jobs train on all the processes (see :mod:`rkd_pml.distributed.session`).
"""

from .._lazy import lazy_package

# imported on first use: the command line reads the configs without loading torch
_EXPORTS = {
    **dict.fromkeys(("CheckpointError", "load_checkpoint", "save_checkpoint"), ".checkpoint"),
    **dict.fromkeys(("BaselineConfig", "DistillConfig", "TeacherConfig", "TrainConfig", "TripletConfig"), ".config"),
    **dict.fromkeys(("DEMO_SETTINGS", "demo"), ".demo"),
    **dict.fromkeys(("evaluate_all", "evaluate_saved"), ".evaluate_job"),
    **dict.fromkeys(("distill", "resolve_device", "run_job", "train_baseline", "train_teacher"), ".jobs"),
    **dict.fromkeys(("TrainingSetup", "fit"), ".loop"),
    **dict.fromkeys(("Objective", "build_objective"), ".objective"),
    "SettingWarning": ".resolve",
    **dict.fromkeys(("RunDir", "is_main_process"), "..runs"),
    **dict.fromkeys(("TrainingInterrupted", "request_stop", "stop_on_signals"), ".signals"),
    # PML 2's trainers (which PML 3 removed) are imported only when the trainer is asked for
    "DistillationTrainer": ".trainer",
}
lazy_package(__name__, _EXPORTS)

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

