"""DistillationTrainer: PML's MetricLossOnly with a frozen teacher, on a few iterations."""

import copy
import logging

import pytest
import torch
from pytorch_metric_learning import losses, miners, testers
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.samplers import MPerClassSampler
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from pytorch_metric_learning.utils.inference import CustomKNN

from rkd_pml import RKDLoss
from rkd_pml.data import load_dataset
from rkd_pml.models import EmbeddingModel
from rkd_pml.training import DistillationTrainer


class _CountingLoss(RKDLoss):
    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, embeddings, labels=None, indices_tuple=None, ref_emb=None, ref_labels=None):
        self.calls.append((embeddings.shape, None if ref_emb is None else ref_emb.shape, ref_emb.requires_grad))
        return super().forward(embeddings, labels, indices_tuple, ref_emb, ref_labels)


@pytest.fixture
def digits():
    return load_dataset("digits", image_size=16, train_transform="none", in_chans=3)


def _trainer(digits, loss, **kwargs):
    train_set, _ = digits
    student = EmbeddingModel("resnet10t", embedding_dim=4)
    teacher = EmbeddingModel("resnet10t", embedding_dim=8, l2_normalize=True)
    teacher.train()  # the trainer must put it (and keep it) in eval mode
    trainer = DistillationTrainer(
        models={"trunk": student, "teacher": teacher},
        optimizers={"trunk_optimizer": torch.optim.Adam(student.parameters(), lr=1e-3)},
        batch_size=20,
        loss_funcs={"distillation_loss": loss, **kwargs.pop("extra_losses", {})},
        dataset=train_set,
        sampler=MPerClassSampler(train_set.labels, m=5, batch_size=20, length_before_new_iter=60),
        iterations_per_epoch=3,
        dataloader_num_workers=0,
        data_device=torch.device("cpu"),
        **kwargs,
    )
    return trainer, student, teacher


def test_few_iterations_train_the_student_only(digits):
    loss = _CountingLoss()
    recorded = []
    trainer, student, teacher = _trainer(
        digits, loss, end_of_iteration_hook=lambda t: recorded.append(float(t.losses["distillation_loss"].detach()))
    )
    student_before = copy.deepcopy(student.state_dict())
    teacher_before = copy.deepcopy(teacher.state_dict())  # BatchNorm running stats included
    trainer.train(num_epochs=1)
    assert len(loss.calls) == 3
    assert loss.calls[0] == (torch.Size([20, 4]), torch.Size([20, 8]), False)
    assert any(not torch.equal(v, student.state_dict()[k]) for k, v in student_before.items())
    for k, v in teacher_before.items():
        assert torch.equal(v, teacher.state_dict()[k]), k
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert len(recorded) == 3 and all(x > 0 for x in recorded)


def test_with_metric_loss_miner_and_tester_hook(digits):
    _, test_set = digits
    accuracy = AccuracyCalculator(include=("precision_at_1",), k=8, knn_func=CustomKNN(LpDistance()))
    tester = testers.GlobalEmbeddingSpaceTester(
        accuracy_calculator=accuracy, dataloader_num_workers=0, batch_size=256,
        data_device=torch.device("cpu"), visualizer=None,
    )
    seen = []

    def end_of_epoch(trainer):
        results = tester.test({"val": test_set}, trainer.epoch, trainer.models["trunk"], trainer.models["embedder"])
        seen.append(results["val"]["precision_at_1_level0"])
        return True

    logging.getLogger("PML").setLevel(logging.WARNING)
    trainer, _, _ = _trainer(
        digits, RKDLoss(),
        extra_losses={"metric_loss": losses.TripletMarginLoss(margin=0.2)},
        mining_funcs={"tuple_miner": miners.DistanceWeightedMiner()},
        loss_weights={"metric_loss": 0.5, "distillation_loss": 1.0},
        end_of_epoch_hook=end_of_epoch,
    )
    trainer.train(num_epochs=1)
    assert len(seen) == 1 and 0.0 <= seen[0] <= 1.0
    assert set(trainer.losses) >= {"metric_loss", "distillation_loss", "total_loss"}


def test_schema_requires_teacher_and_distillation_loss(digits):
    train_set, _ = digits
    student = EmbeddingModel("resnet10t", embedding_dim=4)
    with pytest.raises(AssertionError, match="teacher"):
        DistillationTrainer(
            models={"trunk": student}, optimizers={}, batch_size=20,
            loss_funcs={"distillation_loss": RKDLoss()}, dataset=train_set,
        )
    with pytest.raises(AssertionError, match="distillation_loss"):
        DistillationTrainer(
            models={"trunk": student, "teacher": student}, optimizers={}, batch_size=20,
            loss_funcs={"metric_loss": losses.TripletMarginLoss()}, dataset=train_set,
        )
