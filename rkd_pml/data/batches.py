"""Class-balanced batches of a training run, reproducible per epoch, and the validation split.

The batches of epoch ``e`` depend only on ``(seed, e)`` (PML's MPerClassSampler drawing from
a generator seeded with both), the augmentation of each item on ``(seed, e, batch, row)`` and
the random draws of a training step on ``(seed, e, step, rank)`` (:func:`seeded_random`), so a
resumed run sees the batches and draws what an uninterrupted one would.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .._pml import numpy_random
from .sampler import class_balanced_sampler

DEFAULT_M_PER_CLASS = 4


def epoch_seed(seed: int, epoch: int) -> int:
    """A seed for epoch ``epoch`` of a run seeded ``seed``."""
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1)[0])


def step_seed(seed: int, epoch: int, step: int, rank: int = 0) -> int:
    """The seed of the random draws of training step ``step`` (1-based) of ``epoch`` on process
    ``rank`` (the miner's, dropout's...; see :func:`seeded_random`): a function of the position
    alone, so a resumed run draws what an uninterrupted one would."""
    entropy = [int(seed), 0x53544550, int(epoch), int(step), int(rank)]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] % 2**63)


def choose_m_per_class(labels: Sequence[int], batch_size: int, preferred: int = DEFAULT_M_PER_CLASS) -> int:
    """The smallest divisor of ``batch_size`` that is at least ``preferred`` and that the classes
    fill (``m * classes >= batch_size``; few training classes, e.g. digits' 5, need a larger one);
    ``batch_size`` if none is. ValueError if ``batch_size`` exceeds the number of images."""
    labels = [int(x) for x in labels]
    if batch_size > len(labels):
        raise ValueError(f"batch_size must be at most the {len(labels)} training images, got {batch_size}")
    need = max(preferred, -(-batch_size // max(1, len(set(labels)))))
    best, d = batch_size, 1
    while d * d <= batch_size:  # divisors come in pairs (d, batch_size // d)
        if batch_size % d == 0:
            best = min([best] + [m for m in (d, batch_size // d) if m >= need])
        d += 1
    return best


def check_class_balance(labels: Sequence[int], batch_size: int, m_per_class: int, flag: str = "--m-per-class") -> None:
    """ValueError unless batches of ``m_per_class`` distinct images of ``batch_size / m``
    classes can be built from ``labels`` (naming the setting ``flag`` to change)."""
    counts = Counter(int(x) for x in labels)
    if batch_size % m_per_class:
        raise ValueError(f"batch size ({batch_size}) must be a multiple of {flag} ({m_per_class})")
    if len(counts) * m_per_class < batch_size:
        fit = choose_m_per_class(labels, batch_size, 1)
        raise ValueError(
            f"a batch of {batch_size} with {m_per_class} images per class needs {batch_size // m_per_class} "
            f"classes, but the training split has {len(counts)}; use {flag} {fit} (a divisor of the batch "
            "size) or a smaller batch size"
        )
    smallest, size = min(counts.items(), key=lambda kv: kv[1])
    if size < m_per_class:
        raise ValueError(
            f"{flag} {m_per_class} is more than the {size} training images of the smallest class "
            f"(label {smallest}): its images would repeat within a batch; use {flag} {size} or fewer"
        )


def epoch_batches(
    labels: Sequence[int], batch_size: int, m_per_class: int, iterations: int, seed: int, epoch: int,
    rank: int = 0, world_size: int = 1,
) -> list[list[tuple[int, int]]]:
    """The ``iterations`` class-balanced batches of ``epoch`` (PML's MPerClassSampler, seeded by
    ``(seed, epoch)``), as lists of ``(dataset index, item seed)`` for :class:`SeededItems`.

    With ``world_size > 1``, ``batch_size`` is the global batch: the global batches are those
    of a single process, and rank ``r`` gets rows ``r * b`` to ``(r + 1) * b - 1`` of each,
    ``b = batch_size / world_size``. The shares of all ranks, in rank order, make the global batch.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size), got rank {rank} of {world_size}")
    if batch_size % world_size:
        raise ValueError(f"batch size {batch_size} must be divisible by the number of processes ({world_size})")
    check_class_balance(labels, batch_size, m_per_class)
    rng = np.random.RandomState(epoch_seed(seed, epoch))
    with numpy_random(rng):
        sampler = class_balanced_sampler(labels, m_per_class, batch_size, iterations * batch_size)
        order = [int(i) for i in sampler]
    batches = seed_items([order[i * batch_size : (i + 1) * batch_size] for i in range(iterations)], seed, epoch)
    share = batch_size // world_size
    return batches if world_size == 1 else [b[rank * share : (rank + 1) * share] for b in batches]


@contextlib.contextmanager
def seeded_random(seed: int, device: torch.device | None = None) -> Iterator[None]:
    """Seed torch's generator (CPU, and ``device``'s when it is a GPU), NumPy's global generator
    (which PML's miners and samplers use) and Python's ``random`` with ``seed`` for the block,
    and restore what they were after: what the block draws depends only on ``seed``, and the
    block leaves the process's streams as it found them."""
    import random

    gpu = device is not None and device.type == "cuda"
    index = (device.index if device.index is not None else torch.cuda.current_device()) if gpu else None
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[index] if gpu else []):
        torch.default_generator.manual_seed(seed)
        if gpu:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        elif device is not None and device.type != "cpu":
            torch.manual_seed(seed)  # another accelerator (MPS...): seeded, not restored
        random.seed(seed)
        np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class SeededItems(Dataset):
    """``dataset`` indexed by ``(index, seed)``: the item is drawn with torch's, NumPy's and
    Python's generators seeded ``seed`` (and restored after), so its augmentation depends only on
    the seed, not on which worker process loads it or on what was drawn before: a resumed run,
    with or without workers, sees exactly the views an uninterrupted one would."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        with seeded_random(seed):
            return self.dataset[index]


class EpochItems(Dataset):
    """A data set with ``set_epoch`` (a :class:`~rkd_pml.data.teacher_cache.CachedViews`) indexed
    by ``(index, epoch)``, so the view of each item follows the epoch in worker processes too."""

    def __init__(self, views: Any):
        self.views = views

    def __len__(self) -> int:
        return len(self.views)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, epoch = key
        self.views.set_epoch(epoch)
        return self.views[index]


def seed_items(batches: list[list[int]], seed: int, epoch: int) -> list[list[tuple[int, int]]]:
    """The batches of an epoch as ``(index, item seed)`` pairs for
    :class:`SeededItems`; the seed of an item depends on ``(seed, epoch, batch, row)`` only."""
    out = []
    for b, batch in enumerate(batches):
        seeds = np.random.SeedSequence([int(seed), int(epoch), b]).generate_state(len(batch), dtype=np.uint64)
        out.append([(int(i), int(s % 2**63)) for i, s in zip(batch, seeds)])
    return out


class EpochBatches:
    """A batch sampler whose batches are replaced each epoch (:meth:`set`), so one DataLoader,
    and its worker processes, serve the whole run (``persistent_workers``)."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []

    def set(self, batches: list[list[Any]]) -> None:
        self.batches = list(batches)

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def make_loader(dataset: Dataset, batches: Any, num_workers: int = 0, pin_memory: bool = False,
                seed: int = 0) -> DataLoader:
    """A DataLoader over fixed batches (of indices, or of ``(index, seed)`` pairs for
    :class:`SeededItems`); with workers, they persist across epochs (give an :class:`EpochBatches`).

    It draws its workers' base seed from its own generator, seeded ``seed``, never from torch's
    global one: starting an epoch's iteration leaves the process's random stream untouched."""
    return DataLoader(dataset, batch_sampler=batches, num_workers=num_workers, pin_memory=pin_memory,
                      persistent_workers=num_workers > 0, generator=torch.Generator().manual_seed(int(seed)))


def split_validation(train_set: Any, test_transform: Any, fraction: float, seed: int):
    """Carve a class-disjoint validation split out of the training classes.

    ``ceil(fraction * C)`` classes chosen with ``seed`` become the validation split (seen
    through the test transform). ValueError unless at least 2 classes end on each side: a
    validation split of one class scores Recall@1 = 1 whatever the model, and one training
    class has no negatives.
    """
    classes = np.unique(np.asarray(train_set.labels))
    n_val = max(1, math.ceil(fraction * len(classes)))
    if n_val < 2 or len(classes) - n_val < 2:
        raise ValueError(
            f"val_fraction {fraction} of {len(classes)} training classes holds out {n_val} and keeps "
            f"{len(classes) - n_val}: both sides need at least 2 classes (use 0 for no validation split)"
        )
    rng = np.random.RandomState(seed)
    val_classes = sorted(int(c) for c in rng.choice(classes, size=n_val, replace=False))
    train_classes = sorted(int(c) for c in classes if int(c) not in val_classes)
    return train_set.subset(train_classes), train_set.subset(val_classes, transform=test_transform)


def auto_val_fraction(num_classes: int, preferred: float) -> float:
    """``preferred`` where it holds out >= 2 classes and keeps >= 2, else 0 (no validation split)."""
    n_val = max(1, math.ceil(preferred * num_classes))
    return preferred if n_val >= 2 and num_classes - n_val >= 2 else 0.0
