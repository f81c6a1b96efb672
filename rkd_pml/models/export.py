"""Export an EmbeddingModel as a plain timm model whose classifier is the embedding head.

The exported folder is timm's hub layout, written by this module (not by timm's
``save_for_hf``, whose keywords differ between timm versions): ``model.safetensors`` and
``config.json`` with ``architecture``, ``num_classes`` (= the embedding size),
``num_features``, ``model_args`` (``num_classes``, ``in_chans`` and the model's timm keyword
arguments) and ``pretrained_cfg`` (timm's own for the architecture, with ``num_classes`` and
the preprocessing of the model); plus, at the top level, ``l2_normalize``, ``embedding_dim``,
``image_mode`` ("RGB" or "L": convert images to it first), ``embedding_head`` (the
classifier's name) and ``exported_from``. A timm model does not L2-normalise its output,
so a user of an ``l2_normalize=True`` model applies ``F.normalize`` to it. The folder also holds the marker ``.rkd-pml-export``: ``overwrite``
replaces only folders carrying it (see :mod:`.export_folder` for what is never replaced).

The preprocessing recorded (``input_size``, ``interpolation``, ``mean``, ``std``,
``crop_pct``, ``crop_mode``) is what ``rkd-pml evaluate`` applies to the model: its training
image size, and its test transform from the training data settings it was saved with
(``training_data``). timm's eval transform reproduces it: ``"timm"`` is timm's transform with
the model's crop settings; ``"paper"`` (resize to S*256/224 squared, centre crop S) is timm's
``crop_mode="squash"`` with ``crop_pct = S / (round(S*256/224) + 0.5)`` (timm resizes to
``floor(S / crop_pct)``). A model saved without training data keeps its timm data config.

Loading needs only timm::

    model = timm.create_model("local-dir:DIR", pretrained=True).eval()   # or "hf-hub:user/repo"
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
    embeddings = model(torch.stack([transform(image.convert(image_mode)) for image in images]))

The embeddings equal ``EmbeddingModel.forward`` on the unnormalised images (before its L2
normalisation), and with timm's transform those of ``rkd-pml evaluate``. Loading the weights
file alone needs the embedding size twice: ``timm.create_model(arch, pretrained=True,
num_classes=D, pretrained_cfg_overlay=dict(file=".../model.safetensors", num_classes=D))``;
without ``num_classes`` in the overlay timm compares D with the architecture's default (1000)
and silently drops the classifier, i.e. the embedding head. (Tried with timm 1.0.29 and
1.0.31; timm 1.0.3 exports too but has no ``local-dir:``, so it loads the weights file so.)

EmbeddingModel uses the pooled pre-logit features (``num_classes=0``); the export maps the
head's Linear onto the timm classifier that takes exactly these features (``fc`` for ResNets,
``classifier`` for MobileNetV3, ``head`` for ViTs, ``head.fc`` for ConvNeXts: timm's
``pretrained_cfg["classifier"]``). Families without one such Linear (the distilled DeiT, LeViT
and EfficientFormer, with two heads) are refused, naming the model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from ..files import atomic_write
from .embedding import FORMAT, EmbeddingModel
from .export_folder import check_out_dir, write_export_folder

__all__ = ["export_data_config", "export_timm", "hub_config"]

#: ``pretrained_cfg`` keys that describe where timm's own weights come from or how they were
#: tested, not the exported weights.
_SOURCE_KEYS = frozenset({
    "url", "file", "hf_hub_id", "hf_hub_filename", "source", "state_dict", "test_input_size",
    "test_crop_pct", "label_names", "label_descriptions", "label_offset",
})
_KEEP_NULL = frozenset({"pool_size", "first_conv", "classifier"})

#: The paper's test transform resizes to (S*256/224, S*256/224) before its S x S centre crop
#: (rkd_pml.data.transforms.PAPER_RESIZE_RATIO: the data layer lies above this one).
_PAPER_RESIZE_RATIO = 256 / 224


def _source_dir(path: Path) -> Path:
    """The EmbeddingModel directory: ``path`` itself or a run directory's ``path/model``."""
    from .saved import find_saved_model

    return find_saved_model(path, flag="run_or_model_dir")


def timm_classifier(model: EmbeddingModel) -> tuple[nn.Module, str]:
    """A timm model of ``model``'s architecture with ``num_classes = embedding_dim``, holding
    its backbone and, as classifier, its embedding head; and the classifier's name.

    Raises ``ValueError`` naming the model when its family has no plain ``Linear`` classifier
    on the pooled features, or when the result does not reproduce the embeddings."""
    name = model.model_name
    net = timm.create_model(
        name, pretrained=False, num_classes=model.embedding_dim, in_chans=model.in_chans, **model.timm_kwargs
    )
    classifier = net.get_classifier()
    path = net.pretrained_cfg.get("classifier")
    if isinstance(path, (list, tuple)) or not isinstance(classifier, nn.Linear):
        raise ValueError(
            f"cannot export {name!r} as a timm classifier: its classifier is "
            f"{type(classifier).__name__} ({path}), not one Linear layer on the pooled features"
        )
    if path is None or net.get_submodule(path) is not classifier:
        raise ValueError(f"cannot export {name!r}: timm's pretrained_cfg does not name its classifier ({path!r})")
    if classifier.in_features != model.feature_dim:
        raise ValueError(
            f"cannot export {name!r}: its classifier takes {classifier.in_features} features but the "
            f"embedding head takes {model.feature_dim} (the pooled features EmbeddingModel uses)"
        )
    state = dict(model.backbone.state_dict())
    state[f"{path}.weight"] = model.head.weight.detach()
    state[f"{path}.bias"] = model.head.bias.detach()
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"cannot export {name!r}: its weights do not fit timm's classifier model: {exc}") from exc
    _check_same_embeddings(model, net)
    return net, path


@torch.no_grad()
def _check_same_embeddings(model: EmbeddingModel, net: nn.Module) -> None:
    was_training = model.training
    model.eval()
    net.eval()
    size = max(32, min(int(s) for s in model.data_config["input_size"][1:]))
    images = torch.rand(2, model.in_chans, size, size, generator=torch.Generator().manual_seed(0))
    images = images.to(next(model.parameters()).device)
    x = model.normalize_input(images)
    expected = model.head(model.backbone(x))
    got = net.to(x.device)(x)
    model.train(was_training)
    err = float((got - expected).abs().max())
    if got.shape != expected.shape or err > 1e-4 * max(1.0, float(expected.abs().max())):
        raise ValueError(
            f"cannot export {model.model_name!r}: timm's classifier model does not reproduce the "
            f"embeddings (max abs difference {err:.3g}); its head is not a Linear on the pooled features"
        )




def export_data_config(model: EmbeddingModel) -> dict[str, Any]:
    """timm's data config (``input_size``, ``interpolation``, ``mean``, ``std``,
    ``crop_pct``, ``crop_mode``) whose eval transform is the test-time preprocessing of
    ``model`` (see the module docstring); ValueError for a test transform timm cannot express."""
    cfg = {k: v for k, v in model.data_config.items() if v is not None}
    cfg.setdefault("interpolation", "bilinear")
    cfg.update(mean=list(cfg["mean"]), std=list(cfg["std"]))
    recorded = model.training_data or {}
    size = recorded.get("image_size")
    if size is None:
        cfg["input_size"] = [model.in_chans, *cfg["input_size"][1:]]
        return cfg
    size = int(size)
    cfg["input_size"] = [model.in_chans, size, size]
    transform = recorded.get("test_transform") or (
        "paper" if recorded.get("train_transform", "paper") == "paper" else "timm"
    )
    if transform == "paper":
        cfg.update(crop_mode="squash", crop_pct=size / (round(size * _PAPER_RESIZE_RATIO) + 0.5))
    elif transform != "timm":
        raise ValueError(
            f"cannot export {model.model_name!r}: timm has no transform like its test transform {transform!r}"
        )
    return cfg


def hub_config(model: EmbeddingModel, net: nn.Module, classifier: str) -> dict[str, Any]:
    """The ``config.json`` of timm's hub layout for ``net`` (:func:`timm_classifier` of
    ``model``, whose head is ``classifier``), with ``model``'s preprocessing."""
    data = export_data_config(model)
    pretrained_cfg = {
        k: list(v) if isinstance(v, tuple) else v
        for k, v in net.pretrained_cfg.items()
        if k not in _SOURCE_KEYS and (v is not None or k in _KEEP_NULL)
    }
    if list(pretrained_cfg.get("input_size", []))[1:] != data["input_size"][1:]:
        pretrained_cfg["pool_size"] = None  # timm's pool size is for its default input size
    if pretrained_cfg.get("min_input_size"):
        pretrained_cfg["min_input_size"] = [model.in_chans, *pretrained_cfg["min_input_size"][1:]]
    pretrained_cfg.update(data, num_classes=model.embedding_dim, custom_load=False)
    config: dict[str, Any] = {
        "architecture": pretrained_cfg.pop("architecture", model.model_name),
        "num_classes": model.embedding_dim,
        "num_features": int(getattr(net, "num_features", model.feature_dim)),
    }
    if isinstance(getattr(net, "global_pool", None), str) and net.global_pool:
        config["global_pool"] = net.global_pool
    config["model_args"] = {"num_classes": model.embedding_dim, "in_chans": model.in_chans, **model.timm_kwargs}
    config["pretrained_cfg"] = pretrained_cfg
    config.update(
        l2_normalize=model.l2_normalize,
        embedding_dim=model.embedding_dim,
        image_mode="L" if model.in_chans == 1 else "RGB",
        exported_from=FORMAT,
        embedding_head=classifier,
    )
    return config


def export_timm(
    run_or_model_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], overwrite: bool = False
) -> Path:
    """Write the EmbeddingModel of ``run_or_model_dir`` (a saved model or a run directory with
    ``model/``) to ``out_dir`` as a plain timm model; returns ``out_dir`` (resolved).

    A non-empty ``out_dir`` is refused unless ``overwrite=True``; then only an export folder
    holding nothing but an export's files is replaced, whole (see :mod:`.export_folder`: never
    a run, a locked folder, the source or a folder holding it, the current directory or a
    folder holding it). These checks run before anything is loaded or created. A failed write
    (a full disk) is one OSError naming ``out_dir`` and leaves nothing behind.
    """
    from safetensors.torch import save

    given = Path(run_or_model_dir)
    source = _source_dir(given)
    inputs = (given, source)
    check_out_dir(out_dir, inputs, overwrite)  # a bad out_dir is refused before the work
    model = EmbeddingModel.load(source)
    net, classifier = timm_classifier(model)
    config = hub_config(model, net, classifier)
    weights = save({k: v.contiguous() for k, v in net.state_dict().items()}, metadata={"format": "pt"})

    def write(folder: Path) -> None:
        atomic_write(folder / "model.safetensors", weights)
        atomic_write(folder / "config.json", json.dumps(config, indent=2) + "\n")

    return write_export_folder(out_dir, inputs, overwrite, write)
