"""Settings left unset are resolved before a run starts, in one order of precedence:

1. what the user gave (a flag, a config file, a keyword argument);
2. for ``distill`` and ``evaluate``: what the teacher (or the saved model) was trained with,
   recorded in its saved model directory (``training_data``);
3. the data set's and the model's defaults.

The data settings are one value, resolved by :func:`rkd_pml.data.settings.resolve_data_settings`
(a given data setting that differs from the teacher's is honoured with one warning naming both
values); this module resolves the training settings that follow from the data (Recall@K, the
validation fraction, images per class) and what a saved model records. A run's config gets the
resolved values, so that ``config.json`` records them: none is left ``None``.
"""

from __future__ import annotations

from typing import Any

from ..data.settings import DataSettings, SettingWarning
from .config import AUTO_VAL_FRACTION, TrainConfig

__all__ = ["SettingWarning", "resolve_recall_ks", "resolve_m_per_class", "resolve_val_fraction", "training_data"]


def resolve_recall_ks(cfg: TrainConfig, dataset: str) -> tuple[int, ...]:
    """The Ks of Recall@K: the given ones, else those usually reported on ``dataset``."""
    from ..data import recall_ks

    return tuple(cfg.recall_ks) if cfg.recall_ks is not None else tuple(recall_ks(dataset))


def resolve_val_fraction(cfg: TrainConfig, train_labels: Any) -> TrainConfig:
    """The automatic validation fraction where the training classes allow a validation split."""
    import numpy as np

    from ..data.batches import auto_val_fraction

    if cfg.val_fraction is not None:
        return cfg
    return cfg.replace(val_fraction=auto_val_fraction(len(np.unique(np.asarray(train_labels))), AUTO_VAL_FRACTION))


def resolve_m_per_class(cfg: TrainConfig, train_labels: Any) -> TrainConfig:
    """Images per class: 4, or the smallest divisor of the batch that the classes fill."""
    from ..data.batches import choose_m_per_class

    return cfg if cfg.m_per_class is not None else cfg.replace(m_per_class=choose_m_per_class(train_labels, cfg.batch_size))


def training_data(cfg: TrainConfig, data: DataSettings) -> dict[str, Any]:
    """What a saved model records of its training: the data settings (:meth:`DataSettings.record`),
    the precision and the Ks of Recall@K."""
    return {**data.record(), "precision": cfg.precision, "recall_ks": list(cfg.recall_ks)}
