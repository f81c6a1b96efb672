#!/usr/bin/env python
"""Few-shot study of the RKD paper: prototypical networks on Omniglot, self-distilled with RKD.

Data: ``images_background_small1.zip`` at 28 px, inverted. The first 68 characters train, the
other 68 (unseen) test; 20 training characters validate; the other 48 are used in 4 rotations,
each a class (the ProtoNet protocol). Runs per seed ``s``, all with the same episode size,
iterations and Adam schedule: ``teacher`` conv4-64 ProtoNet (seed s); ``scratch`` the same
again (seed 100+s); ``self`` conv4-64 (seed 200+s), prototypical loss + RKDLoss(0.5, 1.0) to
the frozen teacher of seed s; ``small-scratch`` conv4-32 ProtoNet and ``small`` conv4-32
distilled like ``self`` (both seed 300+s). The checkpoint with the best validation accuracy
(mean of 5/20-way x 1/5-shot) is tested on 1,000 episodes per setting, the same for all.

``--out`` gets ``study.json`` (recipe, sessions), ``records.jsonl`` (a line per finished run;
recorded runs are skipped on a restart) and ``runs/<key>.pt`` (selected weights). Tables go
into ``studies/fewshot/FEWSHOT.md`` between its markers, curves into
``studies/fewshot/fewshot_curves.png`` (:mod:`.report`)::

    nohup python -m studies.fewshot > fewshot.log 2>&1 &
    python -m studies.fewshot --quick --out /tmp/fs   # a smoke test of a few seconds

``--device cuda`` trains on a GPU; the device is not part of the recipe (a study may continue on
another one) and each record names the device it ran on.
"""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rkd_pml.data import load_dataset
from rkd_pml.data.episodes import EpisodicBatchSampler
from rkd_pml.evaluation.few_shot import few_shot_accuracy_from_embeddings
from rkd_pml.files.records import append_jsonl, read_jsonl
from rkd_pml.losses import RKDLoss
from rkd_pml.losses.prototypical import PrototypicalLoss

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DEFAULT_OUT = HERE / "results"
DEFAULT_MD = HERE / "FEWSHOT.md"
RECORDS = "records.jsonl"

OMNIGLOT_ZIP = REPO.parent / "shared" / "data" / "omniglot" / "images_background_small1.zip"
#: key -> (label, channels field of the recipe, distilled, seed offset)
MODELS = {
    "teacher": ("Teacher: conv4, ProtoNet", "channels", False, 0),
    "scratch": ("Same architecture, another seed", "channels", False, 100),
    "self": ("Self-distilled: same architecture, +RKD-DA", "channels", True, 200),
    "small-scratch": ("Small conv4, ProtoNet only", "small_channels", False, 300),
    "small": ("Small conv4 distilled, +RKD-DA", "small_channels", True, 300),
}


@dataclass
class Recipe:
    """Everything that decides what a run computes; a study directory holds one recipe."""

    image_size: int = 28
    val_classes: int = 20
    rotations: bool = True
    channels: int = 64
    small_channels: int = 32
    ways: int = 20
    shots: int = 5
    queries: int = 5
    iterations: int = 300
    eval_every: int = 20
    lr: float = 1e-3
    rkd_distance: float = 0.5
    rkd_angle: float = 1.0
    eval_ways: tuple = (5, 20)
    eval_shots: tuple = (1, 5)
    eval_queries: int = 15
    val_episodes: int = 200
    test_episodes: int = 1000
    classes_limit: int = 0  # 0: all; >0: the first classes of each split (quick mode)


QUICK = dict(iterations=4, eval_every=2, ways=3, shots=1, queries=2, channels=8, small_channels=4,
             val_classes=3, eval_ways=(2, 3), val_episodes=10, test_episodes=20, classes_limit=8)


class Conv4(nn.Module):
    """ProtoNet embedding: 4 x [conv3x3(c), BN, ReLU, maxpool 2]; (B, 1, 28, 28) -> (B, c)."""

    def __init__(self, channels: int = 64):
        super().__init__()
        layers = []
        for i in range(4):
            layers += [nn.Conv2d(1 if i == 0 else channels, channels, 3, padding=1),
                       nn.BatchNorm2d(channels), nn.ReLU(), nn.MaxPool2d(2)]
        self.net = nn.Sequential(*layers, nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def load_data(recipe: Recipe, root: Path) -> dict[str, tuple[torch.Tensor, np.ndarray]]:
    """``{"train"|"val"|"test": (images (N, 1, S, S), labels (N,))}`` held in memory."""
    train, test = load_dataset("omniglot", root=root, image_size=recipe.image_size, train_transform="none", in_chans=1)
    if (train.num_classes, test.num_classes) != (68, 68) and not recipe.classes_limit:
        raise SystemExit(f"expected 68 + 68 characters, found {train.num_classes} + {test.num_classes}")
    if recipe.classes_limit:
        train, test = (d.subset(range(recipe.classes_limit)) for d in (train, test))
    val = set(np.random.RandomState(0).permutation(train.num_classes)[: recipe.val_classes].tolist())
    splits = {"train": train.subset([c for c in range(train.num_classes) if c not in val]),
              "val": train.subset(sorted(val)), "test": test}
    data = {}  # images inverted: bright strokes
    for name, ds in splits.items():
        x, y = 1.0 - torch.stack([ds[i][0] for i in range(len(ds))]), ds.labels.copy()
        if name == "train" and recipe.rotations:
            x = torch.cat([torch.rot90(x, k, dims=(2, 3)) for k in range(4)])
            y = np.concatenate([y + k * ds.num_classes for k in range(4)])
        data[name] = (x, y)
    return data


def evaluate(model, split, recipe: Recipe, episodes: int, seed: int, keep: bool = False) -> dict:
    """``{"<W>w<S>s": {"accuracy", "ci95"[, "correct"]}}`` for every evaluation setting."""
    model.eval()
    with torch.inference_mode():
        emb, labels, out = torch.cat([model(chunk) for chunk in split[0].split(512)]), split[1], {}
    model.train()
    for ways in recipe.eval_ways:
        for shots in recipe.eval_shots:
            r = few_shot_accuracy_from_embeddings(emb, labels, ways, shots, recipe.eval_queries, episodes,
                                                  seed, return_episodes=keep)
            cell = {"accuracy": round(r["accuracy"], 6), "ci95": round(r["ci95"], 6)}
            if keep:  # per-episode correct counts, for paired comparisons
                cell["correct"] = (r["episode_accuracies"] * ways * recipe.eval_queries).round().int().tolist()
            out[f"{ways}w{shots}s"] = cell
    return out


def train_run(key: str, recipe: Recipe, data: dict, out: Path, log, device: str = "cpu") -> dict:
    """Train run ``key`` (``<model>-s<seed>``) on ``device`` (where ``data``'s images are); save
    its selected weights; return its record."""
    kind, run_seed = key.rsplit("-s", 1)
    label, width, distilled, offset = MODELS[kind]
    started, seed, teacher_key = time.time(), int(run_seed) + offset, f"teacher-s{run_seed}"
    torch.manual_seed(seed)
    model = Conv4(getattr(recipe, width)).to(device, memory_format=torch.channels_last)  # ~1.5x faster on CPU
    teacher, proto = None, PrototypicalLoss(shots=recipe.shots)
    if distilled:
        path = out / "runs" / f"{teacher_key}.pt"
        if not path.is_file():
            raise SystemExit(f"{path} is missing: remove the teacher's record to train it again")
        teacher = Conv4(recipe.channels)
        teacher.load_state_dict(torch.load(path, map_location="cpu"))
        teacher = teacher.to(device, memory_format=torch.channels_last).eval().requires_grad_(False)
    rkd = RKDLoss(distance_weight=recipe.rkd_distance, angle_weight=recipe.rkd_angle, backend="eager")
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [recipe.iterations // 2, recipe.iterations * 3 // 4], 0.5)
    x, y = data["train"]
    sampler = EpisodicBatchSampler(y, recipe.ways, recipe.shots, recipe.queries, recipe.eval_every, seed)
    curve, best, best_state, sums = [], -1.0, None, [0.0, 0.0]
    for it in range(0, recipe.iterations, recipe.eval_every):
        for batch in sampler:
            images, labels = x[batch], torch.from_numpy(y[batch]).to(device)
            emb = model(images)
            loss = proto(emb, labels)
            sums[0] += loss.item()
            if teacher is not None:
                with torch.no_grad():
                    ref = teacher(images)
                rkd_loss = rkd(emb, labels, None, ref_emb=ref)
                sums[1] += rkd_loss.item()
                loss = loss + rkd_loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        done = it + recipe.eval_every
        val = evaluate(model, data["val"], recipe, recipe.val_episodes, seed=1)
        score = float(np.mean([c["accuracy"] for c in val.values()]))
        curve.append({"iteration": done, "val": round(score, 6), "proto_loss": round(sums[0] / recipe.eval_every, 5),
                      "rkd_loss": round(sums[1] / recipe.eval_every, 5) if distilled else None,
                      "val_settings": {k: c["accuracy"] for k, c in val.items()}})
        sums = [0.0, 0.0]
        if score > best:
            best, best_state, best_it = score, copy.deepcopy(model.state_dict()), done
        log(f"{key} it {done}/{recipe.iterations} proto {curve[-1]['proto_loss']:.4f} val {score:.4f}")
    last = evaluate(model, data["test"], recipe, recipe.test_episodes, seed=0)
    model.load_state_dict(best_state)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    torch.save(best_state, out / "runs" / f"{key}.pt")
    return {"key": key, "model": kind, "label": label, "seed": int(run_seed), "init_seed": seed,
            "channels": getattr(recipe, width), "teacher": teacher_key if distilled else None,
            "iterations": recipe.iterations, "selected_iteration": best_it, "selected_val": round(best, 6),
            "test": evaluate(model, data["test"], recipe, recipe.test_episodes, seed=0, keep=True),
            "test_last": {k: c["accuracy"] for k, c in last.items()}, "curve": curve,
            "wall_seconds": round(time.time() - started, 1), "device": device}


def read_records(out: Path) -> list[dict]:
    """The study's records, in the order they were written."""
    path = out / RECORDS
    return read_jsonl(path) if path.is_file() else []


def append_record(out: Path, record: dict) -> None:
    """Append ``record`` to the study's records, flushed to disk."""
    append_jsonl(out / RECORDS, record, what="the study's records")


def open_study(out: Path, recipe: Recipe) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "study.json"
    wanted = json.loads(json.dumps(asdict(recipe)))
    study = json.loads(path.read_text()) if path.is_file() else {"recipe": wanted, "sessions": []}
    if wanted != study["recipe"]:
        raise SystemExit(f"{out} holds a study with another recipe: {study['recipe']}; use another --out")
    return study


def save_study(out: Path, study: dict) -> None:
    (out / "study.json.tmp").write_text(json.dumps(study, indent=1) + "\n")
    os.replace(out / "study.json.tmp", out / "study.json")


def fmt(seconds: float) -> str:
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m{int(seconds % 60):02d}s"
