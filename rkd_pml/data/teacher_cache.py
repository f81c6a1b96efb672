"""A consistent teacher cache (FKD, Shen and Xing 2022): the teacher runs once, before training.

:func:`build_teacher_cache` renders ``K`` augmented views of every training image (the
training transform's :class:`~rkd_pml.data.views.View`, parameters drawn from
``(seed, image, view)``), runs the frozen teacher on them and stores, per (image, view), the
teacher embedding (float32, whatever precision the teacher ran in) and the view parameters.
:class:`CachedViews` then replays one stored view per image and epoch and returns the image
the student must see together with the teacher's embedding of that very image: teacher and
student see the same view (consistency, Beyer et al. 2022) and the teacher costs nothing
during training. With ``K`` views the student sees at most ``K`` distinct augmentations per
image instead of a fresh one each epoch.

Files: see :mod:`~rkd_pml.data.teacher_cache_format`; which folders a build may write or
replace, and its lock: :mod:`~rkd_pml.data.teacher_cache_folder`. Reading (every field of the
files checked): :mod:`~rkd_pml.data.teacher_cache_reader`, :mod:`~rkd_pml.data.teacher_cache_schema`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..files import WriteError, atomic_write_text
from .teacher_cache_folder import CacheFolder
from .teacher_cache_format import (
    MANIFEST_NAME,
    SAMPLES_NAME,
    TENSORS_NAME,
    FORMAT,
    FORMAT_VERSION,
    StreamedSafetensors,
    dataset_fingerprint,
    dataset_records,
    package_version,
    read_image,
    teacher_identity,
    unwrap,
)
from .teacher_cache_reader import CachedViews, TeacherCache, choose_view, view_expectation
from .views import PARAM_NAMES, View, view_of

__all__ = [
    "CachedViews",
    "TeacherCache",
    "build_teacher_cache",
    "build_teacher_cache_from_saved",
    "choose_view",
    "expectation",
    "view_seed",
]


def view_seed(seed: int, row: int, view: int) -> int:
    """Seed of the ``random.Random`` that draws view ``view`` of image ``row``."""
    return int(np.random.SeedSequence([int(seed), int(row), int(view)]).generate_state(1, dtype=np.uint64)[0])


class _RenderedViews(Dataset):
    """Item ``n``: (views float32 ``(K, C, S, S)``, params float32 ``(K, 5)``, ``n``)."""

    def __init__(self, dataset: Any, view: View, views: int, seed: int):
        self.dataset, self.view, self.views, self.seed = dataset, view, views, seed

    def __len__(self) -> int:
        return len(self.dataset.samples)

    def __getitem__(self, n: int) -> tuple[Tensor, Tensor, int]:
        image = read_image(self.dataset, n)
        params = [self.view.draw(random.Random(view_seed(self.seed, n, k)), image.size) for k in range(self.views)]
        rendered = torch.stack([self.view.apply(image, p) for p in params])
        return rendered, torch.from_numpy(np.stack(params)), n


def build_teacher_cache(
    teacher: nn.Module,
    dataset: Any,
    views: int,
    out_dir: str | os.PathLike[str],
    seed: int = 0,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    progress: bool = True,
    overwrite: bool = False,
    *,
    view: View | None = None,
    root: str | os.PathLike[str] | None = None,
    num_workers: int = 0,
    autocast_dtype: torch.dtype | None = None,
    teacher_source: str | None = None,
    inputs: Mapping[str, str | os.PathLike[str] | None] | None = None,
) -> Path:
    """Run ``teacher`` once over ``K = views`` views of every image of ``dataset``; write the cache.

    Args:
        teacher: the frozen teacher (an ``EmbeddingModel``; eval mode, inference mode here).
        dataset: the training ``ImageDataset`` (its images are read without its transform).
        views: K, the views per image (1 for ``train_transform="none"``: view 0 is then the
            plain test-transformed image).
        out_dir: the cache directory (created; an existing cache is refused unless ``overwrite``;
            any other non-empty folder, an input or a folder another build is writing is
            refused: see :mod:`~rkd_pml.data.teacher_cache_folder`).
        seed: view ``k`` of image ``n`` is drawn with ``random.Random(view_seed(seed, n, k))``,
            so a cache with more views extends one with fewer.
        batch_size: views per teacher forward (whole images: ``max(1, batch_size // K)`` each).
        device: where the teacher runs.
        view: the augmentation; default: the one of ``dataset.transform`` (a training
            transform of ``build_transforms``).
        root: the data set's root, recorded in the manifest.
        num_workers: DataLoader workers that read and render the images.
        autocast_dtype: e.g. ``torch.bfloat16`` to run the teacher under autocast (faster,
            the embeddings then differ from float32 ones by bfloat16 rounding; recorded).
        teacher_source: where the teacher came from (its directory), recorded.
        inputs: further paths the cache must not be written over, by description
            (``{"the teacher run": dir}``); ``teacher_source`` and ``root`` are always protected.

    Returns the cache directory. Embeddings are stored as float32 ``(N, K, Dt)``, params as
    float32 ``(N, K, 5)`` = (top, left, height, width, flip).
    """
    views = int(views)
    if views < 1:
        raise ValueError(f"views must be >= 1, got {views}")
    view = view or view_of(getattr(dataset, "transform", None))
    if view is None:
        raise ValueError(
            "dataset.transform is not a training transform of rkd_pml.data.build_transforms; pass view=build_view(...)"
        )
    if view.kind == "none" and views != 1:
        raise ValueError(f"train_transform 'none' has a single view: pass views=1, not {views}")
    keys, classes = dataset_records(dataset)
    if not keys:
        raise ValueError("dataset is empty: nothing to cache")
    device = torch.device(device)
    model = unwrap(teacher).to(device).eval()
    manifest = _manifest(model, dataset, view, views, seed, root, autocast_dtype, teacher_source)
    protected = {"the teacher": teacher_source, "the data root": root, **(inputs or {})}
    folder = CacheFolder.prepare(out_dir, overwrite, protected)
    try:
        _write_cache(folder, model, dataset, view, views, seed, batch_size, device, progress, num_workers,
                     autocast_dtype, manifest, keys, classes)  # fmt: skip
    except BaseException:
        folder.abandon()
        raise
    folder.finish()
    return folder.path


def _write_cache(folder, model, dataset, view, views, seed, batch_size, device, progress, num_workers,
                 autocast_dtype, manifest, keys, classes) -> None:  # fmt: skip
    """Render, run the teacher and write the files of the cache into the locked ``folder``."""
    out, n = folder.path, len(keys)
    loader = DataLoader(
        _RenderedViews(dataset, view, views, seed),
        batch_size=max(1, int(batch_size) // views),
        num_workers=num_workers,
        shuffle=False,
    )
    partial = folder.partial
    writer: StreamedSafetensors | None = None
    amp = (
        torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None else contextlib.nullcontext()
    )
    with tqdm(total=n * views, desc="teacher cache", unit="view", disable=not progress, dynamic_ncols=True) as bar:
        for images, params, index in loader:
            b = images.shape[0]
            with torch.inference_mode(), amp:
                emb = model(images.flatten(0, 1).to(device))
            emb = emb.float().reshape(b, views, -1).cpu().numpy()
            if writer is None:
                manifest["embedding_dim"] = int(emb.shape[-1])
                shapes = {"embeddings": (n, views, emb.shape[-1]), "params": (n, views, len(PARAM_NAMES))}
                size = 4 * n * views * (emb.shape[-1] + len(PARAM_NAMES))
                try:
                    writer = StreamedSafetensors(partial, shapes, {"format": "pt", "content": FORMAT})
                except OSError as exc:
                    raise WriteError(out, exc, "teacher cache", f"its tensors need {size / 2**20:.1f} MiB") from None
            start, stop = int(index[0]), int(index[-1]) + 1
            writer.arrays["embeddings"][start:stop] = emb
            writer.arrays["params"][start:stop] = params.numpy()
            bar.update(b * views)
    assert writer is not None
    try:
        writer.close()
    except OSError as exc:
        raise WriteError(out, exc, "teacher cache") from None
    os.replace(partial, out / TENSORS_NAME)
    atomic_write_text(out / SAMPLES_NAME, json.dumps({"samples": keys, "classes": classes}) + "\n")
    manifest["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    atomic_write_text(out / MANIFEST_NAME, json.dumps(manifest, indent=2) + "\n")


def expectation(
    teacher: nn.Module | None = None,
    dataset: Any = None,
    view: View | None = None,
    root: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """What a run expects of a cache, for ``TeacherCache.open(dir, expect=...)``: the teacher's
    identity, the data set's fingerprint and the view (each optional; ``view`` defaults to
    that of ``dataset.transform``). Leave ``dataset`` out when the run trains on a subset of
    the cached images (``CachedViews`` still checks every image it uses)."""
    expect: dict[str, Any] = {}
    if teacher is not None:
        expect["teacher"] = teacher_identity(teacher)
    if dataset is not None:
        expect["dataset"] = dataset_fingerprint(dataset, root)
        view = view or view_of(getattr(dataset, "transform", None))
    if view is not None:
        expect.update(view_expectation(view))
    return expect


def build_teacher_cache_from_saved(
    teacher: str | os.PathLike[str],
    *,
    dataset: str,
    views: int,
    out: str | os.PathLike[str],
    root: str | os.PathLike[str] | None = None,
    image_size: int | None = None,
    train_transform: str = "paper",
    student: str = "resnet18",
    seed: int = 0,
    batch_size: int = 128,
    device: str = "auto",
    num_workers: int = 0,
    autocast_dtype: torch.dtype | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """``rkd-pml teacher-cache``: load a saved teacher (a run directory or its ``model/``), load
    the training split of ``dataset`` as ``distill`` does and build the cache in ``out``.

    ``student`` (a timm name or a saved model directory) is the model the run will train:
    ``distill`` takes the interpolation and crop of the training transform from the
    student's data config, and so does this function (default: distill's default student).
    ``image_size`` None: the data set's default, as in ``distill``.
    """
    from ..models import EmbeddingModel
    from .registry import load_dataset
    from .settings import resolve_data_settings

    teacher_dir = _saved_model_dir(teacher)
    model = EmbeddingModel.load(teacher_dir)
    given = dict(dataset=dataset, root=root, image_size=image_size, train_transform=train_transform, in_chans=3)
    train_set, _ = load_dataset(resolve_data_settings(given, model_config=_student_data_config(student)))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return build_teacher_cache(
        model, train_set, views, out, seed=seed, batch_size=batch_size, device=device, progress=progress,
        overwrite=overwrite, root=root, num_workers=num_workers, autocast_dtype=autocast_dtype,
        teacher_source=str(teacher_dir), inputs={"the teacher run": teacher},
    )  # fmt: skip


def _manifest(model, dataset, view, views, seed, root, autocast_dtype, source) -> dict[str, Any]:
    import timm

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": package_version(),
        "torch_version": torch.__version__,
        "timm_version": timm.__version__,
        "teacher": teacher_identity(model, source),
        "dataset": dataset_fingerprint(dataset, root),
        **view_expectation(view),
        "views": views,
        "seed": int(seed),
        "num_images": len(dataset.samples),
        "embedding_dim": None,
        "embedding_dtype": "float32",
        "teacher_autocast": None if autocast_dtype is None else str(autocast_dtype).replace("torch.", ""),
        "params": list(PARAM_NAMES),
        "files": {"tensors": TENSORS_NAME, "samples": SAMPLES_NAME},
    }


def _saved_model_dir(path: str | os.PathLike[str]) -> Path:
    from ..models.embedding import CONFIG_NAME, WEIGHTS_NAME

    path = Path(path)
    for candidate in (path / "model", path):
        if (candidate / CONFIG_NAME).is_file() and (candidate / WEIGHTS_NAME).is_file():
            return candidate
    raise FileNotFoundError(
        f"teacher {path}: expected a saved model ({WEIGHTS_NAME} and {CONFIG_NAME}, written by "
        "EmbeddingModel.save) in it or in its model/ folder (a finished train-teacher run)"
    )


def _student_data_config(student: str) -> Mapping[str, Any]:
    from ..models import EmbeddingModel
    from ..models.embedding import CONFIG_NAME, read_config

    path = Path(student)
    if ("/" in student or student.startswith(".") or path.is_dir()) and not student.startswith("hf-hub:"):
        return read_config(_saved_model_dir(path) / CONFIG_NAME)["data_config"]
    return EmbeddingModel(student, embedding_dim=1, pretrained=False).data_config
