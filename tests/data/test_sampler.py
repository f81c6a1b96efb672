"""class_balanced_sampler: m images of batch_size / m classes per batch, checked arguments."""

from collections import Counter

import numpy as np
import pytest
import torch

from rkd_pml.data import class_balanced_sampler, load_dataset


def test_batches_hold_m_images_per_class():
    labels = np.repeat(np.arange(10), [3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
    sampler = class_balanced_sampler(torch.from_numpy(labels), m=4, batch_size=12, length=100)
    indices = list(sampler)
    assert len(indices) == len(sampler) == 96
    for start in range(0, 96, 12):
        counts = Counter(labels[indices[start : start + 12]].tolist())
        assert sorted(counts.values()) == [4, 4, 4]


def test_takes_a_dataset():
    train, _ = load_dataset("digits")
    sampler = class_balanced_sampler(train, m=5, batch_size=25)
    assert len(sampler) == len(train) - len(train) % 25


def test_argument_errors():
    labels = [0, 0, 1, 1, 2, 2]
    with pytest.raises(ValueError, match="multiple of m"):
        class_balanced_sampler(labels, m=4, batch_size=6)
    with pytest.raises(ValueError, match=r"m \* num_classes = 2 \* 3 = 6 < batch_size \(8\)"):
        class_balanced_sampler(labels, m=2, batch_size=8, length=16)
    with pytest.raises(ValueError, match="length"):
        class_balanced_sampler(labels, m=2, batch_size=6, length=4)
    with pytest.raises(ValueError, match="positive"):
        class_balanced_sampler(labels, m=0, batch_size=6)
    with pytest.raises(ValueError, match="empty"):
        class_balanced_sampler([], m=2, batch_size=2)
