"""Embed a test set and score retrieval with the paper's protocol.

Every test image queries all the other test images (itself excluded); neighbours are
Euclidean on the embeddings as the model outputs them (no extra normalisation). Queries of
classes with a single image are dropped (PML's rule, see :mod:`.recall`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .cross_model import check_widths, cross_retrieval_metrics
from .recall import CLUSTERING_METRICS, retrieval_metrics

#: PML metrics reported next to Recall@K by default (NMI/AMI are opt-in: k-means is slow).
DEFAULT_METRICS = ("precision_at_1", "r_precision", "mean_average_precision_at_r")


def embed(
    model: nn.Module,
    dataset: Dataset,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    progress: bool = True,
    num_workers: int = 0,
) -> tuple[Tensor, Tensor]:
    """Embeddings ``(N, D)`` (float32, CPU) and labels ``(N,)`` (int64, CPU) of ``dataset``.

    Runs ``model`` in eval mode under ``torch.inference_mode`` (its train/eval mode is
    restored afterwards) on ``device`` (default: the model's). Items are ``(image, label)``.
    """
    device = _model_device(model) if device is None else torch.device(device)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    was_training = model.training
    model.eval()
    chunks, labels = [], []
    try:
        with torch.inference_mode():
            for images, targets in tqdm(loader, desc="embedding", disable=not progress, leave=False):
                out = model(images.to(device, non_blocking=True))
                chunks.append(out.float().cpu())
                labels.append(torch.as_tensor(targets).reshape(-1).cpu())
    finally:
        model.train(was_training)
    if not chunks:
        raise ValueError("cannot embed an empty data set")
    embeddings = torch.cat(chunks)
    if not bool(torch.isfinite(embeddings).all()):
        raise FloatingPointError("the model gives non-finite embeddings (NaN or Inf weights: the training diverged?)")
    return embeddings, torch.cat(labels).long()


def evaluate_embeddings(
    embeddings: Tensor,
    labels: Tensor | Sequence[int],
    ks: Iterable[int] = (1, 2, 4, 8),
    metrics: Iterable[str] = DEFAULT_METRICS,
    device: torch.device | str | None = None,
    knn_batch_size: int = 512,
    gallery_embeddings: Tensor | None = None,
) -> dict[str, float]:
    """Retrieval metrics of ``embeddings`` ``(N, D)`` with ``labels`` ``(N,)``, each row a query
    against all the others: ``{"recall@K": ..., <PML metric>: ...}``.

    With ``gallery_embeddings`` ``(N, D)`` (row i: image i embedded by another model), the
    asymmetric metrics follow (``"asymmetric_recall@K"``, ``"asymmetric_<PML kNN metric>"``):
    row i of ``embeddings`` searched in the gallery rows of the other images (see
    :func:`~rkd_pml.evaluation.cross_model.cross_retrieval_metrics`).
    """
    embeddings = torch.as_tensor(embeddings)
    labels = torch.as_tensor(labels).reshape(-1)
    if embeddings.dim() != 2 or len(embeddings) != len(labels):
        raise ValueError(
            "expected embeddings (N, D) and labels (N,), "
            f"got {tuple(embeddings.shape)} and {tuple(labels.shape)}"
        )
    if len(labels) < 2:
        raise ValueError("need at least 2 embeddings to retrieve anything")
    if gallery_embeddings is not None:
        gallery_embeddings = torch.as_tensor(gallery_embeddings)
        if gallery_embeddings.dim() != 2 or len(gallery_embeddings) != len(labels):
            raise ValueError(
                f"expected gallery embeddings ({len(labels)}, D) of the same images, got {tuple(gallery_embeddings.shape)}"
            )
        check_widths(embeddings.shape[1], gallery_embeddings.shape[1])
    device = embeddings.device if device is None else torch.device(device)
    metrics = tuple(metrics)
    out = retrieval_metrics(embeddings.to(device), labels.to(device), ks, metrics, knn_batch_size)
    if gallery_embeddings is not None:
        out.update(cross_retrieval_metrics(
            embeddings.to(device), gallery_embeddings.to(device), labels.to(device), ks,
            tuple(m for m in metrics if m not in CLUSTERING_METRICS), knn_batch_size,
        ))
    return out


def evaluate(
    model: nn.Module,
    dataset: Dataset,
    ks: Iterable[int] = (1, 2, 4, 8),
    batch_size: int = 64,
    device: torch.device | str | None = None,
    progress: bool = True,
    num_workers: int = 0,
    metrics: Iterable[str] = DEFAULT_METRICS,
    knn_batch_size: int = 512,
    gallery_model: nn.Module | None = None,
    gallery_dataset: Dataset | None = None,
) -> dict[str, float]:
    """Recall@K (keys ``recall@K``) and PML's metrics (``precision_at_1``, ``r_precision``,
    ``mean_average_precision_at_r``; add ``"NMI"``/``"AMI"`` to ``metrics`` for clustering)
    of ``model`` on ``dataset``.

    With ``gallery_model``, the asymmetric metrics too (``asymmetric_recall@K``, ...): queries
    embedded by ``model``, the gallery by ``gallery_model`` from ``gallery_dataset`` (the same
    images in the same order, with the gallery model's preprocessing; default: ``dataset``).
    The two models must give embeddings of the same width.

    The kNN search is exact and blockwise (``knn_batch_size`` query rows at a time) on
    ``device`` (default: the model's), so memory stays O(N * k) for SOP-sized sets, with
    k = max(max(ks), largest class - 1).
    """
    device = _model_device(model) if device is None else torch.device(device)
    if gallery_model is not None:
        widths = [getattr(m, "embedding_dim", None) for m in (model, gallery_model)]
        if None not in widths:
            check_widths(*widths)  # before any embedding
    embeddings, labels = embed(model, dataset, batch_size, device, progress, num_workers)
    gallery = None
    if gallery_model is not None:
        gallery, gallery_labels = embed(gallery_model, dataset if gallery_dataset is None else gallery_dataset,
                                        batch_size, device, progress, num_workers)
        if not torch.equal(gallery_labels, labels):
            raise ValueError("the gallery data set must hold the query data set's images in the same order")
    return evaluate_embeddings(embeddings, labels, ks, metrics, device, knn_batch_size, gallery_embeddings=gallery)


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")
