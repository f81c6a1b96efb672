"""Relational Knowledge Distillation as a timm training task (the paper's classification setting).

``loss = task_loss_weight * task_loss + distance_weight * RKD-D + angle_weight * RKD-A
(+ kd_loss_weight * logit KD)``, where the RKD terms relate the pooled pre-logit features of
the student ``(B, Fs)`` and of the frozen teacher ``(B, Ft)`` (widths may differ: relations
are computed inside each model) and are the package's :class:`~rkd_pml.losses.RKDDistanceLoss`
and :class:`~rkd_pml.losses.RKDAngleLoss`. Under ``torch.distributed`` with more than one
process they relate the global batch (:func:`rkd_pml.distributed.distributed_rkd`).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Optional, Union

import torch
import torch.nn.functional as F
from timm.task import TrainingTask, resolve_classification_loss
from timm.task.distillation import DistillationTeacher, FeatureDistillationTrainableModule
from timm.utils import unwrap_model
from torch import Tensor, nn

from ..distributed import distributed_rkd
from ..losses import RKDAngleLoss, RKDDistanceLoss
from ..losses.inputs import check_real
from .teacher import EmbeddingModelTeacher, TeacherArg, model_mean_std, resolve_teacher

_logger = logging.getLogger(__name__)


def _world_size() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


def _num_classes(model: nn.Module) -> Optional[int]:
    """The number of class logits of a timm classifier, or None when it has no classifier."""
    model = unwrap_model(model)
    count = getattr(model, "num_classes", None)
    if count is None and hasattr(model, "get_classifier"):
        count = getattr(model.get_classifier(), "out_features", None)
    return int(count) if count is not None else None


def _check_kd_classes(teacher: DistillationTeacher, student: nn.Module) -> None:
    """Logit KD compares class distributions: the teacher needs logits over the student's classes."""
    if isinstance(teacher, EmbeddingModelTeacher):
        raise ValueError(
            "kd_loss_weight > 0 needs a teacher with class logits; an EmbeddingModel "
            "teacher has embeddings only (use kd_loss_weight=0)"
        )
    theirs, mine = _num_classes(teacher.model), _num_classes(student)
    if not theirs or theirs != mine:
        raise ValueError(
            f"kd_loss_weight > 0 compares class logits, but teacher_model has {theirs or 'no'} classes "
            f"and student_model {mine}: give a teacher with the student's classes, or kd_loss_weight=0"
        )


class RelationalDistillationTask(TrainingTask):
    """Task loss of a timm classifier plus RKD on pooled pre-logit features (plus optional KD).

    Args:
        student_model: a timm classifier (``forward_features``/``forward_head``, a
            ``pretrained_cfg`` with the mean/std its input is normalised with).
        teacher_model: a timm model name, an ``nn.Module`` (timm model or
            :class:`~rkd_pml.models.EmbeddingModel`), a saved EmbeddingModel directory (or a
            run directory with one in ``model/``), or a ``timm.task.DistillationTeacher``.
            An EmbeddingModel teacher contributes its embeddings as features (see
            :class:`~rkd_pml.tasks.teacher.EmbeddingModelTeacher`). It stays frozen in eval mode.
        criterion: the task loss ``criterion(logits (B, K), target) -> scalar``; default: timm's
            ``create_classification_loss(**criterion_kwargs)`` (cross-entropy).
        criterion_kwargs: arguments of ``create_classification_loss`` when ``criterion`` is None.
        teacher_pretrained_path, teacher_pretrained_cfg_overlay: for a teacher given by name.
        distance_weight: weight of RKD-D (25, the classification toolkits' value).
        angle_weight: weight of RKD-A (50).
        task_loss_weight: weight of the task loss (1).
        kd_loss_weight: weight of Hinton's logit KD, ``T^2 * KL(teacher || student)`` as in
            timm's ``LogitDistillationTask``; 0 (default) computes no KD term.
        temperature: the KD softmax temperature ``T``.

    Weights are finite and ``>= 0``, the temperature finite and ``> 0``; with KD the teacher
    must give logits over the student's classes. All is checked here, before any forward.
        device, dtype, verbose: as in timm's tasks.

    Normalisation: the input is normalised with the student's ``pretrained_cfg`` mean/std; a
    timm teacher whose mean/std differ gets it re-normalised (timm's ``DistillationTeacher``
    rule), an EmbeddingModel teacher gets the unnormalised images. Mean/std values are fitted
    to each model's ``in_chans`` first (a grey model's three timm values become their average),
    so a 1-channel batch stays 1-channel.

    ``forward(input (B, C, H, W) normalised for the student, target) -> dict`` with ``loss``,
    ``output`` (student logits ``(B, K)``), ``task_loss``, ``rkd_distance_loss``,
    ``rkd_angle_loss`` (unweighted; under DDP the global-batch values) and ``kd_loss`` when
    ``kd_loss_weight > 0``.
    """

    def __init__(
        self,
        student_model: nn.Module,
        teacher_model: TeacherArg,
        criterion: Optional[Union[nn.Module, Callable]] = None,
        criterion_kwargs: Optional[Dict[str, Any]] = None,
        teacher_pretrained_path: Optional[str] = None,
        teacher_pretrained_cfg_overlay: Optional[Dict[str, Any]] = None,
        distance_weight: float = 25.0,
        angle_weight: float = 50.0,
        task_loss_weight: float = 1.0,
        kd_loss_weight: float = 0.0,
        temperature: float = 4.0,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
        verbose: bool = True,
    ):
        super().__init__(device=device, dtype=dtype, verbose=verbose)
        weights = {
            name: check_real(name, value)
            for name, value in (
                ("distance_weight", distance_weight),
                ("angle_weight", angle_weight),
                ("task_loss_weight", task_loss_weight),
                ("kd_loss_weight", kd_loss_weight),
            )
        }
        temperature = check_real("temperature", temperature, positive=True)
        student = unwrap_model(student_model)
        for attr in ("forward_features", "forward_head", "pretrained_cfg"):
            if not hasattr(student, attr):
                raise TypeError(
                    f"student_model must be a timm model (it has no {attr!r}), got {type(student).__name__}"
                )
        self.teacher = resolve_teacher(
            teacher_model,
            student_model,
            teacher_pretrained_path,
            teacher_pretrained_cfg_overlay,
            self.device,
            self.dtype,
        )
        if weights["kd_loss_weight"] > 0:
            _check_kd_classes(self.teacher, student)
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        self.criterion = resolve_classification_loss(criterion, self.device, criterion_kwargs=criterion_kwargs)
        self.distance_weight = weights["distance_weight"]
        self.angle_weight = weights["angle_weight"]
        self.task_loss_weight = weights["task_loss_weight"]
        self.kd_loss_weight = weights["kd_loss_weight"]
        self.temperature = temperature
        self.rkd_distance = RKDDistanceLoss()
        self.rkd_angle = RKDAngleLoss()
        self.trainable_module = FeatureDistillationTrainableModule(student_model, projection=None)

        mean, std = model_mean_std(student)
        shape = (1, -1, 1, 1)
        self.register_buffer(
            "student_mean", torch.tensor(mean, device=self.device, dtype=self.dtype).view(shape), persistent=False
        )
        self.register_buffer(
            "student_std", torch.tensor(std, device=self.device, dtype=self.dtype).view(shape), persistent=False
        )
        if self.verbose:
            _logger.info(
                f"RelationalDistillationTask: distance_weight={self.distance_weight}, "
                f"angle_weight={self.angle_weight}, task_loss_weight={self.task_loss_weight}, "
                f"kd_loss_weight={self.kd_loss_weight}, temperature={self.temperature}"
            )

    def train(self, mode: bool = True) -> "RelationalDistillationTask":
        """Set the training mode of the student; the teacher stays in evaluation mode."""
        super().train(mode)
        self.teacher.eval()
        return self

    def prepare_distributed(self, device_ids: Optional[list] = None, **ddp_kwargs) -> "RelationalDistillationTask":
        """Wrap the student in DistributedDataParallel; the frozen teacher stays unwrapped.

        The RKD terms then relate the global batch (every rank must bring equal batches)."""
        from torch.nn.parallel import DistributedDataParallel as DDP

        self.teacher.requires_grad_(False)
        self.trainable_module = DDP(self.trainable_module, device_ids=device_ids, **ddp_kwargs)
        return self

    def compile(self, backend: str = "inductor", mode: Optional[str] = None, **compile_kwargs) -> nn.Module:
        """Compile the student (train and eval entry points) and the teacher's feature path."""
        eval_model = torch.compile(self.trainable_module.student, backend=backend, mode=mode, **compile_kwargs)
        self.eval_model = eval_model
        self.trainable_module = torch.compile(self.trainable_module, backend=backend, mode=mode, **compile_kwargs)
        self.teacher.compile(
            backend=backend, mode=mode, compile_model=False, compile_features=True, **compile_kwargs
        )
        return eval_model

    def get_eval_model(self, module: Optional[nn.Module] = None, ema: bool = False) -> Optional[nn.Module]:
        """The student (unwrapped from the task's trainable module, DDP or compiled wrappers)."""
        resolved = super().get_eval_model(module=module, ema=ema)
        current = resolved
        while current is not None:
            if isinstance(current, FeatureDistillationTrainableModule):
                return current.student
            inner = getattr(current, "module", None)
            current = inner if inner is not None else getattr(current, "_orig_mod", None)
        return resolved

    def get_clip_parameters(self, exclude_head: bool = False):
        parameters = list(unwrap_model(self.trainable_module).student.parameters())
        return parameters[:-2] if exclude_head else parameters

    def teacher_outputs(self, input: Tensor) -> tuple[Tensor, Optional[Tensor]]:
        """Teacher ``(features (B, Ft), logits (B, K) or None)`` of the student-normalised input."""
        with torch.no_grad():
            input_kd = self.teacher.normalize_input(input, self.student_mean, self.student_std).detach()
            if self.kd_loss_weight == 0:
                return self.teacher(input_kd, return_features=True), None
            model = self.teacher.model
            feature_map = model.forward_features(input_kd)
            return model.forward_head(feature_map, pre_logits=True), model.forward_head(feature_map)

    def rkd_terms(self, student_features: Tensor, teacher_features: Tensor) -> tuple[Tensor, Tensor]:
        """``(RKD-D, RKD-A)`` of student ``(B, Fs)`` and teacher ``(B, Ft)`` features.

        Under DDP (world size > 1) they are PML-wrapped losses of the global batch, multiplied
        by the world size (so that DDP's gradient average is the global-batch gradient)."""
        if _world_size() > 1:
            distance_fn, _ = distributed_rkd(self.rkd_distance)
            angle_fn, _ = distributed_rkd(self.rkd_angle)
        else:
            distance_fn, angle_fn = self.rkd_distance, self.rkd_angle
        distance = distance_fn(student_features, ref_emb=teacher_features)
        angle = angle_fn(student_features, ref_emb=teacher_features)
        return distance, angle

    def forward(self, input: Tensor, target: Tensor) -> Dict[str, Tensor]:
        """``input (B, C, H, W)`` normalised with the student's mean/std, ``target`` as the
        criterion takes it (e.g. ``(B,)`` class indices) -> the dict described in the class."""
        student_logits, student_features = self.trainable_module(input)
        task_loss = self.criterion(student_logits, target)
        teacher_features, teacher_logits = self.teacher_outputs(input)
        distance, angle = self.rkd_terms(student_features, teacher_features)
        total = self.task_loss_weight * task_loss + self.distance_weight * distance + self.angle_weight * angle
        world = _world_size()
        result = {
            "output": student_logits,
            "task_loss": task_loss,
            "rkd_distance_loss": distance.detach() / world,
            "rkd_angle_loss": angle.detach() / world,
        }
        if teacher_logits is not None:
            t = self.temperature
            log_p_s = F.log_softmax(student_logits / t, dim=-1)
            log_p_t = F.log_softmax(teacher_logits / t, dim=-1)
            kd_loss = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * (t * t)
            total = total + self.kd_loss_weight * kd_loss
            result["kd_loss"] = kd_loss
        result["loss"] = total
        return result
