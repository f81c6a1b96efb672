"""Export an EmbeddingModel as a plain timm model whose classifier is the embedding head.

The exported folder is timm's hub layout (written by timm's own ``save_for_hf``):
``model.safetensors`` and ``config.json`` with ``architecture``, ``num_classes`` (= the
embedding size), ``model_args`` (``in_chans``, ``num_classes`` and the model's timm keyword
arguments) and ``pretrained_cfg`` (``mean``, ``std``, ``input_size``, ``interpolation``,
``crop_pct``, ``crop_mode``, ``classifier``...), plus ``l2_normalize`` and ``embedding_dim``
at the top level: a timm model does not L2-normalise its output, so a user of an
``l2_normalize=True`` model applies ``F.normalize`` to it.

Loading needs only timm::

    model = timm.create_model("local-dir:DIR", pretrained=True).eval()   # or "hf-hub:user/repo"
    cfg = timm.data.resolve_model_data_config(model)
    embeddings = model((images - mean(cfg)) / std(cfg))   # images (B, C, H, W) in [0, 1]

The embeddings equal ``EmbeddingModel.forward`` on the unnormalised images (before its L2
normalisation). Loading the weights file alone needs the embedding size twice:
``timm.create_model(arch, pretrained=True, num_classes=D,
pretrained_cfg_overlay=dict(file=".../model.safetensors", num_classes=D))``; without
``num_classes`` in the overlay timm compares D with the architecture's default (1000) and
silently drops the classifier, i.e. the embedding head.

EmbeddingModel uses the pooled pre-logit features (``num_classes=0``); the export maps the
head's Linear onto the timm classifier that takes exactly these features (``fc`` for ResNets,
``classifier`` for MobileNetV3, ``head`` for ViTs, ``head.fc`` for ConvNeXts: timm's
``pretrained_cfg["classifier"]``). Families without one such Linear (the distilled DeiT, LeViT
and EfficientFormer, with two heads) are refused, naming the model.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import timm
import torch
from torch import nn

from .embedding import CONFIG_NAME, FORMAT, EmbeddingModel

__all__ = ["export_timm"]


def _source_dir(path: Path) -> Path:
    """The EmbeddingModel directory: ``path`` itself or a run directory's ``path/model``."""
    from .saved import find_saved_model

    return find_saved_model(path, flag="run_or_model_dir")


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


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


def export_timm(
    run_or_model_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], overwrite: bool = False
) -> Path:
    """Write the EmbeddingModel of ``run_or_model_dir`` (a saved model or a run directory with
    ``model/``) to ``out_dir`` as a plain timm model; returns ``out_dir``.

    An existing ``out_dir`` is refused unless ``overwrite=True`` (it is then replaced whole);
    ``out_dir`` may not be the source, lie inside it or contain it. The files are written to a
    temporary folder next to ``out_dir`` and moved into place.
    """
    from timm.models import save_for_hf

    source = _source_dir(Path(run_or_model_dir)).resolve()
    out = Path(out_dir).resolve()
    if _inside(out, source) or _inside(source, out):
        raise ValueError(
            f"out_dir {os.fspath(out_dir)!r} would write into the source {os.fspath(source)!r} "
            "(or replace a folder holding it): choose another folder"
        )
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"out_dir {os.fspath(out_dir)!r} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"out_dir {os.fspath(out_dir)!r} exists; pass overwrite=True to replace it")

    model = EmbeddingModel.load(source)
    net, classifier = timm_classifier(model)
    data_config = {k: v for k, v in model.data_config.items() if v is not None}
    extra = {
        "l2_normalize": model.l2_normalize,
        "embedding_dim": model.embedding_dim,
        "exported_from": FORMAT,
        "embedding_head": classifier,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        save_for_hf(net, tmp, model_config=extra, safe_serialization=True, data_config=data_config)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out
