"""Episodic batches: ways classes x (shots + queries) distinct images, reproducible per seed and epoch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from rkd_pml.data.episodes import EpisodicBatchSampler


def _labels():
    return np.repeat(np.arange(30), np.arange(30) % 4 + 8)  # 30 classes of 8..11 images, grouped


def test_every_batch_is_an_episode():
    labels = _labels()
    sampler = EpisodicBatchSampler(labels, ways=7, shots=2, queries=5, episodes=40, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 40
    seen = set()
    for b in batches:
        assert len(b) == 7 * 7
        blocks = labels[np.asarray(b)].reshape(7, 7)
        assert (blocks == blocks[:, :1]).all()  # contiguous blocks of one class
        assert len(set(blocks[:, 0])) == 7  # 7 distinct classes
        assert all(len(set(np.asarray(b).reshape(7, 7)[w])) == 7 for w in range(7))  # distinct images
        seen.update(blocks[:, 0])
    assert len(seen) == 30


def test_reproducible_per_seed_and_epoch():
    labels = _labels()
    a = EpisodicBatchSampler(labels, 5, 1, 3, 10, seed=3)
    b = EpisodicBatchSampler(labels, 5, 1, 3, 10, seed=3)
    first, second = list(a), list(a)  # the epoch advances after a pass
    assert first != second
    assert list(b) == first and list(b) == second
    c = EpisodicBatchSampler(labels, 5, 1, 3, 10, seed=3)
    c.set_epoch(1)
    assert list(c) == second  # epoch 1 does not depend on epoch 0 having been drawn
    assert list(EpisodicBatchSampler(labels, 5, 1, 3, 10, seed=4)) != first


def test_global_numpy_generator_untouched():
    state = np.random.get_state()[1].copy()
    list(EpisodicBatchSampler(_labels(), 5, 1, 3, 10, seed=0))
    assert (np.random.get_state()[1] == state).all()


def test_works_as_a_dataloader_batch_sampler():
    labels = _labels()
    data = TensorDataset(torch.arange(len(labels)), torch.from_numpy(labels))
    sampler = EpisodicBatchSampler(data.tensors[1], ways=4, shots=1, queries=2, episodes=3)
    batches = list(DataLoader(data, batch_sampler=sampler))
    assert len(batches) == 3 and all(len(x) == 12 and (labels[x.numpy()] == y.numpy()).all() for x, y in batches)


def test_errors_name_the_argument():
    labels = _labels()
    with pytest.raises(ValueError, match="ways"):
        EpisodicBatchSampler(labels, ways=31, shots=1, queries=1, episodes=1)
    with pytest.raises(ValueError, match="shots \\+ queries"):
        EpisodicBatchSampler(labels, ways=5, shots=4, queries=5, episodes=1)
    with pytest.raises(ValueError, match="episodes"):
        EpisodicBatchSampler(labels, ways=5, shots=1, queries=1, episodes=0)
    with pytest.raises(ValueError, match="labels is empty"):
        EpisodicBatchSampler([], ways=5, shots=1, queries=1, episodes=1)
