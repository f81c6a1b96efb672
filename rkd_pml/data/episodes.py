"""Episodic batches for prototypical training: ``ways`` classes x (``shots`` + ``queries``) images.

Built on PML's ``MPerClassSampler`` with ``m = shots + queries`` and
``batch_size = ways * m``: each consecutive block of ``batch_size`` indices it yields holds
``m`` images of each of ``ways`` distinct classes, contiguous per class and in random
order within a class, which is an episode. Where it does not fit as it is, this module
adds what is missing:

* it draws images with replacement for classes smaller than ``m`` (an image could then be
  both a support and a query): classes that small are refused here;
* it draws from NumPy's global generator and shuffles its own class list in place, so a
  pass depends on every pass before it: here each pass builds a fresh sampler and runs it
  under :func:`rkd_pml._pml.numpy_random` with a generator seeded by ``(seed, epoch)``, so
  epoch ``e`` is the same whether or not epochs ``0..e-1`` were drawn;
* it yields a flat index stream: here it is cut into one list per episode, for
  ``DataLoader(dataset, batch_sampler=...)``.

Within each episode block the first ``shots`` indices of a class are its supports (the
rule :class:`rkd_pml.losses.prototypical.PrototypicalLoss` uses with ``shots=``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

from .._pml import MPerClassSampler, numpy_random


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


class EpisodicBatchSampler(Sampler[list[int]]):
    """Batch sampler of ``episodes`` episodes per pass, reproducible from ``seed`` and the epoch.

    Args:
        labels: 1-D class labels ``(N,)``, or a data set with a ``.labels`` attribute.
        ways: classes per episode (at most the number of classes).
        shots: support images per class.
        queries: query images per class.
        episodes: episodes (batches) per pass, i.e. ``len(sampler)``.
        seed: base seed; pass ``e`` uses ``(seed, e)``.

    Each pass yields ``episodes`` lists of ``ways * (shots + queries)`` indices; the epoch
    advances by one after each full pass, or is set with :meth:`set_epoch`.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray | torch.Tensor | Any,
        ways: int,
        shots: int,
        queries: int,
        episodes: int,
        seed: int = 0,
    ):
        if hasattr(labels, "labels") and not isinstance(labels, (np.ndarray, torch.Tensor)):
            labels = labels.labels
        labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).reshape(-1)
        if labels.size == 0:
            raise ValueError("labels is empty")
        self.ways = _positive_int(ways, "ways")
        self.shots = _positive_int(shots, "shots")
        self.queries = _positive_int(queries, "queries")
        self.episodes = _positive_int(episodes, "episodes")
        self.seed = int(seed)
        self.epoch = 0
        classes, counts = np.unique(labels, return_counts=True)
        if self.ways > len(classes):
            raise ValueError(f"ways ({self.ways}) is larger than the number of classes ({len(classes)})")
        if counts.min() < self.per_class:
            raise ValueError(
                f"shots + queries = {self.per_class} distinct images per class are needed, but class "
                f"{classes[counts.argmin()]!r} has {counts.min()}"
            )
        self.labels = labels

    @property
    def per_class(self) -> int:
        return self.shots + self.queries

    @property
    def batch_size(self) -> int:
        return self.ways * self.per_class

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass the one of ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.episodes

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.RandomState(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0])
        sampler = MPerClassSampler(
            self.labels, self.per_class, batch_size=self.batch_size,
            length_before_new_iter=self.episodes * self.batch_size,
        )
        with numpy_random(rng):
            stream = [int(i) for i in sampler]
        self.epoch += 1
        size = self.batch_size
        for begin in range(0, len(stream), size):
            yield stream[begin : begin + size]
