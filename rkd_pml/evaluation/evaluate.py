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

from .recall import retrieval_metrics

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
) -> dict[str, float]:
    """Retrieval metrics of ``embeddings`` ``(N, D)`` with ``labels`` ``(N,)``, each row a query
    against all the others: ``{"recall@K": ..., <PML metric>: ...}``."""
    embeddings = torch.as_tensor(embeddings)
    labels = torch.as_tensor(labels).reshape(-1)
    if embeddings.dim() != 2 or len(embeddings) != len(labels):
        raise ValueError(
            "expected embeddings (N, D) and labels (N,), "
            f"got {tuple(embeddings.shape)} and {tuple(labels.shape)}"
        )
    if len(labels) < 2:
        raise ValueError("need at least 2 embeddings to retrieve anything")
    device = embeddings.device if device is None else torch.device(device)
    return retrieval_metrics(embeddings.to(device), labels.to(device), ks, tuple(metrics), knn_batch_size)


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
) -> dict[str, float]:
    """Recall@K (keys ``recall@K``) and PML's metrics (``precision_at_1``, ``r_precision``,
    ``mean_average_precision_at_r``; add ``"NMI"``/``"AMI"`` to ``metrics`` for clustering)
    of ``model`` on ``dataset``.

    The kNN search is exact and blockwise (``knn_batch_size`` query rows at a time) on
    ``device`` (default: the model's), so memory stays O(N * k) for SOP-sized sets, with
    k = max(max(ks), largest class - 1).
    """
    device = _model_device(model) if device is None else torch.device(device)
    embeddings, labels = embed(model, dataset, batch_size, device, progress, num_workers)
    return evaluate_embeddings(embeddings, labels, ks, metrics, device, knn_batch_size)


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")
