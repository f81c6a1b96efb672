"""The workflow as plain Python functions: train a teacher, distil a student.

Each job takes a config dataclass (or keyword overrides of its defaults), writes a run
directory and returns the results dict that it also saves as results.json::

    from rkd_pml.training import train_teacher, distill

    t = train_teacher(dataset="omniglot", root="omniglot.zip", model="resnet18", embedding_dim=64,
                      epochs=5, iterations_per_epoch=20, batch_size=40, lr=1e-3,
                      lr_milestones=(4,), out="runs/teacher")
    s = distill(teacher="runs/teacher", student="resnet10t", embedding_dim=16, epochs=5,
                iterations_per_epoch=20, batch_size=40, lr=1e-3, lr_milestones=(4,), out="runs/rkd")
    print(s["best"]["test"]["recall@1"])   # data set, root, image size: the teacher's

All three go through :func:`run_job`: resolve the settings (:mod:`.resolve`), build the
models and data, check everything that can fail, and only then create the run directory and
train (:func:`rkd_pml.training.loop.fit`). Started by ``torchrun`` (``WORLD_SIZE`` > 1), a job
runs on all the processes (:mod:`rkd_pml.distributed.session`); ``batch_size`` is the global batch.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Mapping

import numpy as np
import torch

from ..data.batches import check_class_balance, split_validation
from ..data.settings import INHERITED, DataSettings, resolve_data_settings
from ..distributed import session as dist
from ..models import build_model, load_teacher
from .checkpoint import seed_everything
from .config import BaselineConfig, DistillConfig, TeacherConfig, TrainConfig, config_differences, config_from_dict
from .loop import TrainingSetup, fit
from .objective import build_objective, trainable_parameters
from .resolve import resolve_m_per_class, resolve_recall_ks, resolve_val_fraction, training_data
from ..runs import RunDir, log
from .speed import check_precision


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; a device that is not there is an error."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device must be cpu, cuda, cuda:N, mps or auto, got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA GPU is available; use --device cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: there are {torch.cuda.device_count()} CUDA devices")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("--device mps: MPS is not available; use --device cpu or auto")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device must be cpu, cuda, cuda:N, mps or auto, got {name!r}")
    return device


def device_name(device: torch.device) -> str:
    """The device as config.json records it: ``"cpu"``, ``"cuda:0"`` (the index resolved), ``"mps"``."""
    if device.type == "cuda" and device.index is None:
        return f"cuda:{torch.cuda.current_device()}"
    return str(device)


def run_records(device: torch.device, teacher: Any = None, cache: Any = None) -> dict[str, Any]:
    """What config.json records beside the settings: the device used (the setting ``device``
    keeps what was asked, ``"auto"``...) and, for distillation, the SHA-256 of the teacher's
    weights (a resume against another teacher is refused)."""
    from ..data.teacher_cache_format import weights_sha256

    records: dict[str, Any] = {"device_used": device_name(device)}
    if teacher is not None:
        records["teacher_sha256"] = weights_sha256(teacher)
    elif cache is not None and cache.manifest.get("teacher", {}).get("weights_sha256"):
        records["teacher_sha256"] = cache.manifest["teacher"]["weights_sha256"]
    return records


def load_splits(cfg: TrainConfig, data: DataSettings) -> tuple[Any, dict[str, Any], TrainConfig]:
    """``(train_set, eval_sets, cfg)`` of the data ``data`` describes: eval_sets = {"val": ...,
    "test": ...} (val where there is one); ``cfg`` with the validation fraction and images per
    class resolved and checked."""
    from ..data import load_dataset

    train_set, test_set = load_dataset(data)
    cfg = resolve_val_fraction(cfg, train_set.labels)
    eval_sets = {}
    if cfg.val_fraction > 0:
        train_set, eval_sets["val"] = split_validation(train_set, test_set.transform, cfg.val_fraction, cfg.seed)
    eval_sets["test"] = test_set
    for split, data in eval_sets.items():
        if len(np.unique(np.asarray(data.labels))) < 2:
            raise ValueError(f"the {split} split of {cfg.dataset} has fewer than 2 classes: nothing to retrieve")
        if np.bincount(np.asarray(data.labels)).max() < 2:
            raise ValueError(f"every class of the {split} split of {cfg.dataset} has a single image: Recall@K is undefined")
    cfg = resolve_m_per_class(cfg, train_set.labels)
    check_class_balance(train_set.labels, cfg.batch_size, cfg.m_per_class)
    if cfg.check_images:
        # the fast pipeline keeps the training images decoded; a teacher cache renders its own views
        keep = cfg.input_pipeline == "fast" and not getattr(cfg, "teacher_cache", None)
        for data in (train_set, *eval_sets.values()):
            data.check_images(progress=cfg.progress, keep=keep and data is train_set)
    return train_set, eval_sets, cfg


def open_teacher_cache(cfg: DistillConfig, device: torch.device):
    """The run's teacher cache; with ``--teacher`` too, refused unless built from that teacher
    (the teacher is loaded to compare, never run)."""
    from ..data.teacher_cache import TeacherCache, expectation

    expect = expectation(teacher=load_teacher(cfg.teacher, "cpu")) if cfg.teacher else None
    return TeacherCache.open(cfg.teacher_cache, expect=expect)


def cache_data_settings(cache) -> dict[str, Any]:
    """The data settings a teacher cache was built with, as a model's ``training_data``."""
    m = cache.manifest
    size = m.get("image_size")
    name = str(m.get("dataset", {}).get("name") or "")
    return {"dataset": name[: -len("-train")] if name.endswith("-train") else None, "root": m.get("dataset", {}).get("root"),
            "image_size": size if isinstance(size, int) else None, "in_chans": m.get("in_chans")}


def check_forward(models: dict[str, Any], image_size: int, in_chans: int, device: torch.device) -> None:
    """One forward pass of each model on a tiny batch of the run's image shape, before anything is
    written: a model that cannot take these images (a ViT at 16 px, ...) is a one-line error."""
    from ..files import one_line

    images = torch.rand(2, in_chans, image_size, image_size, generator=torch.Generator().manual_seed(0)).to(device)
    for name, model in models.items():
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                model(images)
        except Exception as exc:  # any failure of a third-party model's forward
            raise ValueError(f"the {name} {getattr(model, 'model_name', type(model).__name__)} cannot take "
                             f"{in_chans}x{image_size}x{image_size} images: {one_line(exc)}; choose another "
                             "--image-size or model") from None
        finally:
            model.train(was_training)


def open_run(cfg: TrainConfig, default_out: str, inputs: list[Any],
             records: dict[str, Any] | None = None) -> tuple[RunDir, TrainConfig]:
    """Create (or reopen, for ``cfg.resume``) and lock the run directory; write config.json
    (the settings, and ``records``: see :func:`run_records`).

    On resume the saved configuration must match ``cfg`` except for runtime settings, and the
    teacher must be the one the run started with (same ``teacher_sha256``).
    """
    cfg = cfg.replace(out=str(cfg.out or default_out))
    records = dict(records or {})
    run = RunDir.create(cfg.out, overwrite=cfg.overwrite, resume=cfg.resume, inputs=inputs)
    try:
        if cfg.resume and run.config_path.is_file():
            recorded = run.read_config()
            saved = config_from_dict(recorded, str(run.config_path))
            diffs = config_differences(saved, cfg)
            if diffs:
                raise ValueError(f"cannot resume {run.path}: it was started with other settings ({'; '.join(diffs)}); "
                                 "repeat the original options, or start a new run with another --out")
            _check_same_teacher(run, cfg, recorded.get("teacher_sha256"), records.get("teacher_sha256"))
        run.write_config({**cfg.to_dict(), **records})  # on resume: records a new epochs / device / ...
    except BaseException:
        run.close()
        raise
    return run, cfg


def _check_same_teacher(run: RunDir, cfg: TrainConfig, then: Any, now: Any) -> None:
    if then is None or now is None or then == now:
        return  # nothing recorded (a run of an earlier version, or no teacher): nothing to compare
    where = f"the teacher {cfg.teacher}" if getattr(cfg, "teacher", None) else f"the teacher cache {cfg.teacher_cache}"
    raise ValueError(f"cannot resume {run.path}: {where} is not the teacher the run started with (weights sha256 "
                     f"{str(then)[:12]}... then, {str(now)[:12]}... now: it was replaced or retrained); "
                     "start a new run with another --out, or --overwrite this one")


def _describe_data(train_set, eval_sets) -> str:
    parts = [f"train {len(train_set)} images / {len(np.unique(train_set.labels))} classes"]
    parts += [f"{split} {len(ds)} / {len(np.unique(np.asarray(ds.labels)))}" for split, ds in eval_sets.items()]
    return ", ".join(parts)


def run_job(cfg: TrainConfig) -> dict[str, Any]:
    """Run one training job (teacher, baseline or distillation) and return its results."""
    cfg.validate()
    with dist.distributed_session(cfg.device) as ctx:
        return _run(cfg, ctx)


def _run(cfg: TrainConfig, ctx: dist.DistributedContext) -> dict[str, Any]:
    device = dist.process_device(resolve_device(cfg.device), ctx)
    dist.check_world_size(cfg.batch_size, ctx.world_size)
    dist.check_sync_bn(cfg.sync_bn, device, ctx)
    check_precision(cfg.precision, device)
    if cfg.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ValueError("--tensorboard needs the tensorboard package: pip install tensorboard")
    distilling = isinstance(cfg, DistillConfig)
    teacher = cache = None
    recorded, source = {}, ""
    # everything that can fail on bad input happens before the run directory is created
    if distilling and cfg.uses_teacher and cfg.teacher_cache:
        cache = open_teacher_cache(cfg, device)
        recorded, source = cache_data_settings(cache), f"the teacher cache {cfg.teacher_cache}"
    elif distilling and cfg.uses_teacher and cfg.teacher:
        teacher = load_teacher(cfg.teacher, device)
        recorded, source = teacher.training_data or {}, f"the teacher {cfg.teacher}"
    data = resolve_data_settings(cfg, recorded, source)
    cfg = cfg.replace(**{name: getattr(data, name) for name in INHERITED}, recall_ks=resolve_recall_ks(cfg, data.dataset))
    seed_everything(cfg.seed)
    spec = cfg.student if distilling else cfg.model
    model = build_model(spec, cfg.embedding_dim, cfg.pretrained, cfg.weights, cfg.l2_normalize, data.in_chans,
                        flag="--student" if distilling else type(cfg).flag_names.get("model", "--model")).to(device)
    data = data.for_model(model.data_config)  # the interpolation and crop of the model the images feed
    train_set, eval_sets, cfg = load_splits(cfg, data)
    check_forward({"student" if distilling else "model": model, **({"teacher": teacher} if teacher is not None else {})},
                  data.image_size, data.in_chans, device)
    teacher_dim = cache.embedding_dim if cache is not None else teacher.embedding_dim if teacher is not None else None
    objective = build_objective(cfg, student_dim=model.embedding_dim, teacher_dim=teacher_dim).to(device)
    if cache is not None:
        from ..data.teacher_cache import CachedViews

        train_set = CachedViews(train_set, cache, seed=cfg.seed)  # checks the images and the view against the cache
    inputs = [cfg.root, cfg.test_root, cfg.weights, getattr(cfg, "teacher", None), getattr(cfg, "teacher_cache", None), spec]
    name = "student" if distilling else {"train-teacher": "teacher", "train-baseline": "baseline"}.get(cfg.job, "model")
    records = {**run_records(device, teacher, cache), "data_settings": data.record()}
    run, cfg = open_run(cfg, f"runs/{cfg.job.split('-')[-1]}", inputs, records)
    try:
        model.training_data = training_data(cfg, data)
        optimizer = torch.optim.Adam(trainable_parameters(model, objective), lr=cfg.lr, weight_decay=cfg.weight_decay)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.lr_milestones), gamma=cfg.lr_gamma)
        source = (f"{teacher.model_name}-{teacher.embedding_dim} -> " if teacher is not None else
                  f"cached {cache.manifest['teacher'].get('model_name')}-{cache.embedding_dim} -> " if cache is not None else "")
        what = source + f"{model.model_name}-{model.embedding_dim} (L2 {model.l2_normalize})"
        loss = f", loss {cfg.loss if isinstance(cfg.loss, str) else type(cfg.loss).__name__}" if distilling else ""
        log(f"[{name}] {what}{loss} on {data.dataset} at {data.image_size} px ({cfg.precision}): "
            f"{_describe_data(train_set, eval_sets)}; device {device}"
            f"{f' x {ctx.world_size} processes ({ctx.backend})' if ctx.enabled else ''}; out {run.path}")
        setup = TrainingSetup(cfg=cfg, model=model, objective=objective, optimizer=optimizer, scheduler=scheduler,
                              train_set=train_set, eval_sets=eval_sets, run=run, device=device, teacher=teacher, name=name,
                              extra_results={"teacher_dir": str(cfg.teacher)} if teacher is not None else
                              {"teacher_cache": str(cfg.teacher_cache)} if cache is not None else {}, records=records)
        return fit(setup)
    finally:
        run.close()


def _with_overrides(cfg, cls, overrides: Mapping[str, Any]):
    if cfg is None:
        cfg = cls()
    elif not isinstance(cfg, cls):
        raise TypeError(f"expected a {cls.__name__}, got {type(cfg).__name__}")
    return cfg.replace(**overrides) if overrides else cfg


def train_teacher(cfg: TeacherConfig | None = None, **overrides) -> dict[str, Any]:
    """Train a teacher with triplet loss on distance-weighted triplets (the paper's recipe
    by default; see :class:`TeacherConfig`). The best model is saved in ``<out>/model``."""
    return run_job(_with_overrides(cfg, TeacherConfig, overrides))


def train_baseline(cfg: BaselineConfig | None = None, **overrides) -> dict[str, Any]:
    """Train the student architecture like the teacher (triplet loss), for comparison."""
    return run_job(_with_overrides(cfg, BaselineConfig, overrides))


def distill(cfg: DistillConfig | None = None, **overrides) -> dict[str, Any]:
    """Distil a saved, frozen teacher into a student (RKD-DA by default; see
    :class:`DistillConfig`). The same unnormalised batch feeds both models; the data settings
    default to the teacher's. ``loss="triplet"`` trains the student without a teacher."""
    return run_job(_with_overrides(cfg, DistillConfig, overrides))
