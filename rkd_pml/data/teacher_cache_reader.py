"""Reading a teacher cache: :class:`TeacherCache` (lazy, memory-mapped) and :class:`CachedViews`.

``TeacherCache.open(dir, expect=...)`` checks the manifest against what the run expects and
reads the small parts (params, sample keys) into memory; teacher embeddings stay on disk
and are read one slice at a time through ``safetensors.safe_open`` (a memory map: the OS
pages them in and out, so ``N x K x Dt`` may exceed RAM). One handle per process, so the
cache can be used by ``DataLoader`` workers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..files import one_line
from .teacher_cache_format import (
    MANIFEST_NAME,
    SAMPLES_NAME,
    TENSORS_NAME,
    dataset_records,
    image_size_value,
    mismatches,
    read_image,
)
from .teacher_cache_schema import read_manifest, read_params, read_samples
from .transforms import build_view
from .views import View, view_of


class TeacherCache:
    """A teacher cache directory, opened for reading (use :meth:`open`).

    Attributes: ``path``, ``manifest`` (dict), ``num_images`` N, ``views`` K,
    ``embedding_dim`` Dt, ``params`` (float32 ndarray ``(N, K, 5)``), ``keys`` / ``classes``
    (per image), ``view`` (the :class:`View` the cache was rendered with).
    """

    def __init__(self, path: Path, manifest: dict[str, Any], keys: list[str], classes: list[str], params: np.ndarray):
        self.path = path
        self.manifest = manifest
        self.keys = keys
        self.classes = classes
        self.params = params
        self.num_images, self.views = int(manifest["num_images"]), int(manifest["views"])
        self.embedding_dim = int(manifest["embedding_dim"])
        try:
            self.view = view_from_description(manifest["view"])
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f'{path / MANIFEST_NAME}: key "view": {one_line(exc)}') from None
        self._handle: Any = None
        self._pid: int | None = None

    @classmethod
    def open(cls, path: str | os.PathLike[str], expect: Mapping[str, Any] | None = None) -> TeacherCache:
        """Open the cache in ``path``; with ``expect`` (see ``teacher_cache.expectation``), refuse
        it (ValueError naming every difference) unless it was built for the same teacher, data
        set, image size, channels and training transform."""
        path = Path(path)
        file = path / MANIFEST_NAME
        if not file.is_file():
            raise FileNotFoundError(
                f"{file}: missing: {path} is not a teacher cache (or its build did not finish); "
                "build one with build_teacher_cache / rkd-pml teacher-cache"
            )
        manifest = read_manifest(file)
        if expect:
            problems = mismatches(manifest, expect)
            if problems:
                raise ValueError(f"teacher cache {path} does not match this run: " + "; ".join(problems))
        keys, classes = read_samples(path / SAMPLES_NAME, manifest["num_images"])
        params = read_params(path / TENSORS_NAME, manifest)
        return cls(path, manifest, keys, classes, params)

    # ------------------------------------------------------------------ reading
    def _embeddings(self) -> Any:
        if self._handle is None or self._pid != os.getpid():
            from safetensors import safe_open

            self._handle = safe_open(str(self.path / TENSORS_NAME), framework="pt")
            self._pid = os.getpid()
        return self._handle.get_slice("embeddings")

    def embedding(self, row: int, view: int) -> Tensor:
        """Teacher embedding of image ``row``, view ``view``: float32 ``(Dt,)``."""
        if not (0 <= row < self.num_images and 0 <= view < self.views):
            raise IndexError(f"(row {row}, view {view}) outside the cache's ({self.num_images}, {self.views})")
        return self._embeddings()[int(row), int(view)]

    def embeddings(self, rows: Sequence[int] | Tensor, views: Sequence[int] | Tensor) -> Tensor:
        """Teacher embeddings of images ``rows`` at views ``views``: float32 ``(B, Dt)``."""
        rows, views = [int(r) for r in rows], [int(v) for v in views]
        if len(rows) != len(views):
            raise ValueError(f"rows ({len(rows)}) and views ({len(views)}) must have the same length")
        if not rows:
            return torch.empty(0, self.embedding_dim)
        return torch.stack([self.embedding(r, v) for r, v in zip(rows, views)])

    def rows_of(self, dataset: Any) -> np.ndarray:
        """The cache row of each image of ``dataset`` (int64 ``(len(dataset),)``), matched by
        sample key; the data set may be a subset (e.g. the training classes left after a
        validation split). ValueError when an image is not in the cache or has another class."""
        keys, classes = dataset_records(dataset)
        index = {k: i for i, k in enumerate(self.keys)}
        rows = np.fromiter((index.get(k, -1) for k in keys), dtype=np.int64, count=len(keys))
        missing = np.flatnonzero(rows < 0)
        if len(missing):
            raise ValueError(
                f"teacher cache {self.path} has no entry for {len(missing)} of {len(keys)} images of data set "
                f"{getattr(dataset, 'name', '')!r}, e.g. {keys[missing[0]]}: it was built for "
                f"{self.manifest['dataset'].get('name')!r} ({self.num_images} images)"
            )
        for i, row in enumerate(rows):
            if classes[i] != self.classes[row]:
                raise ValueError(
                    f"image {keys[i]} has class {classes[i]!r} in this data set but {self.classes[row]!r} "
                    f"in teacher cache {self.path}"
                )
        return rows

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_handle": None, "_pid": None}

    def __repr__(self) -> str:
        t = self.manifest["teacher"]
        return (
            f"TeacherCache({str(self.path)!r}, images={self.num_images}, views={self.views}, "
            f"teacher={t.get('model_name')}-{self.embedding_dim}, view={self.manifest['view']})"
        )


def choose_view(seed: int, epoch: int, row: int, views: int) -> int:
    """The view of image ``row`` at ``epoch``: within each block of ``views`` epochs every
    view is used once, in an order drawn from ``(seed, row, epoch // views)``."""
    if views == 1:
        return 0
    if epoch < 0 or row < 0:
        raise ValueError(f"epoch and row must be >= 0, got epoch {epoch}, row {row}")
    cycle, position = divmod(int(epoch), int(views))
    order = np.random.default_rng([int(seed), int(row), cycle]).permutation(int(views))
    return int(order[position])


class CachedViews(Dataset):
    """``dataset`` with the teacher's embeddings of stored views.

    Item ``i`` at the current epoch (:meth:`set_epoch`) is ``(image, label, teacher_emb)``:
    ``image`` float32 ``(C, S, S)`` in [0, 1] rendered from the stored parameters of view
    ``k = choose_view(seed, epoch, row_i, K)``, ``label`` an int, ``teacher_emb`` float32
    ``(Dt,)`` the teacher's embedding of exactly that image. Depends only on
    ``(seed, epoch, i)``: a resumed epoch gets the same views.

    Args:
        dataset: the run's training ``ImageDataset`` (or a subset of the cached one); its
            training transform, when it is a :class:`View`, must match the cache's.
        cache: a :class:`TeacherCache` or its directory.
        seed: seed of the view choice.
        epoch: the epoch the items are for (change it with :meth:`set_epoch`).
    """

    def __init__(self, dataset: Any, cache: TeacherCache | str | os.PathLike[str], seed: int = 0, epoch: int = 0):
        self.cache = cache if isinstance(cache, TeacherCache) else TeacherCache.open(cache)
        self.dataset = dataset
        self.rows = self.cache.rows_of(dataset)
        own = view_of(getattr(dataset, "transform", None))
        if own is not None:
            problems = mismatches(self.cache.manifest, view_expectation(own))
            if problems:
                raise ValueError(f"teacher cache {self.cache.path} does not match the data set: " + "; ".join(problems))
        self.view: View = own or self.cache.view
        self.seed, self.epoch = int(seed), int(epoch)
        self.labels = dataset.labels
        self.classes = dataset.classes

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def set_epoch(self, epoch: int) -> None:
        """Items are for ``epoch`` from now on (call before building the epoch's loader)."""
        self.epoch = int(epoch)

    def view_index(self, index: int) -> int:
        """The view item ``index`` uses at the current epoch."""
        return choose_view(self.seed, self.epoch, int(self.rows[index]), self.cache.views)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[Tensor, int, Tensor]:
        row, k = int(self.rows[index]), self.view_index(index)
        image = self.view.apply(read_image(self.dataset, index), self.cache.params[row, k])
        return image, int(self.labels[index]), self.cache.embedding(row, k)


def view_expectation(view: View) -> dict[str, Any]:
    """The manifest fields a :class:`View` fixes (image size, channels, transform, details)."""
    return {
        "image_size": image_size_value(view.size),
        "in_chans": view.in_chans,
        "train_transform": view.kind,
        "view": view.describe(),
    }


def view_from_description(desc: Mapping[str, Any]) -> View:
    """Rebuild the :class:`View` a manifest describes (``View.describe()``)."""
    data_config = {"interpolation": desc["interpolation"], **dict(desc.get("eval") or {})}
    view = build_view(
        tuple(desc["size"]),
        data_config=data_config,
        train_transform=desc["kind"],
        in_chans=int(desc["in_chans"]),
        scale=tuple(desc.get("scale", (0.08, 1.0))),
    )
    if json.loads(json.dumps(view.describe())) != json.loads(json.dumps(dict(desc))):
        raise ValueError(f"cannot rebuild the view {dict(desc)} with this package (got {view.describe()})")
    return view
