"""Omniglot character classification with timm tasks: CE, KD, FitNet, RKD and KD + RKD.

The paper's classification setting at CPU scale. The 136 characters of
``images_background_small1.zip`` are the classes; of the 20 drawings of each (sorted by file
name) the first 12 train, the next 3 choose the epoch (validation), the last 5 test. Teacher
(seed 0, shared by all students) and student are plain timm classifiers (``in_chans=1``,
``zero_init_last=False``) trained with timm's ``ClassificationTask``, ``LogitDistillationTask``,
``FeatureDistillationTask`` or :class:`rkd_pml.tasks.RelationalDistillationTask` (with and
without logit KD). Each run is appended to ``OUT/records.jsonl`` as it finishes; recorded runs
of the same recipe are skipped (resumable). One intra-op thread; ``--device cuda`` trains on a
GPU (the device is not part of the recipe: a study may continue on another one; each record
names its device).

    python -m studies.classification                  # the study (about an hour on one thread)
    python -m studies.classification --report-only    # table + curves from the records
    python -m studies.classification --quick --out /tmp/q   # a few seconds (smoke test)

This module trains and records the runs; :mod:`.report` makes the table and the curves,
:mod:`.__main__` is the command line.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rkd_pml.files.records import append_jsonl, read_jsonl

HERE = Path(__file__).resolve().parent
DEFAULT_ZIP = HERE.parents[1].parent / "shared" / "data" / "omniglot" / "images_background_small1.zip"
DEFAULT_OUT = HERE / "results"
DEFAULT_PNG = HERE / "classification_curves.png"
RECORDS = "records.jsonl"
METHODS = ("ce", "kd", "fitnet", "rkd", "kd+rkd")
LABELS = {"ce": "Cross-entropy", "kd": "+ logit KD", "fitnet": "+ FitNet (features)",
          "rkd": "+ RKD-DA", "kd+rkd": "+ KD + RKD-DA", "teacher": "Teacher"}


@dataclass(frozen=True)
class Recipe:
    """Everything that determines a run's result (its hash keys the records)."""

    image_size: int = 32
    n_train: int = 12
    n_val: int = 3
    n_test: int = 5
    max_classes: int = 0  # 0: all characters
    teacher: str = "resnet10t"
    student: str = "test_resnet"
    teacher_epochs: int = 30
    student_epochs: int = 30
    steps_per_epoch: int = 0  # 0: one pass over the training split
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 5e-4
    warmup_epochs: int = 2
    kd_weight: float = 1.0
    temperature: float = 4.0
    fitnet_weight: float = 1.0
    distance_weight: float = 25.0
    angle_weight: float = 50.0

    def key(self) -> str:
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]


QUICK = Recipe(image_size=32, max_classes=8, teacher="test_resnet", teacher_epochs=2, student_epochs=2,
               steps_per_epoch=2, batch_size=16, warmup_epochs=0)


def load_splits(zip_path: Path, recipe: Recipe) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{"train"|"val"|"test": (images (N, 1, S, S) float, ink = 1, labels (N,))}``."""
    from PIL import Image

    with zipfile.ZipFile(zip_path) as archive:
        by_class: dict[str, list[str]] = {}
        for name in sorted(n for n in archive.namelist() if n.lower().endswith(".png")):
            by_class.setdefault(name.rsplit("/", 1)[0], []).append(name)
        classes = sorted(by_class)[: recipe.max_classes or None]
        cuts = np.cumsum([0, recipe.n_train, recipe.n_val, recipe.n_test])
        out: dict[str, tuple[list, list]] = {s: ([], []) for s in ("train", "val", "test")}
        for label, cls in enumerate(classes):
            files = by_class[cls]
            if len(files) < cuts[-1]:
                raise ValueError(f"{zip_path}:{cls} has {len(files)} drawings, the recipe needs {cuts[-1]}")
            for split, lo, hi in zip(out, cuts[:-1], cuts[1:]):
                for name in files[lo:hi]:
                    with archive.open(name) as f:
                        image = Image.open(f).convert("L").resize((recipe.image_size,) * 2, Image.BILINEAR)
                    out[split][0].append(255 - np.asarray(image, dtype=np.uint8))
                    out[split][1].append(label)
    return {s: (torch.from_numpy(np.stack(x)).unsqueeze(1).float() / 255, torch.tensor(y))
            for s, (x, y) in out.items()}


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random rotation (+-10 deg), scale (0.9-1.1) and shift (+-2 px at 32 px) of ``(B, 1, S, S)``
    (on any device; the draws come from the CPU generator ``gen``, the same on every device)."""
    b = x.shape[0]
    u = (torch.rand(b, 4, generator=gen) * 2 - 1).to(x.device)
    angle, scale, shift = u[:, 0] * math.pi / 18, 1 + 0.1 * u[:, 1], u[:, 2:] * 0.125
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def build_model(name: str, num_classes: int, mean: float, std: float, seed: int) -> torch.nn.Module:
    """A grey timm classifier whose pretrained_cfg carries the data's mean/std."""
    import timm

    torch.manual_seed(seed)
    kwargs = {"zero_init_last": False} if "resnet" in name else {}
    model = timm.create_model(name, num_classes=num_classes, in_chans=1, **kwargs)
    model.pretrained_cfg = {**model.pretrained_cfg, "mean": (mean,), "std": (std,)}
    return model


def build_task(method: str, student, teacher, recipe: Recipe):
    from timm.task import ClassificationTask, FeatureDistillationTask, LogitDistillationTask

    from rkd_pml.tasks import RelationalDistillationTask

    ce, t = torch.nn.CrossEntropyLoss(), recipe.temperature
    if method in ("ce", "teacher"):
        return ClassificationTask(student, ce, verbose=False)
    if method == "kd":
        return LogitDistillationTask(student, teacher, ce, distill_loss_weight=recipe.kd_weight, temperature=t,
                                     verbose=False)
    if method == "fitnet":
        return FeatureDistillationTask(student, teacher, ce, distill_loss_weight=recipe.fitnet_weight, verbose=False)
    kd = {"rkd": 0.0, "kd+rkd": recipe.kd_weight}[method]
    return RelationalDistillationTask(student, teacher, ce, distance_weight=recipe.distance_weight,
                                      angle_weight=recipe.angle_weight, kd_loss_weight=kd, temperature=t, verbose=False)


@torch.no_grad()
def accuracy(model, x: torch.Tensor, y: torch.Tensor, mean: float, std: float) -> float:
    model.eval()
    correct = sum(int((model((xb - mean) / std).argmax(1) == yb).sum())
                  for xb, yb in zip(x.split(256), y.split(256)))
    return correct / len(y)


def train_run(method: str, seed: int, recipe: Recipe, data, teacher, log,
              device: str = "cpu") -> tuple[dict, dict]:
    """Train one model on ``device`` (where ``data`` and ``teacher`` are); returns (record,
    state_dict of the epoch chosen on validation)."""
    from timm.optim import create_optimizer_v2
    from timm.scheduler import CosineLRScheduler

    x_train, y_train = data["train"]
    n_classes, mean, std = int(y_train.max()) + 1, data["mean"], data["std"]
    is_teacher = method == "teacher"
    model = build_model(recipe.teacher if is_teacher else recipe.student, n_classes, mean, std, seed)
    task = build_task(method, model, teacher, recipe).to(device)
    epochs = recipe.teacher_epochs if is_teacher else recipe.student_epochs
    steps = recipe.steps_per_epoch or len(y_train) // recipe.batch_size
    optimizer = create_optimizer_v2(task.get_trainable_module(), "adamw", lr=recipe.lr,
                                    weight_decay=recipe.weight_decay)
    scheduler = CosineLRScheduler(optimizer, t_initial=epochs * steps, warmup_t=recipe.warmup_epochs * steps,
                                  warmup_lr_init=recipe.lr / 20, lr_min=recipe.lr / 200, t_in_epochs=False)
    gen = torch.Generator().manual_seed(1000 + seed)
    curve, best, best_state, start = [], -1.0, None, time.perf_counter()
    for epoch in range(1, epochs + 1):
        task.train()
        order = torch.randperm(len(y_train), generator=gen)
        sums: dict[str, float] = {}
        for step in range(steps):
            idx = order[(step * recipe.batch_size) % len(order):][: recipe.batch_size].to(device)
            xb = (augment(x_train[idx], gen) - mean) / std
            out = task(xb, y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            out["loss"].backward()
            optimizer.step()
            scheduler.step_update((epoch - 1) * steps + step + 1)
            sums.update({k: sums.get(k, 0.0) + float(v.detach()) / steps for k, v in out.items() if k != "output"})
        eval_model = task.get_eval_model()
        val = accuracy(eval_model, *data["val"], mean, std)
        test = accuracy(eval_model, *data["test"], mean, std)
        curve.append({"epoch": epoch, "val": val, "test": test, **sums})
        if val > best:
            best, best_state = val, copy.deepcopy(eval_model.state_dict())
        elapsed = time.perf_counter() - start
        log(f"{method} s{seed} epoch {epoch:3d}/{epochs} loss {sums['loss']:.3f} val {100 * val:5.1f}% "
            f"test {100 * test:5.1f}% ({elapsed:.0f} s, run ETA {elapsed / epoch * (epochs - epoch):.0f} s)")
    chosen = max(curve, key=lambda c: (c["val"], -c["epoch"]))
    record = {"key": run_key(method, seed), "recipe": recipe.key(), "method": method, "seed": seed,
              "model": recipe.teacher if is_teacher else recipe.student, "epochs": epochs,
              "steps_per_epoch": steps, "selected_epoch": chosen["epoch"], "val": chosen["val"],
              "test": chosen["test"], "last_test": curve[-1]["test"],
              "best_test": max(c["test"] for c in curve), "curve": curve,
              "wall_s": round(time.perf_counter() - start, 1), "threads": torch.get_num_threads(), "device": device,
              "params": sum(p.numel() for p in model.parameters())}
    return record, best_state


def run_key(method: str, seed: int) -> str:
    return f"{method}-s{seed}"


def read_records(out: Path, recipe_key: str | None = None) -> dict[str, dict]:
    """The last record of each run key (of one recipe, where given)."""
    path = out / RECORDS
    records = read_jsonl(path) if path.is_file() else []
    return {r["key"]: r for r in records if recipe_key is None or r["recipe"] == recipe_key}


def append_record(out: Path, record: dict) -> None:
    """Append ``record`` to the study's records, flushed to disk."""
    append_jsonl(out / RECORDS, record, what="the study's records")


def run_study(todo, recipe: Recipe, zip_path: Path, out: Path, teacher_file: Path, log, device: str = "cpu") -> None:
    """Train the ``(method, seed)`` runs of ``todo`` in order on ``device``, recording each as it finishes."""
    data = load_splits(zip_path, recipe)
    data["mean"], data["std"] = float(data["train"][0].mean()), float(data["train"][0].std())
    for split in ("train", "val", "test"):  # a few MB: held on the device
        data[split] = tuple(t.to(device) for t in data[split])
    n_classes = int(data["train"][1].max()) + 1
    log(f"data: {', '.join(f'{s} {len(data[s][1])}' for s in ('train', 'val', 'test'))} images, {n_classes} classes")
    teacher, started, times = None, time.perf_counter(), {}
    for i, (method, seed) in enumerate(todo, 1):
        log(f"[{i:2d}/{len(todo)}] {method} seed {seed}")
        if method not in ("teacher", "ce") and teacher is None:
            teacher = build_model(recipe.teacher, n_classes, data["mean"], data["std"], 0)
            teacher.load_state_dict(torch.load(teacher_file, map_location="cpu"))
            teacher.to(device)
        record, state = train_run(method, seed, recipe, data, teacher, log, device)
        if method == "teacher":
            teacher_file.parent.mkdir(parents=True, exist_ok=True)
            torch.save(state, teacher_file)
            teacher = None  # reloaded with the weights of the epoch chosen on validation
        append_record(out, record)
        times.setdefault(method, []).append(record["wall_s"])
        students = [t for m, ts in times.items() if m != "teacher" for t in ts] or [record["wall_s"]]
        eta = sum(np.mean(times.get(m, students)) for m, _ in todo[i:])
        log(f"[{i:2d}/{len(todo)}] {record['key']}: test {100 * record['test']:.1f}% at epoch "
            f"{record['selected_epoch']} ({record['wall_s']:.0f} s; study {time.perf_counter() - started:.0f} s, "
            f"ETA {eta / 60:.0f} min)")
