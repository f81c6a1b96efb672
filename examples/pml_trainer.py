"""Teacher and RKD student with pytorch-metric-learning's own trainers, hooks and tester.

1. A teacher (timm backbone + linear head, L2-normalised) is trained with PML's
   ``trainers.MetricLossOnly``: triplet loss on distance-weighted triplets, class-balanced
   batches from ``MPerClassSampler``.
2. A student with a smaller embedding (32-d, not L2-normalised) is distilled from the frozen teacher with
   ``rkd_pml.training.DistillationTrainer`` and ``RKDLoss`` as its ``"distillation_loss"``.
3. Both are scored on digits never seen in training (digits 5-9; 0-4 train) with PML's
   ``testers.GlobalEmbeddingSpaceTester`` and with ``rkd_pml.evaluation.evaluate``.

Hooks: with record-keeper and tensorboard installed, PML's preset hooks
(``logging_presets.get_hook_container``) log to ``--log-dir`` and save the models there;
without them, plain ``end_of_iteration_hook`` / ``end_of_epoch_hook`` functions (below) print
the loss and run the tester after every epoch.

    python examples/pml_trainer.py            # ~30 s on one idle CPU thread
    python examples/pml_trainer.py --quick    # ~12 s: tiny models, a few iterations
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time

import numpy as np
import torch
from pytorch_metric_learning import losses, miners, testers, trainers
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.samplers import MPerClassSampler
from pytorch_metric_learning.utils import logging_presets
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from pytorch_metric_learning.utils.inference import CustomKNN

from rkd_pml import EmbeddingModel, RKDLoss, evaluate, load_dataset
from rkd_pml.training import DistillationTrainer

#: timm models, epochs and iterations per epoch of each trainer
SETTINGS = {
    "full": dict(teacher="resnet10t", student="test_resnet", epochs=2, iterations=30),
    "quick": dict(teacher="test_resnet", student="test_resnet", epochs=1, iterations=8),
}
M_PER_CLASS, BATCH_SIZE = 8, 40  # 5 training classes x 8 images


def make_tester(normalize_embeddings: bool = False) -> testers.GlobalEmbeddingSpaceTester:
    """PML's tester, scoring Euclidean nearest neighbours on the embeddings as given.

    PML's tester L2-normalises the embeddings by default (``normalize_embeddings=True``), and
    so does ``LpDistance()`` by default. The RKD student is not normalised, so the tester
    matches ``rkd_pml.evaluation.evaluate`` (plain Euclidean distances on the model's output)
    only with ``normalize_embeddings=False`` here *and* an ``LpDistance(normalize_embeddings=False)``
    kNN. (The AccuracyCalculator's default kNN is faiss's: without faiss installed, a tester
    built with its default calculator fails at once with ``NameError: name 'faiss' is not
    defined``, so a ``CustomKNN`` is passed in any case.)
    """
    return testers.GlobalEmbeddingSpaceTester(
        normalize_embeddings=normalize_embeddings,
        batch_size=64,  # evaluate()'s batch size: the same batches, the same float sums
        dataloader_num_workers=0,
        data_device=torch.device("cpu"),
        accuracy_calculator=AccuracyCalculator(
            include=("precision_at_1",),
            k=1,
            knn_func=CustomKNN(LpDistance(normalize_embeddings=False)),
        ),
    )


def tester_precision_at_1(tester, dataset, model: torch.nn.Module, epoch: int = -1) -> float:
    """Test split queried against itself (each query excluded from its own neighbours)."""
    accuracies = tester.test({"test": dataset}, epoch, model)  # embedder: Identity
    return float(accuracies["test"]["precision_at_1_level0"])


def make_hooks(name: str, tester, test_set, log_dir: str, log_every: int):
    """``(end_of_iteration_hook, end_of_epoch_hook)`` for a trainer.

    PML's preset hooks need record-keeper and tensorboard. Without them, PML's
    ``get_record_keeper`` warns and returns ``(None, None, None)``, and
    ``get_hook_container(None)`` returns an empty container whose ``end_of_epoch_hook(...)``
    gives ``None`` (so no testing at all): plain hooks are used instead.
    """
    if all(importlib.util.find_spec(m) for m in ("record_keeper", "tensorboard")):
        record_keeper, _, _ = logging_presets.get_record_keeper(
            f"{log_dir}/{name}/logs", f"{log_dir}/{name}/tensorboard"
        )
        if record_keeper is not None:
            hooks = logging_presets.get_hook_container(
                record_keeper,
                primary_metric="precision_at_1",  # the default (MAP@R) is not computed here
                validation_split_name="test",
                log_freq=log_every,
            )
            tester.end_of_testing_hook = hooks.end_of_testing_hook  # records the accuracies
            epoch_hook = hooks.end_of_epoch_hook(tester, {"test": test_set}, f"{log_dir}/{name}/models")
            print(f"[{name}] PML preset hooks: records and models in {log_dir}/{name}")
            return hooks.end_of_iteration_hook, epoch_hook

    def end_of_iteration_hook(trainer):
        if trainer.iteration % log_every == 0:
            losses_now = {k: round(float(torch.as_tensor(v).detach()), 5) for k, v in trainer.losses.items()}
            print(f"[{name}] epoch {trainer.epoch} iteration {trainer.iteration}: {losses_now}")

    def end_of_epoch_hook(trainer):
        trunk, embedder = trainer.models["trunk"], trainer.models["embedder"]
        accuracies = tester.test({"test": test_set}, trainer.epoch, trunk, embedder)
        p1 = accuracies["test"]["precision_at_1_level0"]
        print(f"[{name}] epoch {trainer.epoch}: test precision_at_1 = {p1:.4f}")
        return True  # False stops training (e.g. for early stopping)

    return end_of_iteration_hook, end_of_epoch_hook


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny models, a few iterations")
    parser.add_argument("--log-dir", default=None, help="for PML's preset hooks (default: a temporary folder)")
    args = parser.parse_args()
    cfg = SETTINGS["quick" if args.quick else "full"]
    start = time.perf_counter()
    torch.manual_seed(0)
    np.random.seed(0)  # PML's sampler and miners draw from NumPy's global generator

    device = torch.device("cpu")
    train_set, test_set = load_dataset("digits", image_size=32, train_transform="none", in_chans=1)
    iterations = cfg["iterations"]

    def sampler():
        return MPerClassSampler(
            train_set.labels, M_PER_CLASS, batch_size=BATCH_SIZE, length_before_new_iter=BATCH_SIZE * iterations
        )

    with tempfile.TemporaryDirectory() as tmp:
        log_dir = args.log_dir or tmp

        # 1. Teacher: PML's MetricLossOnly. The EmbeddingModel is the whole trunk (it
        #    normalises its own input and L2-normalises its output) and the embedder is an
        #    Identity. PML then warns 'optimizers is missing "embedder_optimizer"' (and,
        #    without the embedder, 'models is missing "embedder"'): harmless, an Identity
        #    has nothing to optimise.
        teacher = EmbeddingModel(cfg["teacher"], embedding_dim=64, l2_normalize=True, in_chans=1).to(device)
        tester = make_tester()
        iteration_hook, epoch_hook = make_hooks("teacher", tester, test_set, log_dir, log_every=10)
        trainers.MetricLossOnly(
            models={"trunk": teacher, "embedder": torch.nn.Identity()},
            optimizers={"trunk_optimizer": torch.optim.Adam(teacher.parameters(), lr=1e-3)},
            batch_size=BATCH_SIZE,
            loss_funcs={"metric_loss": losses.TripletMarginLoss(margin=0.2)},
            # DistanceWeightedMiner insists on L2-normalised distances (PML's default LpDistance)
            mining_funcs={"tuple_miner": miners.DistanceWeightedMiner(cutoff=0.5, nonzero_loss_cutoff=1.4)},
            dataset=train_set,
            sampler=sampler(),
            iterations_per_epoch=iterations,
            data_device=device,
            dataloader_num_workers=0,  # PML's default is 2 worker processes
            end_of_iteration_hook=iteration_hook,
            end_of_epoch_hook=epoch_hook,
        ).train(num_epochs=cfg["epochs"])

        # 2. Student: distilled from the frozen teacher with RKD (distance 1, angle 2).
        student = EmbeddingModel(cfg["student"], embedding_dim=32, l2_normalize=False, in_chans=1).to(device)
        tester = make_tester()
        iteration_hook, epoch_hook = make_hooks("student", tester, test_set, log_dir, log_every=10)
        DistillationTrainer(
            models={"trunk": student, "teacher": teacher},
            optimizers={"trunk_optimizer": torch.optim.Adam(student.parameters(), lr=1e-3)},
            batch_size=BATCH_SIZE,
            loss_funcs={"distillation_loss": RKDLoss(distance_weight=1.0, angle_weight=2.0)},
            dataset=train_set,
            sampler=sampler(),
            iterations_per_epoch=iterations,
            data_device=device,
            dataloader_num_workers=0,
            end_of_iteration_hook=iteration_hook,
            end_of_epoch_hook=epoch_hook,
        ).train(num_epochs=cfg["epochs"])
        assert not any(p.requires_grad for p in teacher.parameters()), "the teacher stays frozen"

    # 3. Both scorers on the unseen digits. The tester matches evaluate() only because it
    #    runs with normalize_embeddings=False (PML's tester L2-normalises by default; the
    #    RKD student is not normalised): see make_tester.
    tester = make_tester()
    for name, model in (("teacher", teacher), ("student", student)):
        p1 = tester_precision_at_1(tester, test_set, model)
        recall = evaluate(model, test_set, ks=(1, 2, 4, 8), progress=False)
        print(
            f"{name}: tester precision_at_1 = {p1:.8f}, evaluate recall@1 = {recall['recall@1']:.8f}"
            f" (recall@2 {recall['recall@2']:.4f}, @4 {recall['recall@4']:.4f}, @8 {recall['recall@8']:.4f})"
        )
    # PML's default, for contrast: the student scored on L2-normalised embeddings, i.e. a
    # different (cosine) ranking from the one the student is used with.
    p1_normalised = tester_precision_at_1(make_tester(normalize_embeddings=True), test_set, student)
    print(f"student: tester precision_at_1 with PML's default normalize_embeddings=True = {p1_normalised:.8f}")
    print(f"done in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
