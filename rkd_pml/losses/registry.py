"""The registry of distillation losses: name -> factory, read by the config, the CLI and the study.

A factory takes ``(config, student_dim, teacher_dim)`` and returns a loss called as
``loss(student_emb (N, Ds), labels (N,), indices_tuple, ref_emb=teacher_emb (N, Dt))``;
``config`` is the job's :class:`~rkd_pml.training.config.DistillConfig` (or any object with the
option attributes the factory reads). Adding a loss is one module and one
:func:`register_distillation_loss` call::

    register_distillation_loss("my-loss", lambda cfg, s, t: MyLoss(s, t), "what it does")

after which ``DistillConfig(loss="my-loss")`` and ``rkd-pml distill --loss my-loss`` use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from .correlation_congruence import CorrelationCongruenceLoss
from .darkrank import DarkRankLoss
from .fitnet import FitNetEmbeddingLoss
from .pkt import PKTLoss
from .relaxed_contrastive import RelaxedContrastiveLoss
from .rkd import RKDLoss
from .rkd_fitnet import RKDFitNetLoss
from .similarity_preserving import SimilarityPreservingLoss

#: factory(config, student_dim, teacher_dim) -> loss
LossFactory = Callable[[Any, int, int], nn.Module]

#: what the config's ``loss`` takes to train the student with its metric loss alone
NO_DISTILLATION = "triplet"


@dataclass(frozen=True)
class RegisteredLoss:
    factory: LossFactory
    help: str


DISTILLATION_LOSSES: dict[str, RegisteredLoss] = {}


def register_distillation_loss(name: str, factory: LossFactory, help: str = "") -> None:
    """Make ``name`` a choice of ``DistillConfig.loss`` and ``--loss`` (see the module docstring)."""
    key = name.lower()
    if key == NO_DISTILLATION:
        raise ValueError(f"{NO_DISTILLATION!r} is reserved: it means no distillation loss")
    DISTILLATION_LOSSES[key] = RegisteredLoss(factory, help)


def distillation_loss_names() -> list[str]:
    """The registered names, then ``"triplet"`` (no distillation)."""
    return sorted(DISTILLATION_LOSSES) + [NO_DISTILLATION]


def build_distillation_loss(name: str, config: Any, student_dim: int, teacher_dim: int) -> nn.Module:
    """The registered loss ``name`` for these widths; ValueError naming the choices otherwise."""
    entry = DISTILLATION_LOSSES.get(str(name).lower())
    if entry is None:
        raise ValueError(f"unknown distillation loss {name!r}; choose one of {', '.join(distillation_loss_names())}")
    return entry.factory(config, student_dim, teacher_dim)


register_distillation_loss(
    "rkd",
    lambda cfg, s, t: RKDLoss(distance_weight=cfg.distance_weight, angle_weight=cfg.angle_weight),
    "RKD-DA: distance_weight x RKD-D + angle_weight x RKD-A",
)
register_distillation_loss(
    "rkd-d", lambda cfg, s, t: RKDLoss(distance_weight=cfg.distance_weight, angle_weight=0.0), "RKD-D alone"
)
register_distillation_loss(
    "rkd-a", lambda cfg, s, t: RKDLoss(distance_weight=0.0, angle_weight=cfg.angle_weight), "RKD-A alone"
)
register_distillation_loss(
    "darkrank",
    lambda cfg, s, t: DarkRankLoss(alpha=cfg.darkrank_alpha, beta=cfg.darkrank_beta, list_length=cfg.darkrank_list_length),
    "hard DarkRank (Chen et al. 2018)",
)
register_distillation_loss(
    "fitnet", lambda cfg, s, t: FitNetEmbeddingLoss(s, t), "FitNet: learned linear map to the teacher's width + MSE"
)
register_distillation_loss(
    "rkd-fitnet",
    lambda cfg, s, t: RKDFitNetLoss(s, t, cfg.distance_weight, cfg.angle_weight, 1.0),
    "RKD-DA + FitNet: distance_weight x RKD-D + angle_weight x RKD-A + FitNet (map to the teacher's width, MSE)",
)
register_distillation_loss(
    "pkt", lambda cfg, s, t: PKTLoss(), "PKT (Passalis and Tefas 2018): KL between cosine-similarity distributions"
)
register_distillation_loss(
    "sp", lambda cfg, s, t: SimilarityPreservingLoss(), "SP (Tung and Mori 2019): row-normalised batch Gram matrices"
)
register_distillation_loss(
    "cc",
    lambda cfg, s, t: CorrelationCongruenceLoss(),
    "CC (Peng et al. 2019): Taylor-RBF batch correlation matrices, gamma 0.4, order 2",
)
register_distillation_loss(
    "relaxed-contrastive",
    lambda cfg, s, t: RelaxedContrastiveLoss(),
    "relaxed contrastive (Kim et al. 2021): teacher soft labels, sigma 1, delta 1",
)
