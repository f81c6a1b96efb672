"""Teachers of the relational task: timm's DistillationTeacher, plus one for EmbeddingModels.

A teacher is given as

* a :class:`timm.task.DistillationTeacher` (used as is);
* a timm model name, also ``hf-hub:...`` or ``local-dir:...`` (built by ``DistillationTeacher``
  with pretrained weights, as timm's own distillation tasks do, with the student's
  ``num_classes`` and ``in_chans``); a timm name wins over a folder of the same name (write
  ``./resnet18`` or pass a ``Path`` for the folder);
* a directory written by :meth:`rkd_pml.models.EmbeddingModel.save`, or a run directory
  holding one in ``<run>/model/``;
* an ``nn.Module``: an :class:`~rkd_pml.models.EmbeddingModel` (possibly wrapped in
  :class:`~rkd_pml.models.FrozenModel`) or any timm model.

The task's input is normalised with the student's mean/std. ``normalize_input`` maps it to
what the teacher expects: a timm teacher gets it re-normalised with its own mean/std where
they differ (timm's rule); an EmbeddingModel teacher gets the unnormalised images in [0, 1],
to which it applies its own mean/std and channel conversion.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence, Union

import timm
import torch
from timm.task import DistillationTeacher
from timm.utils import unwrap_model
from torch import Tensor, nn

from ..files import one_line
from ..models.embedding import CONFIG_NAME, EmbeddingModel
from ..models.frozen import FrozenModel
from ..models.weights import PretrainedWeightsError, _create_from_hub

TeacherArg = Union[str, "os.PathLike[str]", nn.Module, DistillationTeacher]


def fit_channels(values: Sequence[float], in_chans: int) -> tuple[float, ...]:
    """Mean or std values fitted to ``in_chans`` channels.

    timm reports 3 values even for ``in_chans=1`` models; a grey model gets their average
    (the rule of :func:`rkd_pml.models.resolve_data_config`)."""
    values = tuple(float(v) for v in values)
    if len(values) == in_chans:
        return values
    if len(values) == 1:
        return values * in_chans
    if in_chans == 1:
        return (sum(values) / len(values),)
    raise ValueError(f"{len(values)} normalisation values do not fit in_chans={in_chans}")


def model_mean_std(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` of a timm model's ``pretrained_cfg``, fitted to its ``in_chans``."""
    model = unwrap_model(model)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    in_chans = int(getattr(model, "in_chans", len(cfg.get("mean", (0, 0, 0)))))
    mean = cfg.get("mean", (0.485, 0.456, 0.406))
    std = cfg.get("std", (0.229, 0.224, 0.225))
    return fit_channels(mean, in_chans), fit_channels(std, in_chans)


def _as_buffer(values: Sequence[float], like: Tensor) -> Tensor:
    return torch.tensor(values, device=like.device, dtype=like.dtype).view(1, -1, 1, 1)


class EmbeddingModelTeacher(DistillationTeacher):
    """A frozen :class:`~rkd_pml.models.EmbeddingModel` behind timm's teacher interface.

    Its "pre-logit features" are its embeddings ``(B, embedding_dim)``, exactly what
    ``EmbeddingModel.forward`` returns (L2-normalised where the model was built with
    ``l2_normalize=True``): the representation it was trained and evaluated with. It has no
    logits, so logit KD cannot use it.
    """

    def __init__(self, model: EmbeddingModel, device=None, dtype=None):
        if not isinstance(model, EmbeddingModel):
            raise TypeError(f"model must be an EmbeddingModel, got {type(model).__name__}")
        super().__init__(model, device=device, dtype=dtype)
        config = model.data_config
        self.mean_kd = _as_buffer(config["mean"], self.mean_kd)
        self.std_kd = _as_buffer(config["std"], self.std_kd)

    def normalize_input(
        self, input: Tensor, student_mean: Tensor | None = None, student_std: Tensor | None = None
    ) -> Tensor:
        """Student-normalised ``(B, C, H, W)`` -> unnormalised images ``(B, C, H, W)`` in [0, 1]."""
        if student_mean is None or student_std is None:
            raise ValueError("an EmbeddingModel teacher needs the student's mean and std")
        return input * student_std + student_mean

    def _forward_features(self, input: Tensor) -> Tensor:
        """Images in [0, 1] ``(B, C, H, W)`` -> embeddings ``(B, embedding_dim)``."""
        return self.model(input)

    def forward(self, input: Tensor, return_features: bool = False) -> Tensor:
        if not return_features:
            raise ValueError(
                "an EmbeddingModel teacher has embeddings, not class logits: logit KD "
                "(kd_loss_weight > 0) needs a timm classifier as teacher"
            )
        return super().forward(input, return_features=True)


def _is_timm_name(text: str) -> bool:
    if text.startswith(("hf-hub:", "hf_hub:", "local-dir:")):
        return True
    return timm.is_model(text.split(".", 1)[0]) if text.split(".", 1)[0] else False


def _embedding_model_dir(path: Path) -> Path | None:
    """The EmbeddingModel directory at ``path`` or ``path/model`` (a run directory), or None."""
    from ..models.saved import find_saved_model

    try:
        return find_saved_model(path, flag="teacher_model")
    except FileNotFoundError:
        return None


def _named_teacher(
    name: str,
    student: nn.Module,
    pretrained_path: str | None,
    pretrained_cfg_overlay: dict[str, Any] | None,
    device: torch.device | None,
    dtype: torch.dtype | None,
) -> DistillationTeacher:
    """A teacher given by timm name, with pretrained weights and the student's ``num_classes``
    and ``in_chans``. Hub weights go through :func:`rkd_pml.models.weights` (cache first, an
    offline or unreachable hub is one clear error); weights that cannot be loaded otherwise
    raise :class:`~rkd_pml.models.PretrainedWeightsError` naming ``teacher_model``."""
    hint = (
        f"pass a local weights file instead: teacher_pretrained_path='path/to/{name}.safetensors' "
        "(or a saved EmbeddingModel or nn.Module as teacher_model)"
    )
    sizes = dict(num_classes=student.num_classes, in_chans=student.in_chans)
    if pretrained_path is None and pretrained_cfg_overlay is None and timm.is_model(name):
        try:
            model = _create_from_hub(name, dict(**sizes, device=device, dtype=dtype), hint=hint)
        except PretrainedWeightsError as exc:
            raise PretrainedWeightsError(f"teacher_model {name!r}: {exc}") from exc
        return DistillationTeacher(model, device=device, dtype=dtype)
    try:
        return DistillationTeacher(name, **sizes, pretrained_path=pretrained_path,
                                   pretrained_cfg_overlay=pretrained_cfg_overlay, device=device, dtype=dtype)
    except (OSError, RuntimeError) as exc:  # hub errors are OSErrors; a mismatched file a RuntimeError
        raise PretrainedWeightsError(f"teacher_model {name!r}: cannot load its weights: {one_line(exc)}; {hint}") from exc


def resolve_teacher(
    teacher: TeacherArg,
    student: nn.Module,
    pretrained_path: str | None = None,
    pretrained_cfg_overlay: dict[str, Any] | None = None,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> DistillationTeacher:
    """A ``DistillationTeacher`` for ``teacher`` (see the module docstring for what it may be).

    Raises ``ValueError``/``TypeError`` naming ``teacher_model`` when it is none of those."""
    if isinstance(teacher, DistillationTeacher):
        return teacher
    if isinstance(teacher, FrozenModel) and isinstance(teacher.model, EmbeddingModel):
        teacher = teacher.model
    if isinstance(teacher, EmbeddingModel):
        return EmbeddingModelTeacher(teacher, device=device, dtype=dtype)
    if isinstance(teacher, str) and _is_timm_name(teacher):
        wrapped = _named_teacher(teacher, unwrap_model(student), pretrained_path, pretrained_cfg_overlay, device, dtype)
    elif isinstance(teacher, (str, os.PathLike)):
        model_dir = _embedding_model_dir(Path(teacher))
        if model_dir is None:
            what = "a directory without an EmbeddingModel" if Path(teacher).is_dir() else (
                "neither a timm model name nor a directory"
            )
            raise ValueError(
                f"teacher_model {os.fspath(teacher)!r} is {what} (expected a timm name, or {CONFIG_NAME} "
                "of an EmbeddingModel in the folder or in its model/ folder)"
            )
        model = EmbeddingModel.load(model_dir, map_location=device or "cpu")
        return EmbeddingModelTeacher(model, device=device, dtype=dtype)
    elif isinstance(teacher, nn.Module):
        wrapped = DistillationTeacher(teacher, device=device, dtype=dtype)
    else:
        raise TypeError(
            "teacher_model must be a timm model name, an EmbeddingModel directory or an "
            f"nn.Module, got {type(teacher).__name__}"
        )
    mean, std = model_mean_std(wrapped.model)
    wrapped.mean_kd = _as_buffer(mean, wrapped.mean_kd)
    wrapped.std_kd = _as_buffer(std, wrapped.std_kd)
    return wrapped
