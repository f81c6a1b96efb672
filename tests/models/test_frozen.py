"""freeze_teacher: eval for good, no gradients, inference-mode forward, usable outputs."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rkd_pml.models import EmbeddingModel, FrozenModel, freeze_teacher




class Pair(nn.Module):
    def __init__(self, teacher, student):
        super().__init__()
        self.teacher, self.student = teacher, student


def make():
    teacher = freeze_teacher(EmbeddingModel("resnet10t", 16, l2_normalize=True))
    student = EmbeddingModel("resnet10t", 8)
    return teacher, student, Pair(teacher, student)


def test_stays_in_eval_and_keeps_batchnorm_statistics():
    teacher, student, pair = make()
    pair.train()
    assert student.training and not teacher.training
    assert not any(m.training for m in teacher.modules())
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    first = teacher(torch.rand(4, 3, 32, 32))
    second = teacher(torch.rand(4, 3, 32, 32))
    assert not torch.equal(first, second)
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_no_gradients_and_outputs_usable_in_a_student_loss():
    teacher, student, pair = make()
    pair.train()
    assert all(not p.requires_grad for p in teacher.parameters())
    x = torch.rand(4, 3, 32, 32)
    target = teacher(x)
    assert not target.requires_grad and not target.is_inference()
    loss = F.smooth_l1_loss(student(x), target[:, :8])
    loss.backward()
    assert student.head.weight.grad is not None


def test_forward_runs_in_inference_mode():
    seen = []

    class Probe(nn.Module):
        def forward(self, x):
            seen.append(torch.is_inference_mode_enabled())
            return x * 2

    assert torch.equal(freeze_teacher(Probe())(torch.ones(2)), torch.full((2,), 2.0))
    assert seen == [True]


def test_delegates_attributes_and_is_idempotent():
    teacher, _, _ = make()
    assert isinstance(teacher, FrozenModel) and freeze_teacher(teacher) is teacher
    assert teacher.embedding_dim == 16 and teacher.data_config["mean"] == teacher.model.data_config["mean"]
    clone = copy.deepcopy(teacher)
    assert not clone.training and torch.equal(
        clone(torch.ones(1, 3, 32, 32)), teacher(torch.ones(1, 3, 32, 32))
    )
