"""Prototype few-shot accuracy: known values on constructed embeddings, the sampling rules, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from rkd_pml.evaluation.few_shot import (
    episode_accuracies,
    few_shot_accuracy,
    few_shot_accuracy_from_embeddings,
    sample_episodes,
)


def _separable(classes=12, per_class=20, dim=8, seed=0):
    """Tight clusters far apart: every query's nearest prototype is its own class's."""
    g = torch.Generator().manual_seed(seed)
    centres = 100 * torch.randn(classes, dim, generator=g)
    labels = np.repeat(np.arange(classes), per_class)
    return centres[labels] + 0.01 * torch.randn(len(labels), dim, generator=g), labels


@pytest.mark.parametrize("ways,shots", [(5, 1), (5, 5), (12, 1)])
def test_separable_embeddings_score_exactly_one(ways, shots):
    emb, labels = _separable()
    r = few_shot_accuracy_from_embeddings(emb, labels, ways, shots, queries=15, episodes=200)
    assert r["accuracy"] == 1.0 and r["ci95"] == 0.0
    assert (r["ways"], r["shots"], r["queries"], r["episodes"]) == (ways, shots, 15, 200)


@pytest.mark.parametrize("ways", [5, 20])
def test_random_embeddings_score_chance(ways):
    g = torch.Generator().manual_seed(1)
    labels = np.repeat(np.arange(40), 20)
    emb = torch.randn(len(labels), 16, generator=g)  # unrelated to the labels
    r = few_shot_accuracy_from_embeddings(emb, labels, ways, 1, queries=15, episodes=1000, seed=3)
    # chance is 1/ways; the interval (1.96 std / sqrt(E)) should cover it, with a little slack
    assert abs(r["accuracy"] - 1 / ways) < 1.5 * r["ci95"] + 1e-3
    assert r["ci95"] == pytest.approx(1.96 * r["std"] / math.sqrt(1000))


def test_hand_computed_episode():
    # 1-D embeddings, 2 ways, 1 shot, 2 queries per class
    support = torch.tensor([[[0.0]], [[4.0]]]).reshape(1, 2, 1, 1)  # prototypes 0 and 4
    query = torch.tensor([[1.0], [3.0], [5.0], [1.5]]).reshape(1, 2, 2, 1)
    # class 0 queries 1 (-> 0, right) and 3 (-> 4, wrong); class 1 queries 5 (right), 1.5 (wrong)
    assert episode_accuracies(support, query).tolist() == [0.5]
    # 2 shots: prototype of class 0 is the mean (0 + 2) / 2 = 1, of class 1 (4 + 8) / 2 = 6
    support = torch.tensor([[0.0], [2.0], [4.0], [8.0]]).reshape(1, 2, 2, 1)
    query = torch.tensor([[3.4], [3.6], [3.6], [6.0]]).reshape(1, 2, 2, 1)
    # squared distances: 3.4 -> (5.76, 6.76) right; 3.6 -> (6.76, 5.76) wrong; class 1 both right
    assert episode_accuracies(support, query).tolist() == [0.75]


def test_sampled_episodes_of_a_tiny_set():
    # class 0 at 0 and 1, class 1 at 3 and 10; 2-way 1-shot 1-query uses every image.
    # class 1's support 3: both queries right (1.0); support 10: query 3 is nearer 0 or 1 (0.5)
    emb = torch.tensor([[0.0], [1.0], [3.0], [10.0]])
    labels = [0, 0, 1, 1]
    r = few_shot_accuracy_from_embeddings(emb, labels, 2, 1, queries=1, episodes=2000, return_episodes=True)
    assert set(r["episode_accuracies"].tolist()) == {0.5, 1.0}
    assert abs(r["accuracy"] - 0.75) < r["ci95"] * 1.5


def test_sample_episodes_rules():
    labels = np.repeat(np.arange(10), [20, 20, 20, 20, 20, 25, 30, 20, 21, 20])
    idx = sample_episodes(labels, ways=5, shots=3, queries=4, episodes=300, seed=7)
    assert idx.shape == (300, 5, 7)
    cls = labels[idx]
    assert (cls == cls[:, :, :1]).all()  # one class per row
    assert all(len(set(c[:, 0])) == 5 for c in cls)  # distinct classes per episode
    assert all(len(set(row)) == 7 for row in idx.reshape(-1, 7))  # distinct images per class
    assert len(set(cls[:, :, 0].reshape(-1))) == 10  # every class gets drawn
    assert (sample_episodes(labels, 5, 3, 4, 300, seed=7) == idx).all()
    assert not (sample_episodes(labels, 5, 3, 4, 300, seed=8) == idx).all()


def test_same_seed_same_result_and_global_rng_untouched():
    emb, labels = torch.randn(400, 8), np.repeat(np.arange(20), 20)
    np_state, torch_state = np.random.get_state()[1].copy(), torch.get_rng_state().clone()
    a = few_shot_accuracy_from_embeddings(emb, labels, 5, 1, episodes=100, seed=4)
    b = few_shot_accuracy_from_embeddings(emb, labels, 5, 1, episodes=100, seed=4)
    c = few_shot_accuracy_from_embeddings(emb, labels, 5, 1, episodes=100, seed=5)
    assert a == b and a["accuracy"] != c["accuracy"]
    assert (np.random.get_state()[1] == np_state).all() and torch.equal(torch.get_rng_state(), torch_state)


def test_errors_name_the_argument():
    emb, labels = torch.randn(60, 4), np.repeat(np.arange(3), 20)
    with pytest.raises(ValueError, match="ways"):
        few_shot_accuracy_from_embeddings(emb, labels, ways=4, shots=1)
    with pytest.raises(ValueError, match="shots \\+ queries"):
        few_shot_accuracy_from_embeddings(emb, labels, ways=3, shots=6, queries=15)
    with pytest.raises(ValueError, match="episodes"):
        few_shot_accuracy_from_embeddings(emb, labels, ways=3, shots=1, episodes=0)
    with pytest.raises(ValueError, match="labels"):
        few_shot_accuracy_from_embeddings(emb, labels[:-1], ways=3, shots=1)


class _TensorSet(torch.utils.data.Dataset):
    def __init__(self, x, labels):
        self.x, self.labels = x, np.asarray(labels)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], int(self.labels[i])


def test_model_level_call_embeds_once_and_scores():
    emb, labels = _separable(classes=6, per_class=20, dim=4)
    data = _TensorSet(emb, labels)
    model = nn.Identity()
    r = few_shot_accuracy(model, data, ways=5, shots=5, episodes=50, batch_size=32)
    assert r["accuracy"] == 1.0
    # a model that destroys the class structure scores near chance
    # a model mapping everything to one point: all distances tie, the first prototype wins
    r = few_shot_accuracy(_Zero(), data, 5, 1, episodes=50)
    assert r["accuracy"] == pytest.approx(0.2, abs=1e-12)
    with pytest.raises(ValueError, match="ways"):
        few_shot_accuracy(model, data, ways=7, shots=1)


class _Zero(nn.Module):
    def forward(self, x):
        return torch.zeros(len(x), 3)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_embeddings_are_refused(bad):
    # one NaN/Inf row used to be scored (as chance or worse) instead of refused
    emb, labels = _separable(classes=6, per_class=20, dim=4)
    emb[7, 2] = bad
    with pytest.raises(ValueError, match="embeddings contains NaN or Inf"):
        few_shot_accuracy_from_embeddings(emb, labels, ways=5, shots=1, episodes=10)
