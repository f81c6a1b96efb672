"""Few-shot classification accuracy with prototypes (Snell et al., NeurIPS 2017).

An episode draws ``ways`` classes of the evaluation set and, for each, ``shots`` support
and ``queries`` query images (distinct images). A class's prototype is the mean of its
support embeddings; each query goes to the prototype at the smallest squared Euclidean
distance. The accuracy of an episode is its fraction of correct queries; the reported
accuracy is the mean over the episodes with the usual 95 % interval
``1.96 * std / sqrt(episodes)`` (``std`` with Bessel's correction).

The data set is embedded once; all episodes are then drawn and scored as index and tensor
operations on the embedding matrix, in chunks of episodes, so a thousand episodes take
well under a second for Omniglot-sized sets. Sampling uses its own NumPy generator
seeded with ``seed``: the global NumPy and torch generators are left untouched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..losses.inputs import check_embeddings
from .evaluate import _model_device, embed

#: Episodes are scored in chunks of about this many query-prototype-dimension products.
_CHUNK_ELEMENTS = 1 << 23


def _positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def sample_episodes(
    labels: Tensor | np.ndarray | Sequence[int],
    ways: int,
    shots: int,
    queries: int,
    episodes: int,
    seed: int = 0,
) -> np.ndarray:
    """Indices ``(episodes, ways, shots + queries)`` into ``labels`` ``(N,)``.

    Row ``[e, w]`` holds distinct images of one class, the same class for every entry,
    a different class for each ``w`` of an episode; the first ``shots`` entries are the
    supports, the others the queries. Deterministic given the arguments.
    """
    ways, shots = _positive_int(ways, "ways"), _positive_int(shots, "shots")
    queries, episodes = _positive_int(queries, "queries"), _positive_int(episodes, "episodes")
    labels = np.asarray(labels.cpu() if isinstance(labels, Tensor) else labels).reshape(-1)
    if labels.size == 0:
        raise ValueError("labels is empty")
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    if ways > len(classes):
        raise ValueError(f"ways ({ways}) is larger than the number of classes ({len(classes)})")
    per_class = shots + queries
    if counts.min() < per_class:
        small = classes[counts < per_class]
        raise ValueError(
            f"shots + queries = {shots} + {queries} = {per_class} images per class are needed, but "
            f"{len(small)} class(es) have fewer, e.g. class {small[0]!r} with "
            f"{counts[counts < per_class][0]} image(s)"
        )
    # table[c, :counts[c]] = the indices of class c, padded with -1
    order = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    width = int(counts.max())
    table = np.full((len(classes), width), -1, dtype=np.int64)
    rank = np.arange(len(labels)) - np.repeat(starts, counts)
    table[inverse[order], rank] = order

    rng = np.random.default_rng(seed)
    out = np.empty((episodes, ways, per_class), dtype=np.int64)
    step = max(1, _CHUNK_ELEMENTS // max(len(classes), ways * width))
    for begin in range(0, episodes, step):
        e = min(step, episodes - begin)
        chosen = np.argsort(rng.random((e, len(classes))), axis=1)[:, :ways]  # (e, ways)
        keys = rng.random((e, ways, width))
        keys[table[chosen] < 0] = np.inf  # padding sorts last
        picks = np.argsort(keys, axis=2)[:, :, :per_class]  # (e, ways, per_class)
        out[begin : begin + e] = np.take_along_axis(table[chosen], picks, axis=2)
    return out


def episode_accuracies(support: Tensor, query: Tensor) -> Tensor:
    """Accuracy of each episode ``(E,)`` from ``support`` ``(E, W, S, D)`` and ``query``
    ``(E, W, Q, D)``, where ``[:, w]`` belongs to class ``w``.

    Prototypes are the support means ``(E, W, D)``; a query is correct when its own class's
    prototype is the nearest (squared Euclidean distance; a tie goes to the lower class
    index). Distances are computed from differences, not from the Gram expansion.
    """
    if support.dim() != 4 or query.dim() != 4 or support.shape[:2] != query.shape[:2]:
        raise ValueError(
            f"expected support (E, W, S, D) and query (E, W, Q, D) with the same E and W, "
            f"got {tuple(support.shape)} and {tuple(query.shape)}"
        )
    if support.shape[-1] != query.shape[-1]:
        raise ValueError(f"support and query widths differ: {support.shape[-1]} and {query.shape[-1]}")
    e, w, q, d = query.shape
    prototypes = support.mean(dim=2)  # (E, W, D)
    flat = query.reshape(e, w * q, d)  # (E, W*Q, D)
    dist = torch.cdist(flat, prototypes, compute_mode="donot_use_mm_for_euclid_dist")  # (E, W*Q, W)
    predicted = dist.argmin(dim=2)
    truth = torch.arange(w, device=query.device).repeat_interleave(q)
    return (predicted == truth).to(torch.float64).mean(dim=1)


def few_shot_accuracy_from_embeddings(
    embeddings: Tensor,
    labels: Tensor | np.ndarray | Sequence[int],
    ways: int,
    shots: int,
    queries: int = 15,
    episodes: int = 1000,
    seed: int = 0,
    return_episodes: bool = False,
) -> dict:
    """Prototype few-shot accuracy of ``embeddings`` ``(N, D)`` with ``labels`` ``(N,)``.

    Returns ``{"accuracy", "ci95", "std", "ways", "shots", "queries", "episodes", "seed"}``
    (``ci95`` is NaN for a single episode) and, with ``return_episodes``, the per-episode
    accuracies as ``"episode_accuracies"`` (a float64 tensor ``(episodes,)``). Embeddings
    with NaN or Inf values are refused (ValueError): they have no nearest prototype.
    """
    embeddings = torch.as_tensor(embeddings)
    labels = torch.as_tensor(np.asarray(labels.cpu() if isinstance(labels, Tensor) else labels)).reshape(-1)
    if embeddings.dim() != 2 or len(embeddings) != len(labels):
        raise ValueError(
            "expected embeddings (N, D) and labels (N,), "
            f"got {tuple(embeddings.shape)} and {tuple(labels.shape)}"
        )
    check_embeddings(embeddings, "embeddings")  # floating, non-empty, finite
    index = torch.from_numpy(sample_episodes(labels, ways, shots, queries, episodes, seed))
    index = index.to(embeddings.device)
    per_class = shots + queries
    dim = embeddings.shape[1]
    step = max(1, _CHUNK_ELEMENTS // (ways * ways * queries * dim))
    scores = []
    for begin in range(0, episodes, step):
        chunk = embeddings[index[begin : begin + step]]  # (e, W, S+Q, D)
        scores.append(episode_accuracies(chunk[:, :, :shots], chunk[:, :, shots:per_class]))
    accuracies = torch.cat(scores).cpu()
    std = float(accuracies.std(unbiased=True)) if episodes > 1 else math.nan
    result = {
        "accuracy": float(accuracies.mean()),
        "ci95": 1.96 * std / math.sqrt(episodes),
        "std": std,
        "ways": int(ways),
        "shots": int(shots),
        "queries": int(queries),
        "episodes": int(episodes),
        "seed": int(seed),
    }
    if return_episodes:
        result["episode_accuracies"] = accuracies
    return result


def few_shot_accuracy(
    model: nn.Module,
    dataset: Dataset,
    ways: int,
    shots: int,
    queries: int = 15,
    episodes: int = 1000,
    seed: int = 0,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    progress: bool = False,
    return_episodes: bool = False,
) -> dict:
    """Prototype few-shot accuracy of ``model`` on the classes of ``dataset``.

    ``dataset`` items are ``(image, label)`` and ``dataset.labels`` is a 1-D int array; its
    classes should be unseen in training. The model embeds the whole set once (eval mode,
    ``batch_size`` images at a time, on ``device``, default the model's), then
    :func:`few_shot_accuracy_from_embeddings` scores ``episodes`` episodes of ``ways``
    classes x (``shots`` + ``queries``) images. The arguments are checked before anything
    is embedded.
    """
    if hasattr(dataset, "labels"):
        sample_episodes(dataset.labels, ways, shots, queries, 1, seed)  # checks, early
    device = _model_device(model) if device is None else torch.device(device)
    embeddings, labels = embed(model, dataset, batch_size, device, progress)
    return few_shot_accuracy_from_embeddings(
        embeddings, labels, ways, shots, queries, episodes, seed, return_episodes
    )
