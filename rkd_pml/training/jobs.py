"""The workflow as plain Python functions: train a teacher, distil a student, evaluate.

Each job takes a config dataclass (or keyword overrides of its defaults), writes a run
directory and returns the results dict that it also saves as results.json::

    from rkd_pml.training import train_teacher, distill, evaluate_saved

    t = train_teacher(dataset="digits", model="resnet18", embedding_dim=64, epochs=5,
                      iterations_per_epoch=20, batch_size=40, m_per_class=8, lr=1e-3,
                      lr_milestones=(4,), out="runs/teacher")
    s = distill(teacher="runs/teacher", student="resnet10t", embedding_dim=16, epochs=5,
                iterations_per_epoch=20, batch_size=40, m_per_class=8, lr=1e-3,
                lr_milestones=(4,), out="runs/rkd")
    print(s["best"]["test"]["recall@1"])
    print(evaluate_saved("runs/rkd"))  # data set, image size and transforms: the run's

In a reproduction study, loop over configs: ``distill(cfg.replace(embedding_dim=d,
loss=name, l2_normalize=l2, out=f"runs/{name}-{d}"))``.

Started by ``torchrun`` (``WORLD_SIZE`` > 1), each job runs on all the processes: it starts
the process group for its duration (or uses one already initialised), and ``batch_size`` is
the global batch (see :mod:`rkd_pml.training.distributed_setup`).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..models import EmbeddingModel, freeze_teacher
from ..models.embedding import CONFIG_NAME as MODEL_CONFIG_NAME
from .checkpoint import seed_everything
from .config import (
    BaselineConfig,
    DistillConfig,
    TeacherConfig,
    TrainConfig,
    TripletConfig,
    config_differences,
    config_from_dict,
)
from .distributed_setup import (
    DistributedContext,
    check_sync_bn,
    check_world_size,
    distributed_session,
    process_device,
)
from .loop import TrainingSetup, check_class_balance, choose_m_per_class, fit, log
from .objective import build_objective, trainable_parameters
from .plot import plot_recall
from .run_dir import RunDir, is_main_process, to_json

# --------------------------------------------------------------------------- helpers


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without a GPU is an error."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA GPU is available; use --device cpu or auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' requested but MPS is not available; use --device cpu or auto")
    return device


def find_saved_model(path: str | Path) -> Path:
    """The saved-model directory of ``path``: ``path`` itself (written by
    ``EmbeddingModel.save``) or its ``model/`` folder (an rkd-pml run directory)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: pass a directory written by rkd-pml train-teacher "
            "(or EmbeddingModel.save)"
        )
    for candidate in (path / "model", path):
        if (candidate / MODEL_CONFIG_NAME).is_file() and (candidate / "model.safetensors").is_file():
            return candidate
    if (path / RunDir.CONFIG).is_file():
        raise FileNotFoundError(
            f"{path} is a run directory without a saved model (model/): the run has not "
            "finished; continue it with --resume"
        )
    raise FileNotFoundError(
        f"{path} is not a saved model: expected model.safetensors and {MODEL_CONFIG_NAME} "
        "(written by EmbeddingModel.save) in it or in its model/ folder"
    )


def looks_like_saved_model(spec: str) -> bool:
    """A path rather than a timm name: anything with a path separator or a leading dot, or a
    directory that is not also a timm name (write ``./resnet18`` for a folder named so)."""
    import timm

    if spec.startswith(("hf-hub:", "hf_hub:")):
        return False
    if "/" in spec or "\\" in spec or spec.startswith("."):
        return True
    return Path(spec).is_dir() and not timm.is_model(spec)


def build_model(
    spec: str, embedding_dim: int, pretrained: bool = False, weights: str | None = None,
    l2_normalize: bool = False,
) -> EmbeddingModel:
    """A timm name -> a new ``EmbeddingModel``; a saved directory -> that model, loaded
    (then ``embedding_dim``, ``pretrained`` and ``l2_normalize`` come from the directory)."""
    if looks_like_saved_model(spec):
        return EmbeddingModel.load(find_saved_model(spec))
    return EmbeddingModel(
        spec,
        embedding_dim=int(embedding_dim),
        pretrained=weights if weights else bool(pretrained),
        l2_normalize=l2_normalize,
        in_chans=3,
    )


def load_teacher(path: str | Path, device: torch.device | str = "cpu") -> nn.Module:
    """A saved teacher, frozen: eval mode for good, no gradients, inference-mode forward."""
    return freeze_teacher(EmbeddingModel.load(find_saved_model(path), map_location=device))


def split_validation(train_set, test_transform, fraction: float, seed: int):
    """Carve a class-disjoint validation split out of the training classes.

    ``ceil(fraction * C)`` classes chosen with ``seed`` become the validation split (seen
    through the test transform); at least one class stays on each side.
    """
    classes = np.unique(np.asarray(train_set.labels))
    if len(classes) < 2:
        raise ValueError("val_fraction needs at least 2 training classes")
    n_val = min(max(1, math.ceil(fraction * len(classes))), len(classes) - 1)
    rng = np.random.RandomState(seed)
    val_classes = sorted(int(c) for c in rng.choice(classes, size=n_val, replace=False))
    train_classes = sorted(int(c) for c in classes if int(c) not in val_classes)
    return train_set.subset(train_classes), train_set.subset(val_classes, transform=test_transform)


def load_data(cfg: TrainConfig, model: EmbeddingModel):
    """``(train_set, eval_sets)`` for a job: eval_sets = {"test": ...} (+ "val")."""
    from ..data import load_dataset

    if cfg.recall_ks is None:
        raise ValueError("internal: resolve recall_ks before loading data")
    data_config = {k: v for k, v in model.data_config.items() if k != "input_size"}
    train_set, test_set = load_dataset(
        cfg.dataset,
        root=cfg.root,
        image_size=cfg.image_size,
        train_transform=cfg.train_transform,
        in_chans=3,
        data_config=data_config,
    )
    eval_sets = {}
    if cfg.val_fraction > 0:
        train_set, eval_sets["val"] = split_validation(train_set, test_set.transform, cfg.val_fraction, cfg.seed)
    eval_sets["test"] = test_set
    return train_set, eval_sets


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(optimizer, cfg: TrainConfig):
    """Learning rate x ``lr_gamma`` at each epoch of ``lr_milestones`` (stepped per epoch)."""
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.lr_milestones), gamma=cfg.lr_gamma)


def _with_overrides(cfg, cls, overrides: Mapping[str, Any]):
    if cfg is None:
        cfg = cls()
    elif not isinstance(cfg, cls):
        raise TypeError(f"expected a {cls.__name__}, got {type(cfg).__name__}")
    return cfg.replace(**overrides) if overrides else cfg


def resolve_m_per_class(cfg: TrainConfig, labels) -> TrainConfig:
    """Fill in ``m_per_class`` when it is None, then check that batches can be built."""
    if cfg.m_per_class is None:
        cfg = cfg.replace(m_per_class=choose_m_per_class(labels, cfg.batch_size))
    check_class_balance(labels, cfg.batch_size, cfg.m_per_class)
    return cfg


def resolve_recall_ks(cfg: TrainConfig) -> TrainConfig:
    from ..data import recall_ks

    return cfg if cfg.recall_ks is not None else cfg.replace(recall_ks=tuple(recall_ks(cfg.dataset)))


def open_run(cfg: TrainConfig, default_out: str) -> tuple[RunDir, TrainConfig]:
    """Create (or reopen, for ``cfg.resume``) the run directory and write config.json.

    On resume the saved configuration must match ``cfg`` except for runtime options.
    """
    out = cfg.out or default_out
    cfg = cfg.replace(out=str(out))
    run = RunDir.create(out, overwrite=cfg.overwrite, resume=cfg.resume)
    if cfg.resume:
        saved = config_from_dict(run.read_config())
        diffs = config_differences(saved, cfg)
        if diffs:
            raise ValueError(
                f"cannot resume {run.path}: it was started with other settings ({'; '.join(diffs)}); "
                "repeat the original options, or start a new run with another --out"
            )
    run.write_config(cfg.to_dict())  # on resume: records a new epochs / device / ...
    return run, cfg


def _job_device(cfg: TrainConfig, ctx: DistributedContext) -> torch.device:
    """This process's device, after checking what several processes need."""
    device = process_device(resolve_device(cfg.device), ctx)
    check_world_size(cfg.batch_size, ctx.world_size)
    check_sync_bn(cfg.sync_bn, device, ctx)
    return device


def _describe_processes(ctx: DistributedContext) -> str:
    return f" x {ctx.world_size} processes ({ctx.backend})" if ctx.enabled else ""


def _describe_data(train_set, eval_sets) -> str:
    parts = [f"train {len(train_set)} images / {len(np.unique(train_set.labels))} classes"]
    for split, ds in eval_sets.items():
        parts.append(f"{split} {len(ds)} / {len(np.unique(np.asarray(ds.labels)))}")
    return ", ".join(parts)


def _save_model(model: nn.Module, path: Path) -> None:
    model.save(path, overwrite=True)


# --------------------------------------------------------------------------- jobs


def _train_triplet(cfg: TripletConfig, name: str, default_out: str) -> dict[str, Any]:
    cfg.validate()
    with distributed_session(cfg.device) as ctx:
        return _train_triplet_job(cfg, name, default_out, ctx)


def _train_triplet_job(cfg: TripletConfig, name: str, default_out: str, ctx: DistributedContext) -> dict[str, Any]:
    cfg = resolve_recall_ks(cfg)
    device = _job_device(cfg, ctx)
    # everything that can fail on bad input happens before the run directory is created
    seed_everything(cfg.seed)
    model = build_model(cfg.model, cfg.embedding_dim, cfg.pretrained, cfg.weights, cfg.l2_normalize).to(device)
    train_set, eval_sets = load_data(cfg, model)
    cfg = resolve_m_per_class(cfg, train_set.labels)
    run, cfg = open_run(cfg, default_out)
    objective = build_objective(cfg, student_dim=model.embedding_dim).to(device)
    optimizer = make_optimizer(trainable_parameters(model, objective), cfg)
    log(f"[{name}] {model.model_name} -> {model.embedding_dim}-d (L2 {model.l2_normalize}) on "
        f"{cfg.dataset}: {_describe_data(train_set, eval_sets)}; device {device}{_describe_processes(ctx)}; "
        f"out {run.path}")
    setup = TrainingSetup(
        cfg=cfg, model=model, objective=objective, optimizer=optimizer,
        scheduler=make_scheduler(optimizer, cfg), train_set=train_set, eval_sets=eval_sets,
        run=run, device=device, name=name, save_model=_save_model,
    )
    return fit(setup)


def train_teacher(cfg: TeacherConfig | None = None, **overrides) -> dict[str, Any]:
    """Train a teacher with triplet loss on distance-weighted triplets (the paper's recipe
    by default; see :class:`TeacherConfig`). Returns the results dict; the best model is
    saved in ``<out>/model``, ready for :func:`distill`."""
    return _train_triplet(_with_overrides(cfg, TeacherConfig, overrides), "teacher", "runs/teacher")


def train_baseline(cfg: BaselineConfig | None = None, **overrides) -> dict[str, Any]:
    """Train the student architecture like the teacher (triplet loss), for comparison."""
    return _train_triplet(_with_overrides(cfg, BaselineConfig, overrides), "baseline", "runs/baseline")


def distill(cfg: DistillConfig | None = None, **overrides) -> dict[str, Any]:
    """Distil a saved, frozen teacher into a student (RKD-DA by default; see
    :class:`DistillConfig`). The same unnormalised batch feeds both models; the teacher runs
    once per step in inference mode. ``loss="triplet"`` trains the student without a
    teacher. Returns the results dict (also written to ``<out>/results.json``)."""
    cfg = _with_overrides(cfg, DistillConfig, overrides)
    cfg.validate()
    with distributed_session(cfg.device) as ctx:
        return _distill_job(cfg, ctx)


def _distill_job(cfg: DistillConfig, ctx: DistributedContext) -> dict[str, Any]:
    cfg = resolve_recall_ks(cfg)
    needs_teacher = not (isinstance(cfg.loss, str) and cfg.loss.lower() in ("triplet", "none"))
    if needs_teacher and not cfg.teacher:
        raise ValueError("distill needs a trained teacher: pass teacher=DIR (--teacher DIR), "
                         "a directory written by train-teacher")
    device = _job_device(cfg, ctx)
    # everything that can fail on bad input happens before the run directory is created
    teacher = load_teacher(cfg.teacher, device) if needs_teacher else None
    seed_everything(cfg.seed)
    student = build_model(cfg.student, cfg.embedding_dim, cfg.pretrained, cfg.weights, cfg.l2_normalize).to(device)
    train_set, eval_sets = load_data(cfg, student)
    cfg = resolve_m_per_class(cfg, train_set.labels)
    run, cfg = open_run(cfg, "runs/distill")
    objective = build_objective(
        cfg, student_dim=student.embedding_dim, teacher_dim=teacher.embedding_dim if teacher is not None else None
    ).to(device)
    # the loss's own parameters (e.g. FitNet's regressor) are trained with the student
    optimizer = make_optimizer(trainable_parameters(student, objective), cfg)
    what = (f"{teacher.model_name}-{teacher.embedding_dim} -> " if teacher is not None else "") + (
        f"{student.model_name}-{student.embedding_dim} (L2 {student.l2_normalize})"
    )
    log(f"[distill] {what}, loss {cfg.loss if isinstance(cfg.loss, str) else type(cfg.loss).__name__} on "
        f"{cfg.dataset}: {_describe_data(train_set, eval_sets)}; device {device}{_describe_processes(ctx)}; "
        f"out {run.path}")
    setup = TrainingSetup(
        cfg=cfg, model=student, objective=objective, optimizer=optimizer,
        scheduler=make_scheduler(optimizer, cfg), train_set=train_set, eval_sets=eval_sets,
        run=run, device=device, teacher=teacher, name="student", save_model=_save_model,
        extra_results={"teacher_dir": str(cfg.teacher) if teacher is not None else None},
    )
    return fit(setup)


def evaluate_saved(
    model_dir: str | Path,
    dataset: str | None = None,
    root: str | None = None,
    image_size: int | None = None,
    split: str = "test",
    ks: Sequence[int] | None = None,
    batch_size: int = 256,
    device: str = "auto",
    progress: bool = True,
    num_workers: int = 0,
    test_transform: str | None = None,
) -> dict[str, float]:
    """Recall@K (and PML's metrics) of a saved model on the ``split`` ("test" or "train") of
    ``dataset``.

    ``model_dir`` is a run directory or a saved model folder. For a run directory, the data
    set, root, image size, test transform and Ks default to the run's own; otherwise to
    digits, the data set's image size, the "paper" test transform (resize to S*256/224,
    centre crop) and the data set's usual Ks. ``test_transform="timm"`` uses timm's eval
    transform instead.
    """
    from ..data import load_dataset, recall_ks

    from ..evaluation import evaluate

    if split not in ("test", "train"):
        raise ValueError(f"split must be 'test' or 'train', got {split!r}")
    if test_transform not in (None, "paper", "timm"):
        raise ValueError(f"test_transform must be 'paper' or 'timm', got {test_transform!r}")
    run_config: dict[str, Any] = {}
    config_file = Path(model_dir) / RunDir.CONFIG
    if config_file.is_file():
        data = RunDir(model_dir).read_config()
        if "job" in data:
            run_config = data
    dataset = dataset or run_config.get("dataset") or "digits"
    same_data = dataset == run_config.get("dataset")
    if same_data:
        root = root if root is not None else run_config.get("root")
        image_size = image_size if image_size is not None else run_config.get("image_size")
        ks = ks or run_config.get("recall_ks")
    if test_transform is None:
        test_transform = "timm" if same_data and run_config.get("train_transform") in ("none", "random_resized_crop") else "paper"
    dev = resolve_device(device)
    model = EmbeddingModel.load(find_saved_model(model_dir), map_location=dev)
    data_config = {k: v for k, v in model.data_config.items() if k != "input_size"}
    train_set, test_set = load_dataset(
        dataset, root=root, image_size=image_size, train_transform="paper" if test_transform == "paper" else "none",
        in_chans=3, data_config=data_config,
    )
    if split == "test":
        data = test_set
    else:  # the training images, seen through the test transform
        data = train_set.subset(np.unique(train_set.labels).tolist(), transform=test_set.transform)
    return evaluate(
        model, data, ks=tuple(ks or recall_ks(dataset)), batch_size=batch_size, device=dev, progress=progress,
        num_workers=num_workers,
    )


# --------------------------------------------------------------------------- demo

#: The demo's settings: small models that learn digits at 32 px in about a minute on 2 CPU cores.
DEMO_SETTINGS: dict[str, Any] = dict(
    teacher="resnet18",
    teacher_dim=64,
    student="resnet10t",
    student_dim=8,
    image_size=32,
    epochs=4,
    iterations_per_epoch=12,
    batch_size=60,
    m_per_class=None,  # the smallest divisor of the batch size that digits' 5 classes fill
    lr=1e-3,
    lr_milestones=(3,),
    lr_gamma=0.3,
    train_transform="none",
)


def format_table(rows: Sequence[Mapping[str, Any]], ks: Sequence[int] = (1, 2, 4, 8)) -> str:
    """A fixed-width table of Recall@K (in %) per model."""
    header = f"{'model':<34}" + "".join(f"{'R@' + str(k):>8}" for k in ks)
    lines = [header, "-" * len(header)]
    for row in rows:
        metrics = row.get("test") or {}
        cells = "".join(
            f"{100 * metrics[f'recall@{k}']:>8.1f}" if f"recall@{k}" in metrics else f"{'-':>8}" for k in ks
        )
        lines.append(f"{row['name']:<34}{cells}")
    return "\n".join(lines)


def demo(
    out: str = "runs/demo",
    overwrite: bool = False,
    device: str = "auto",
    seed: int = 0,
    progress: bool = True,
    **settings: Any,
) -> dict[str, Any]:
    """Teacher, triplet baseline and RKD student on the embedded digits data; prints and
    returns the Recall@K table and writes ``out`` (three run directories, results.json,
    recall.png). ``settings`` override :data:`DEMO_SETTINGS`."""
    unknown = set(settings) - set(DEMO_SETTINGS)
    if unknown:
        raise ValueError(f"unknown demo settings {sorted(unknown)}; known: {sorted(DEMO_SETTINGS)}")
    s = {**DEMO_SETTINGS, **settings}
    with distributed_session(device):  # under torchrun: one process group for the three runs
        return _demo(out, overwrite, device, seed, progress, s)


def _demo(out: str, overwrite: bool, device: str, seed: int, progress: bool, s: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    run = RunDir.create(out, overwrite=overwrite)
    run.write_config({"job": "demo", "seed": seed, "device": device, **s})
    common = dict(
        dataset="digits", image_size=s["image_size"], epochs=s["epochs"],
        iterations_per_epoch=s["iterations_per_epoch"], batch_size=s["batch_size"],
        m_per_class=s["m_per_class"], lr=s["lr"], lr_milestones=tuple(s["lr_milestones"]),
        lr_gamma=s["lr_gamma"], train_transform=s["train_transform"], seed=seed, device=device,
        progress=progress,
    )
    teacher = train_teacher(model=s["teacher"], embedding_dim=s["teacher_dim"], out=str(run.path / "teacher"), **common)
    baseline = train_baseline(model=s["student"], embedding_dim=s["student_dim"], out=str(run.path / "baseline"), **common)
    rkd = distill(teacher=str(run.path / "teacher"), student=s["student"], embedding_dim=s["student_dim"],
                  out=str(run.path / "rkd"), **common)
    rows = [
        {"name": f"teacher   {s['teacher']}-{s['teacher_dim']} (triplet)", "run": "teacher", **teacher["best"]},
        {"name": f"baseline  {s['student']}-{s['student_dim']} (triplet)", "run": "baseline", **baseline["best"]},
        {"name": f"RKD-DA    {s['student']}-{s['student_dim']}", "run": "rkd", **rkd["best"]},
    ]
    table = format_table(rows)
    histories = {name: RunDir(run.path / name).read_metrics() for name in ("teacher", "baseline", "rkd")}
    if is_main_process():
        plot_recall(histories, run.plot_path, title="digits 5-9 (unseen): Recall@1 per epoch")
    results = {
        "job": "demo",
        "run_dir": str(run.path),
        "rows": rows,
        "table": table,
        "seconds": round(time.perf_counter() - started, 1),
    }
    run.write_results(results)
    log("\nRecall@K (%) on digits 5-9, classes never seen in training:\n" + table)
    log(f"wall time {results['seconds']:.0f} s; outputs in {run.path}")
    return results


__all__ = [
    "DEMO_SETTINGS",
    "build_model",
    "demo",
    "distill",
    "evaluate_saved",
    "find_saved_model",
    "format_table",
    "load_teacher",
    "make_optimizer",
    "make_scheduler",
    "open_run",
    "resolve_device",
    "split_validation",
    "train_baseline",
    "train_teacher",
    "to_json",
]
