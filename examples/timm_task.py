"""A timm-style training loop with RelationalDistillationTask (CPU, well under 30 s).

A resnet10t teacher is first trained with timm's ClassificationTask on scikit-learn's bundled
digits (0-4, a held-out fifth for validation), then a small test_resnet student learns with
cross-entropy + RKD on the pooled features + logit KD:

    python examples/timm_task.py

The loop is timm's: ``task(input, target)`` returns the loss terms, the optimiser and
scheduler come from ``timm.optim`` / ``timm.scheduler``, validation runs on
``task.get_eval_model()`` with ``task.create_evaluator()``.
"""

from __future__ import annotations

import time

import timm
import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from timm.task import ClassificationTask
from torch.utils.data import DataLoader, random_split

from rkd_pml.data import load_dataset
from rkd_pml.tasks import RelationalDistillationTask

MEAN, STD = (0.2,), (0.3,)  # grey digits: one value per channel


def make_model(name: str, num_classes: int) -> torch.nn.Module:
    return timm.create_model(
        name, num_classes=num_classes, in_chans=1, zero_init_last=False,
        pretrained_cfg_overlay=dict(mean=MEAN, std=STD),
    )


def normalize(images: torch.Tensor) -> torch.Tensor:
    """``(B, 1, H, W)`` in [0, 1] -> standardised as the models' pretrained_cfg says."""
    return (images - MEAN[0]) / STD[0]


def train(task, loader, steps: int, lr: float) -> None:
    optimizer = create_optimizer_v2(task.get_trainable_module(), "adamw", lr=lr, weight_decay=1e-4)
    scheduler = CosineLRScheduler(optimizer, t_initial=steps, t_in_epochs=False)
    task.train()
    step = 0
    while step < steps:
        for images, target in loader:
            out = task(normalize(images), target)
            optimizer.zero_grad()
            out["loss"].backward()
            optimizer.step()
            step += 1
            scheduler.step_update(step)
            if step % 10 == 0 or step == steps:
                terms = ", ".join(f"{k} {v.item():.3f}" for k, v in out.items() if k != "output")
                print(f"  step {step:3d}/{steps}: {terms}")
            if step == steps:
                break


@torch.no_grad()
def validate(task, loader) -> float:
    model = task.get_eval_model()
    model.eval()
    evaluator = task.create_evaluator()
    for images, target in loader:
        evaluator.update(model(normalize(images)), target)
    task.train()
    return evaluator.summary()["top1"]


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    start = time.perf_counter()
    digits, _ = load_dataset("digits", image_size=32, in_chans=1, train_transform="none")
    n_val = len(digits) // 5
    train_set, val_set = random_split(digits, [len(digits) - n_val, n_val], torch.Generator().manual_seed(0))
    train_loader = DataLoader(train_set, batch_size=32, shuffle=True, drop_last=True)
    val_loader = DataLoader(val_set, batch_size=256)
    num_classes = digits.num_classes

    print("teacher: resnet10t, cross-entropy (timm ClassificationTask)")
    teacher = make_model("resnet10t", num_classes)
    teacher_task = ClassificationTask(teacher, verbose=False)
    train(teacher_task, train_loader, steps=30, lr=2e-3)
    print(f"  teacher val top-1 {validate(teacher_task, val_loader):.1f}%")

    print("student: test_resnet, cross-entropy + RKD-D/A (25/50) + logit KD (RelationalDistillationTask)")
    student = make_model("test_resnet", num_classes)
    task = RelationalDistillationTask(student, teacher, kd_loss_weight=1.0, temperature=4.0, verbose=False)
    train(task, train_loader, steps=30, lr=3e-3)
    assert not task.teacher.training and not any(p.requires_grad for p in teacher.parameters())
    print(f"  student val top-1 {validate(task, val_loader):.1f}%  ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
