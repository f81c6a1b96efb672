"""timm backbones with pretrained weights from the hub or from a local file.

``pretrained`` is ``False`` (random init), ``True`` (timm's hub weights: needs a network or
a copy in the Hugging Face cache) or the path of a local weights file in timm's format
(``.safetensors``, ``.pth``, ``.bin``; loaded through timm's
``pretrained_cfg_overlay=dict(file=path)``, which drops the classifier and adapts the first
convolution to ``in_chans``).

A hub request that cannot succeed fails at once with :class:`PretrainedWeightsError`, naming
the local-file option, instead of spending ~50 s in huggingface_hub's retries: cached hub
files are loaded from the cache directly, and with ``HF_HUB_OFFLINE=1`` or an unreachable
host nothing is requested.
"""

from __future__ import annotations

import os
import socket
import threading
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Union

import timm
from torch import nn

from ..files import one_line

PretrainedArg = Union[bool, str, "os.PathLike[str]"]

#: Seconds allowed to open a TCP connection to the weights' host before giving up.
PROBE_TIMEOUT_S = 3.0

_HUB_FILENAMES = ("model.safetensors", "pytorch_model.bin")


class PretrainedWeightsError(OSError):
    """Pretrained weights were requested but cannot be loaded (offline, missing, or foreign)."""


def check_model_name(model_name: str) -> None:
    """Raise ``ValueError`` naming ``model_name`` unless timm knows it."""
    if not isinstance(model_name, str) or not timm.is_model(model_name):
        close = timm.list_models(f"*{model_name}*")[:8] if isinstance(model_name, str) else []
        hint = f"; similar names: {', '.join(close)}" if close else ""
        raise ValueError(f"unknown timm model {model_name!r} (see timm.list_models()){hint}")
    if "." in model_name and model_name not in timm.list_pretrained(model_name.split(".")[0] + ".*"):
        tags = timm.list_pretrained(model_name.split(".")[0] + ".*")[:8]
        raise ValueError(
            f"unknown pretrained tag in timm model name {model_name!r}; known: {', '.join(tags)}"
        )


def create_backbone(
    model_name: str, pretrained: PretrainedArg = False, in_chans: int = 3, **timm_kwargs: Any
) -> nn.Module:
    """A timm model without classifier: ``forward((B, in_chans, H, W)) -> (B, feature_width)``."""
    check_model_name(model_name)
    kwargs = dict(num_classes=0, in_chans=in_chans, **timm_kwargs)
    if pretrained is False or pretrained is None:
        return timm.create_model(model_name, pretrained=False, **kwargs)
    if pretrained is True:
        return _create_from_hub(model_name, kwargs)
    if isinstance(pretrained, (str, os.PathLike)):
        return create_from_file(model_name, Path(pretrained), **kwargs)
    raise TypeError(f"pretrained must be a bool or a weights file path, got {type(pretrained).__name__}")


def feature_width(backbone: nn.Module) -> int:
    """Width of the pooled features: ``head_hidden_size`` where timm defines it, else ``num_features``."""
    width = getattr(backbone, "head_hidden_size", None) or getattr(backbone, "num_features", None)
    if not width:
        raise ValueError(f"cannot tell the feature width of {type(backbone).__name__}")
    return int(width)


def create_from_file(model_name: str, path: Path, **kwargs: Any) -> nn.Module:
    """Build ``model_name`` with the weights of a local timm-format file (classifier keys dropped)."""
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file not found: {path}")
    try:
        backbone = timm.create_model(
            model_name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs
        )
    except Exception as exc:  # corrupt file, shape mismatch: name the file
        raise PretrainedWeightsError(
            f"{path}: cannot load it as weights of timm model {model_name!r}: {one_line(exc)}"
        ) from exc
    _check_keys(path, model_name, backbone)
    return backbone


def _check_keys(path: Path, model_name: str, backbone: nn.Module) -> None:
    """timm loads non-strictly once the classifier is dropped: reject files that matched nothing."""
    from timm.models import load_state_dict

    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            keys = set(f.keys())
    else:
        keys = set(load_state_dict(str(path)).keys())
    wanted = set(backbone.state_dict().keys())
    found = wanted & keys
    if len(found) * 2 < len(wanted):
        missing = sorted(wanted - keys)[:3]
        raise PretrainedWeightsError(
            f"{path}: not timm weights of {model_name!r}: only {len(found)} of {len(wanted)} "
            f"backbone tensors are in the file (missing e.g. {', '.join(missing)})"
        )


def _create_from_hub(model_name: str, kwargs: dict, hint: str | None = None) -> nn.Module:
    """timm's ``model_name`` with hub weights (``kwargs`` go to ``timm.create_model``); a
    request that cannot succeed raises :class:`PretrainedWeightsError` ending with ``hint``."""
    cfg = timm.models.get_pretrained_cfg(model_name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise PretrainedWeightsError(f"timm has no pretrained weights for {model_name!r}")
    hint = hint or (
        f"pass a local weights file instead: EmbeddingModel({model_name!r}, "
        f"pretrained='path/to/{model_name}.safetensors')"
    )
    cached = _hub_cache_file(cfg)
    if cached is not None:
        return create_from_file(model_name, Path(cached), **kwargs)
    if _hub_offline():
        raise PretrainedWeightsError(
            f"hub weights for {model_name!r} requested but HF_HUB_OFFLINE is set and they are "
            f"not in the local cache; {hint}"
        )
    host = _weights_host(cfg)
    if not _reachable(host):
        raise PretrainedWeightsError(
            f"hub weights for {model_name!r} requested but {host[0]}:{host[1]} is unreachable "
            f"(no network?); {hint}"
        )
    try:
        return timm.create_model(model_name, pretrained=True, **kwargs)
    except OSError as exc:
        raise PretrainedWeightsError(
            f"cannot download weights for {model_name!r}: {one_line(exc)}; {hint}"
        ) from exc


def _hub_offline() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:
        return False


def _hub_cache_file(cfg: Any) -> str | None:
    """Path of the hub weights in the local Hugging Face cache, or None."""
    if not cfg.hf_hub_id:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    repo_id, _, revision = cfg.hf_hub_id.partition("@")
    names = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else _HUB_FILENAMES
    for name in names:
        found = try_to_load_from_cache(repo_id, name, revision=revision or None)
        if isinstance(found, str):
            return found
    return None


def _weights_host(cfg: Any) -> tuple[str, int]:
    """(host, port) a download would contact first, through the HTTPS proxy where one is set."""
    proxy = urllib.request.getproxies().get("https")
    if proxy:
        url = urllib.parse.urlparse(proxy if "://" in proxy else f"http://{proxy}")
        return url.hostname or "", url.port or 80
    if cfg.hf_hub_id:
        from huggingface_hub import constants

        url = urllib.parse.urlparse(constants.ENDPOINT)
    else:
        url = urllib.parse.urlparse(cfg.url)
    return url.hostname or "", url.port or (443 if url.scheme == "https" else 80)


def _reachable(host: tuple[str, int], timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to ``host`` opens within ``timeout`` seconds (DNS included)."""
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection(host, timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])
