"""Settings left unset are resolved before a run starts, in one order of precedence:

1. what the user gave (a flag, a config file, a keyword argument);
2. for ``distill`` and ``evaluate``: what the teacher (or the saved model) was trained with,
   recorded in its saved model directory (``training_data``);
3. the data set's and the model's defaults.

A given data setting that differs from the teacher's is honoured with one warning naming both
values. The resolved values are what ``config.json`` records: none is left ``None``.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

from .config import AUTO_VAL_FRACTION, TrainConfig

#: the data settings that travel with a trained model
DATA_SETTINGS = ("dataset", "root", "test_root", "image_size", "in_chans", "test_transform")


class SettingWarning(UserWarning):
    """A given setting differs from the one a teacher or saved model was trained with."""


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def inherit_data_settings(cfg: TrainConfig, recorded: dict[str, Any], source: str) -> TrainConfig:
    """Fill the unset data settings of ``cfg`` from ``recorded`` (a model's ``training_data``);
    warn once for each given setting that differs from it. When ``cfg`` names another data set
    than the recorded one, the recorded roots (where that data set lives) are not inherited."""
    changes = {}
    other_data = cfg.dataset is not None and cfg.dataset != recorded.get("dataset")
    for name in DATA_SETTINGS:
        if name not in recorded or recorded[name] is None or (other_data and name in _OF_THE_DATA_SET):
            continue
        mine, theirs = getattr(cfg, name), recorded[name]
        if mine is None:
            changes[name] = theirs
        elif _normal(name, mine) != _normal(name, theirs):
            warnings.warn(f"{flag(name)} {mine} differs from {theirs}, the setting {source} was trained with; using {mine}",
                          SettingWarning, stacklevel=3)
    return cfg.replace(**changes) if changes else cfg


#: Recorded data settings that belong to the recorded data set only.
_OF_THE_DATA_SET = ("root", "test_root")


def _normal(name: str, value: Any) -> Any:
    return os.path.abspath(value) if name in ("root", "test_root") and isinstance(value, str) else value


def resolve_data_defaults(cfg: TrainConfig) -> TrainConfig:
    """The data set's defaults for what is still unset (and roots made absolute)."""
    from ..data import recall_ks
    from ..data.registry import DEFAULT_IMAGE_SIZES

    dataset = cfg.dataset or "digits"
    return cfg.replace(
        dataset=dataset,
        root=os.path.abspath(cfg.root) if cfg.root else None,
        test_root=os.path.abspath(cfg.test_root) if cfg.test_root else None,
        image_size=cfg.image_size or DEFAULT_IMAGE_SIZES[dataset],
        in_chans=cfg.in_chans or 3,
        test_transform=cfg.test_transform or ("paper" if cfg.train_transform == "paper" else "timm"),
        recall_ks=tuple(cfg.recall_ks) if cfg.recall_ks is not None else tuple(recall_ks(dataset)),
    )


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


def training_data(cfg: TrainConfig) -> dict[str, Any]:
    """What a saved model records of its training data (see :data:`DATA_SETTINGS`)."""
    return {**{name: getattr(cfg, name) for name in DATA_SETTINGS},
            "train_transform": cfg.train_transform, "precision": cfg.precision, "recall_ks": list(cfg.recall_ks)}
