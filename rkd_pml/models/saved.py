"""Saved models by path: a model directory (written by ``EmbeddingModel.save``) or a run
directory holding one in ``model/``; and building a model from a timm name or such a path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .embedding import CONFIG_NAME, WEIGHTS_NAME, EmbeddingModel
from .frozen import freeze_teacher

#: the file that marks a run directory (its settings)
RUN_CONFIG = "config.json"


def find_saved_model(path: str | Path, flag: str = "--teacher") -> Path:
    """The saved-model directory of ``path``: ``path`` itself or its ``model/`` folder (a run).

    ``flag`` names the option that gave the path in error messages.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{flag} {path} does not exist: pass a directory written by rkd-pml train-teacher (or EmbeddingModel.save)")
    for candidate in (path / "model", path):
        if (candidate / CONFIG_NAME).is_file() and (candidate / WEIGHTS_NAME).is_file():
            return candidate
    if (path / RUN_CONFIG).is_file():
        raise FileNotFoundError(f"{flag} {path} is a run directory without a saved model (model/): the run has not finished; continue it with --resume")
    raise FileNotFoundError(
        f"{flag} {path} is not a saved model: expected {WEIGHTS_NAME} and {CONFIG_NAME} (written by EmbeddingModel.save) in it or in its model/ folder"
    )


def looks_like_saved_model(spec: str) -> bool:
    """A path rather than a timm name: anything with a path separator or a leading dot, or a
    directory that is not also a timm name (write ``./resnet18`` for a folder named so)."""
    import timm

    if spec.startswith(("hf-hub:", "hf_hub:")):
        return False
    if "/" in spec or "\\" in spec or spec.startswith("."):
        return True
    return Path(spec).is_dir() and not timm.is_model(spec)


def build_model(
    spec: str, embedding_dim: int, pretrained: bool = False, weights: str | None = None,
    l2_normalize: bool = False, in_chans: int = 3, flag: str = "--student",
) -> EmbeddingModel:
    """A timm name -> a new ``EmbeddingModel``; a saved directory -> that model, loaded
    (its embedding width, L2 and channels are the saved ones)."""
    if looks_like_saved_model(spec):
        return EmbeddingModel.load(find_saved_model(spec, flag))
    return EmbeddingModel(
        spec, embedding_dim=int(embedding_dim), pretrained=weights if weights else bool(pretrained),
        l2_normalize=l2_normalize, in_chans=in_chans,
    )


def load_teacher(path: str | Path, device: torch.device | str = "cpu") -> nn.Module:
    """A saved teacher, frozen: eval mode for good, no gradients, inference-mode forward."""
    return freeze_teacher(EmbeddingModel.load(find_saved_model(path), map_location=device))


def saved_training_data(path: str | Path, flag: str = "--teacher") -> dict[str, Any]:
    """The data settings a saved model (or a run's model) was trained with; ``{}`` if unrecorded."""
    from .embedding import read_config

    return dict(read_config(find_saved_model(path, flag) / CONFIG_NAME).get("training_data") or {})
