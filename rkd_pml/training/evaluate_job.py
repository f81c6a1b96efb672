"""``evaluate``: Recall@K of a saved model on the data it was trained for, settings resolved
as for training (given > the model's recorded training data > the data set's defaults)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..data.settings import DataSettings, resolve_data_settings
from ..files import one_line
from ..models import EmbeddingModel, find_saved_model
from ..models.embedding import WEIGHTS_NAME
from .config import TrainConfig
from .jobs import resolve_device
from ..runs.logs import log
from ..runs.contents import recognise_run
from .speed import autocast, check_precision


def evaluate_saved(
    model_dir: str | Path,
    dataset: str | None = None,
    root: str | None = None,
    image_size: int | None = None,
    split: str = "test",
    ks: Sequence[int] | None = None,
    batch_size: int = 256,
    device: str = "auto",
    progress: bool = True,
    num_workers: int = 0,
    test_transform: str | None = None,
    in_chans: int | None = None,
    test_root: str | None = None,
    gallery_model: str | Path | None = None,
) -> dict[str, float]:
    """Recall@K (and PML's metrics) of a saved model (a model folder or a run directory) on the
    ``split`` ("test" or "train") of its data. Unset data settings come from what the model was
    trained with; it is evaluated as in training (same test transform and precision).

    With ``gallery_model`` (another saved model of the same embedding width), the asymmetric
    metrics follow (``asymmetric_recall@K``, ...): the model's embeddings of the images searched
    in the gallery model's embeddings of the other images of the same split. The data set and its
    roots are the model's; the gallery model embeds them with its own recorded preprocessing
    (image size, channels, test transform, mean/std, L2 normalisation, precision).
    """
    from ..evaluation import check_widths, embed, evaluate, evaluate_embeddings

    if split not in ("test", "train"):
        raise ValueError(f"--split must be 'test' or 'train', got {split!r}")

    folder = find_saved_model(model_dir, flag="MODEL_DIR")
    gallery_folder = None if gallery_model is None else find_saved_model(gallery_model, flag="--gallery-model")
    dev = resolve_device(device)
    model = EmbeddingModel.load(folder, map_location=dev)
    if gallery_folder is not None:  # both models read and their widths checked before any data
        gallery_net = EmbeddingModel.load(gallery_folder, map_location=dev)
        check_widths(model.embedding_dim, gallery_net.embedding_dim, f"the model {folder}",
                     f"--gallery-model {gallery_folder}")
    query = _prepared(folder, model, dev, split, dataset=dataset, root=root, image_size=image_size,
                      test_transform=test_transform, in_chans=in_chans, test_root=test_root,
                      recall_ks=tuple(ks) if ks else None)
    gallery = None
    if gallery_folder is not None:
        gallery = _prepared(gallery_folder, gallery_net, dev, split, role="as the gallery", dataset=query.settings.dataset,
                            root=query.settings.root, test_root=query.settings.test_root,
                            recall_ks=query.recall_ks)
        if gallery.data.samples != query.data.samples or not np.array_equal(gallery.data.labels, query.data.labels):
            raise ValueError(f"--gallery-model {gallery_folder}: its {split} split does not hold the model's images "
                             "in the same order")
    if gallery is None:
        with autocast(query.precision, dev):
            return evaluate(model, query.data, ks=query.recall_ks, batch_size=batch_size, device=dev,
                            progress=progress, num_workers=num_workers)
    # each model embeds at its own precision; the searches run at full precision
    embeddings, labels = query.embed(embed, batch_size, progress, num_workers)
    gallery_embeddings = gallery.embed(embed, batch_size, progress, num_workers)[0]
    return evaluate_embeddings(embeddings, labels, ks=query.recall_ks, device=dev,
                               gallery_embeddings=gallery_embeddings)


@dataclass
class _Prepared:
    """A saved model loaded with the data it is evaluated on and how (settings, precision)."""

    folder: Path
    model: EmbeddingModel
    settings: DataSettings
    recall_ks: tuple[int, ...]
    precision: str
    data: Any
    device: Any

    def embed(self, embed: Any, batch_size: int, progress: bool, num_workers: int) -> Any:
        """``(embeddings (N, D), labels (N,))`` of :attr:`data` by :attr:`model`, at its precision."""
        with autocast(self.precision, self.device):
            return embed(self.model, self.data, batch_size, self.device, progress, num_workers)


def _prepared(folder: Path, model: EmbeddingModel, dev: Any, split: str, role: str = "",
              recall_ks: tuple[int, ...] | None = None, **given: Any) -> _Prepared:
    """``model`` (loaded from ``folder``) with the ``split`` of its data, the ``given`` data
    settings completed from the model's record, then the data set's defaults. ``role``: said
    after the model's name in the log line ("as the gallery")."""
    from ..data import load_dataset, recall_ks as usual_ks

    recorded = model.training_data or {}
    TrainConfig(**given, recall_ks=recall_ks).validate()  # the given values, checked as for training
    data = resolve_data_settings({**given, "train_transform": recorded.get("train_transform", "paper")}, recorded,
                                 f"the model {folder}", model.data_config)
    if recall_ks is None and recorded.get("recall_ks") and given.get("dataset") in (None, recorded.get("dataset")):
        recall_ks = tuple(recorded["recall_ks"])
    precision = recorded.get("precision", "fp32")
    check_precision(precision, dev)
    train_set, test_set = load_dataset(data.replace(train_transform="none"))
    images = test_set if split == "test" else train_set.subset(np.unique(train_set.labels).tolist(), transform=test_set.transform)
    log(f"evaluating {folder}{role and ' ' + role} on {data.dataset} {split}: {len(images)} images of "
        f"{len(np.unique(np.asarray(images.labels)))} classes at {data.image_size} px, "
        f"{data.in_chans} channels, {data.test_transform} test transform, {precision}")
    return _Prepared(folder, model, data, recall_ks or usual_ks(data.dataset), precision, images, dev)


@dataclass
class Outcome:
    """What became of one model of a folder: ``metrics`` when it was evaluated, else
    ``error`` (it has a model that could not be evaluated) or ``skipped`` (a run without one)."""

    name: str
    metrics: dict[str, float] | None = None
    error: str | None = None
    skipped: str | None = None


def saved_models_under(path: str | Path) -> tuple[dict[str, Path], dict[str, str]]:
    """``({name: folder}, {name: why skipped})``: ``path`` itself when it is (or holds) a saved
    model, else each sub-directory that is one or has a ``model/`` folder (a demo's runs), by
    name; the runs without ``model/`` (not finished) are the skipped ones. FileNotFoundError
    when there is no model at all."""
    path = Path(path)
    try:
        return {path.name: find_saved_model(path, flag="MODEL_DIR")}, {}
    except FileNotFoundError as exc:
        found, skipped = {}, {}
        for child in sorted(p for p in path.iterdir() if p.is_dir()) if path.is_dir() else []:
            if (child / "model").is_dir() or (child / WEIGHTS_NAME).is_file():
                found[child.name] = child  # loading it reports what is wrong with it
            elif recognise_run(child)[0]:
                skipped[child.name] = "a run without a saved model (model/): not finished (continue it with --resume)"
        if not found:
            if skipped:
                raise FileNotFoundError(f"MODEL_DIR {path}: none of its runs has a saved model (model/) yet: "
                                        f"{', '.join(skipped)}") from exc
            raise exc
        return found, skipped


def evaluate_each(path: str | Path, **kwargs: Any) -> Iterator[Outcome]:
    """:func:`evaluate_saved` of each saved model under ``path`` (see :func:`saved_models_under`),
    one :class:`Outcome` at a time: a model that cannot be evaluated is reported (its error on one
    line) and the others are still evaluated; the skipped runs come last. A ``gallery_model``
    that is not a saved model is the command's error, before any model is evaluated."""
    if kwargs.get("gallery_model") is not None:
        find_saved_model(kwargs["gallery_model"], flag="--gallery-model")
    found, skipped = saved_models_under(path)
    single = list(found.values()) in ([Path(path)], [Path(path) / "model"])  # path is the model
    for name, folder in found.items():
        if single:  # one model: its errors are the command's
            yield Outcome(name, metrics=evaluate_saved(folder, **kwargs))
            continue
        try:
            yield Outcome(name, metrics=evaluate_saved(folder, **kwargs))
        except (KeyboardInterrupt, SystemExit, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - one broken model must not hide the others
            yield Outcome(name, error=f"{type(exc).__name__}: {one_line(exc)}")
    for name, why in skipped.items():
        yield Outcome(name, skipped=why)


def evaluate_all(path: str | Path, **kwargs: Any) -> dict[str, dict[str, float]]:
    """``{name: metrics}`` of each saved model under ``path`` (see :func:`evaluate_each`);
    ValueError naming the models that could not be evaluated, after evaluating all the others."""
    outcomes = list(evaluate_each(path, **kwargs))
    broken = [f"{o.name} ({o.error})" for o in outcomes if o.error]
    if broken:
        raise ValueError(f"{len(broken)} model(s) under {path} could not be evaluated: {'; '.join(broken)}")
    return {o.name: o.metrics for o in outcomes if o.metrics is not None}
