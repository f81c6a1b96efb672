"""EmbeddingModel: a timm backbone, a linear embedding head and its own preprocessing.

Inputs are unnormalised images, float in [0, 1], shape ``(B, C, H, W)``; each model applies
its own mean/std (its ``data_config``) inside ``forward``, so one batch can feed a teacher
and a student that were pretrained with different statistics.

Channels: a model built with ``in_chans=3`` takes RGB input and also 1-channel input (the
grey channel is repeated); a model built with ``in_chans=1`` takes grey input and also RGB
input (converted to luma with PIL's ``convert("L")`` weights). Any other channel count is
an error.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..files import atomic_write, atomic_write_path, one_line
from .weights import PretrainedArg, create_backbone, feature_width

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = "rkd_pml.EmbeddingModel"
FORMAT_VERSION = 1

#: The timm data-config fields kept on the model (they drive the data transforms).
DATA_CONFIG_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")

#: ITU-R 601-2 luma weights, as PIL's ``Image.convert("L")``.
_LUMA = (0.299, 0.587, 0.114)


class EmbeddingModel(nn.Module):
    """timm backbone -> pooled features ``(B, F)`` -> ``Linear(F, D)`` -> optional L2 normalisation.

    Args:
        model_name: any name ``timm.is_model`` accepts (``ValueError`` otherwise).
        embedding_dim: width ``D`` of the output embedding.
        pretrained: ``False`` (random init), ``True`` (timm hub weights) or a local weights
            file path (see :mod:`rkd_pml.models.weights`).
        l2_normalize: L2-normalise the embeddings (the official RKD teacher does, the student
            does not).
        in_chans: 3 (RGB) or 1 (grey) input channels of the backbone.
        data_config: overrides of the timm data config (``input_size``, ``interpolation``,
            ``mean``, ``std``, ``crop_pct``, ``crop_mode``).
        **timm_kwargs: further ``timm.create_model`` arguments (e.g. ``drop_path_rate``);
            they are saved with the model, so they must be JSON values.

    ``forward(images: (B, C, H, W) float in [0, 1]) -> (B, embedding_dim)``.
    """

    def __init__(
        self,
        model_name: str,
        embedding_dim: int = 512,
        pretrained: PretrainedArg = False,
        l2_normalize: bool = False,
        in_chans: int = 3,
        data_config: Mapping[str, Any] | None = None,
        **timm_kwargs: Any,
    ):
        super().__init__()
        if in_chans not in (1, 3):
            raise ValueError(f"in_chans must be 1 (grey) or 3 (RGB), got {in_chans}")
        if not isinstance(embedding_dim, int) or embedding_dim < 1:
            raise ValueError(f"embedding_dim must be a positive int, got {embedding_dim!r}")
        self.backbone = create_backbone(model_name, pretrained, in_chans, **timm_kwargs)
        self.feature_dim = feature_width(self.backbone)
        self.head = nn.Linear(self.feature_dim, embedding_dim)
        self.model_name = model_name
        self.embedding_dim = embedding_dim
        self.l2_normalize = bool(l2_normalize)
        self.in_chans = in_chans
        self.timm_kwargs = dict(timm_kwargs)
        self._data_config = resolve_data_config(self.backbone, in_chans, data_config)
        shape = (1, in_chans, 1, 1)
        mean = torch.tensor(self._data_config["mean"], dtype=torch.float32).view(shape)
        std = torch.tensor(self._data_config["std"], dtype=torch.float32).view(shape)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)
        #: the data settings the model was trained with (data set, root, image size, channels,
        #: transforms), recorded by the training jobs and saved with the model; None otherwise
        self.training_data: dict[str, Any] | None = None

    @property
    def data_config(self) -> dict[str, Any]:
        """timm-style data config (a copy).

        Keys: input_size (C, H, W), interpolation, mean, std, crop_pct, crop_mode.
        """
        return dict(self._data_config)

    @property
    def config(self) -> dict[str, Any]:
        """Everything :meth:`load` needs to rebuild the architecture (JSON values)."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model_name": self.model_name,
            "embedding_dim": self.embedding_dim,
            "feature_dim": self.feature_dim,
            "l2_normalize": self.l2_normalize,
            "in_chans": self.in_chans,
            "data_config": {k: _jsonable(v) for k, v in self._data_config.items()},
            "timm_kwargs": dict(self.timm_kwargs),
            "timm_version": timm.__version__,
            "training_data": self.training_data,
        }

    def normalize_input(self, images: Tensor) -> Tensor:
        """``(B, C, H, W)`` in [0, 1] -> ``(B, in_chans, H, W)`` standardised with this model's mean/std."""
        if images.dim() != 4:
            raise ValueError(f"expected images of shape (B, C, H, W), got {tuple(images.shape)}")
        if not images.is_floating_point():
            raise TypeError(
                f"expected float images in [0, 1], got dtype {images.dtype} (divide uint8 images by 255)"
            )
        channels = images.shape[1]
        if channels != self.in_chans:
            if channels == 1 and self.in_chans == 3:
                images = images.expand(-1, 3, -1, -1)
            elif channels == 3 and self.in_chans == 1:
                luma = images.new_tensor(_LUMA).view(1, 3, 1, 1)
                images = (images * luma).sum(dim=1, keepdim=True)
            else:
                raise ValueError(f"model takes {self.in_chans} (or 1/3) channels, got {channels}")
        mean, std = self.mean.to(images.dtype), self.std.to(images.dtype)
        return (images - mean) / std

    def forward_features(self, images: Tensor) -> Tensor:
        """Pooled backbone features: ``(B, C, H, W)`` in [0, 1] -> ``(B, feature_dim)``."""
        return self.backbone(self.normalize_input(images))

    def forward(self, images: Tensor) -> Tensor:
        """``(B, C, H, W)`` float in [0, 1] -> embeddings ``(B, embedding_dim)``."""
        embeddings = self.head(self.forward_features(images))
        if self.l2_normalize:
            embeddings = F.normalize(embeddings, p=2, dim=1)
        return embeddings

    def extra_repr(self) -> str:
        return (
            f"model_name={self.model_name!r}, feature_dim={self.feature_dim}, "
            f"embedding_dim={self.embedding_dim}, l2_normalize={self.l2_normalize}, in_chans={self.in_chans}"
        )

    # ----------------------------------------------------------------------------------
    # Persistence: a directory holding model.safetensors and config.json
    # ----------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
        """Write ``path/model.safetensors`` and ``path/config.json``; returns ``path``.

        Each file is written to a temporary file in ``path`` and moved into place with
        ``os.replace``. An existing non-empty directory is refused unless ``overwrite=True``
        (then only these two files are replaced; other files stay).
        """
        from safetensors.torch import save_model

        path = Path(path)
        if path.exists() and not path.is_dir():
            raise FileExistsError(f"{path} exists and is not a directory")
        if path.is_dir() and any(path.iterdir()) and not overwrite:
            raise FileExistsError(
                f"{path} is a non-empty directory; pass overwrite=True to replace the model in it"
            )
        config = self.config
        try:
            config_text = json.dumps(config, indent=2, sort_keys=True)
        except TypeError as exc:
            raise TypeError(f"timm keyword arguments must be JSON values to be saved: {exc}") from exc
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_path(path / WEIGHTS_NAME, lambda tmp: save_model(self, tmp, metadata={"format": "pt"}))
        atomic_write(path / CONFIG_NAME, config_text + "\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> EmbeddingModel:
        """Rebuild a model written by :meth:`save` (no download, no code executed from the files)."""
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: expected a directory written by EmbeddingModel.save")
        config = read_config(path / CONFIG_NAME)
        weights = path / WEIGHTS_NAME
        check_weights(weights, config)
        model = cls(
            config["model_name"],
            embedding_dim=config["embedding_dim"],
            pretrained=False,
            l2_normalize=config["l2_normalize"],
            in_chans=config["in_chans"],
            data_config=config["data_config"],
            **config.get("timm_kwargs", {}),
        )
        model.training_data = config.get("training_data")
        from safetensors.torch import load_model

        try:
            load_model(model, str(weights), strict=True, device=str(map_location))
        except Exception as exc:
            raise ValueError(
                f"{weights}: does not fit {config['model_name']!r} as described in {CONFIG_NAME}: "
                f"{one_line(exc)}"
            ) from exc
        return model.to(map_location)


def resolve_data_config(
    backbone: nn.Module, in_chans: int, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """timm's data config of ``backbone`` with ``input_size``, mean and std made to fit ``in_chans``.

    timm reports 3-channel values even for ``in_chans=1`` models; a grey model gets the
    average of the RGB mean and std.
    """
    cfg = timm.data.resolve_model_data_config(backbone)
    cfg = {k: cfg[k] for k in DATA_CONFIG_KEYS if k in cfg}
    if overrides:
        unknown = set(overrides) - set(DATA_CONFIG_KEYS)
        if unknown:
            raise ValueError(f"unknown data_config keys {sorted(unknown)}; allowed: {DATA_CONFIG_KEYS}")
        cfg.update({k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()})
    for key in ("mean", "std"):
        values = tuple(float(v) for v in cfg[key])
        if len(values) != in_chans:
            if len(values) == 3 and in_chans == 1:
                values = (sum(values) / 3,)
            elif len(values) == 1:
                values = values * in_chans
            else:
                raise ValueError(f"data_config {key} {values} does not fit in_chans={in_chans}")
        cfg[key] = values
    cfg["input_size"] = (in_chans, *tuple(int(s) for s in cfg["input_size"])[-2:])
    return cfg


def read_config(file: Path) -> dict[str, Any]:
    """Parse and check a saved ``config.json``."""
    if not file.is_file():
        raise FileNotFoundError(f"{file}: missing (expected the JSON config written by EmbeddingModel.save)")
    try:
        config = json.loads(file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{file}: not a valid JSON config ({one_line(exc)})") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ValueError(f'{file}: not an EmbeddingModel config (no "format": "{FORMAT}")')
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"{file}: format version {config['format_version']} is newer than this package's {FORMAT_VERSION}"
        )
    required = ("model_name", "embedding_dim", "feature_dim", "l2_normalize", "in_chans", "data_config")
    missing = [k for k in required if k not in config]
    if missing:
        raise ValueError(f"{file}: config lacks {', '.join(missing)}")
    expected = {
        "model_name": (str,), "embedding_dim": (int,), "feature_dim": (int,), "l2_normalize": (bool,),
        "in_chans": (int,), "data_config": (dict,), "timm_kwargs": (dict,), "training_data": (dict, type(None)),
    }
    for key, types in expected.items():
        value = config.get(key, {} if key == "timm_kwargs" else None)
        wrong_bool = isinstance(value, bool) and bool not in types
        if wrong_bool or not isinstance(value, types):
            raise ValueError(f"{file}: {key} must be of type {' or '.join(t.__name__ for t in types)}, got {value!r}")
    if config["embedding_dim"] < 1 or config["in_chans"] not in (1, 3):
        raise ValueError(f"{file}: embedding_dim must be >= 1 and in_chans 1 or 3, got {config['embedding_dim']}, {config['in_chans']}")
    return config


def check_weights(file: Path, config: Mapping[str, Any]) -> None:
    """Check that ``file`` is a readable safetensors file whose head matches ``config``."""
    from safetensors import safe_open

    if not file.is_file():
        raise FileNotFoundError(
            f"{file}: missing (expected the safetensors weights written by EmbeddingModel.save)"
        )
    try:
        with safe_open(str(file), framework="pt") as f:
            keys = set(f.keys())
            head = f.get_slice("head.weight").get_shape() if "head.weight" in keys else None
    except Exception as exc:
        raise ValueError(
            f"{file}: not a valid safetensors file (corrupt or truncated?): {one_line(exc)}"
        ) from exc
    if head is None:
        raise ValueError(f"{file}: no 'head.weight' tensor: not the weights of an EmbeddingModel")
    expected = [config["embedding_dim"], config["feature_dim"]]
    if list(head) != expected:
        raise ValueError(
            f"{file}: embedding head has shape {list(head)} but the config says "
            f"embedding_dim={expected[0]}, feature_dim={expected[1]}"
        )


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
