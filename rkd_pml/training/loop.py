"""The training loop shared by the teacher, the baseline and the distilled student.

One step::

    images, labels = next batch             # class-balanced, images in [0, 1], unnormalised
    embeddings = model(images)              # the model normalises its own input
    teacher_emb = teacher(images)           # distillation only: frozen, inference mode
    loss = objective(embeddings, labels, teacher_emb)
    loss.backward(); optimizer.step()

and after each epoch: learning-rate step, Recall@K on the test split (and the validation
split when there is one), metrics.jsonl, best/last checkpoints, recall.png.

Reproducibility: the batches of epoch ``e`` depend only on ``(seed, e)``; the checkpoint
holds the model, objective, optimizer, scheduler, RNG states and the position in the epoch,
so a resumed run ends with the same weights as an uninterrupted one.

Several processes (``torchrun``; see :mod:`rkd_pml.training.distributed_setup`): when a
process group of ``W > 1`` processes is initialised, :func:`fit` trains the model wrapped in
DistributedDataParallel on each process's share of the global batch
(:func:`epoch_batches` with ``rank`` / ``world_size``), computes the objective on the gathered
global batch (:class:`~rkd_pml.training.objective.DistributedObjective`), and evaluates,
logs and writes on rank 0 only (:func:`is_main_process`) while the other ranks wait at a
barrier. One distributed step is the single-process step on the global batch, up to
floating-point summation order, when the model has no BatchNorm in training mode (or
``sync_bn`` on CUDA), the training transform is deterministic and no random miner is used;
otherwise it is equal in distribution (see :mod:`~rkd_pml.training.distributed_setup`).
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .._pml import numpy_random
from ..models import freeze_teacher
from .checkpoint import get_rng_state, load_checkpoint, save_checkpoint, seed_everything, set_rng_state
from .config import TrainConfig
from .distributed_setup import (
    all_gather_object,
    any_rank,
    barrier,
    broadcast_module,
    broadcast_object,
    check_world_size,
    current_context,
    rank_seed,
    wrap_model,
)
from .objective import DistributedObjective, Objective
from .plot import plot_recall
from .run_dir import RunDir, is_main_process

# --------------------------------------------------------------------------- batches


def epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1)[0])


DEFAULT_M_PER_CLASS = 4


def choose_m_per_class(labels: Sequence[int], batch_size: int, preferred: int = DEFAULT_M_PER_CLASS) -> int:
    """``preferred`` if the classes can fill a batch with it, else the smallest divisor of
    ``batch_size`` that can (few training classes, e.g. digits' 5)."""
    num_classes = len(set(int(x) for x in labels))
    for m in range(1, batch_size + 1):
        if batch_size % m == 0 and m >= preferred and m * num_classes >= batch_size:
            return m
    return batch_size


def check_class_balance(labels: Sequence[int], batch_size: int, m_per_class: int) -> None:
    """ValueError unless PML's MPerClassSampler can build batches from ``labels``."""
    num_classes = len(set(int(x) for x in labels))
    if batch_size % m_per_class:
        raise ValueError(f"batch_size ({batch_size}) must be a multiple of m_per_class ({m_per_class})")
    if num_classes * m_per_class < batch_size:
        fit = choose_m_per_class(labels, batch_size, 1)
        raise ValueError(
            f"a batch of {batch_size} with {m_per_class} images per class needs "
            f"{batch_size // m_per_class} classes, but the training split has {num_classes}; "
            f"use --m-per-class {fit} (a divisor of the batch size) or a smaller --batch-size"
        )


def epoch_batches(
    labels: Sequence[int], cfg: TrainConfig, epoch: int, rank: int = 0, world_size: int = 1
) -> list[list[int]]:
    """The class-balanced batches of ``epoch`` (PML's MPerClassSampler, seeded by
    ``(cfg.seed, epoch)``).

    With ``world_size > 1``, ``cfg.batch_size`` is the global batch: the global batches are
    those of a single process, and rank ``r`` gets rows ``r * b`` to ``(r + 1) * b - 1`` of
    each, ``b = batch_size / world_size`` (ValueError unless it divides evenly). The shares of
    all ranks, in rank order, make up the global batch.
    """
    from ..data import class_balanced_sampler

    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size), got rank {rank} of {world_size}")
    check_world_size(cfg.batch_size, world_size)
    check_class_balance(labels, cfg.batch_size, cfg.m_per_class)
    n = cfg.iterations_per_epoch
    rng = np.random.RandomState(epoch_seed(cfg.seed, epoch))
    with numpy_random(rng):
        sampler = class_balanced_sampler(labels, cfg.m_per_class, cfg.batch_size, n * cfg.batch_size)
        order = [int(i) for i in sampler]
    batches = [order[i * cfg.batch_size : (i + 1) * cfg.batch_size] for i in range(n)]
    if world_size == 1:
        return batches
    share = cfg.batch_size // world_size
    return [b[rank * share : (rank + 1) * share] for b in batches]


def make_loader(
    dataset: Dataset, batches: list[list[int]], cfg: TrainConfig, epoch: int, device: torch.device, rank: int = 0
):
    """A DataLoader over fixed batches; its own generator keeps the global RNG untouched
    (and gives the workers of each rank their own seeds)."""
    seed = epoch_seed(cfg.seed + 1, epoch) if rank == 0 else rank_seed(cfg.seed + 1, rank, epoch)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
        generator=generator,
        persistent_workers=False,
    )


# --------------------------------------------------------------------------- stop requests

_STOP = threading.Event()


def request_stop() -> None:
    """Ask the running loop to save a checkpoint after the current step and stop."""
    _STOP.set()


@contextlib.contextmanager
def stop_on_signals(signals: Sequence[int] = (signal.SIGTERM,)) -> Iterator[None]:
    """Turn SIGTERM (by default) into :func:`request_stop` while the block runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, lambda *_: request_stop()) for s in signals}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _STOP.clear()


class TrainingInterrupted(RuntimeError):
    """Raised when a stop was requested; the last checkpoint holds the position."""


# --------------------------------------------------------------------------- the loop


@dataclass
class TrainingSetup:
    """Everything :func:`fit` needs; built by the jobs in :mod:`rkd_pml.training.jobs`."""

    cfg: TrainConfig
    model: nn.Module
    objective: Objective
    optimizer: torch.optim.Optimizer
    scheduler: Any
    train_set: Dataset
    eval_sets: dict[str, Dataset]
    run: RunDir
    device: torch.device
    teacher: nn.Module | None = None
    name: str = "model"
    #: called with the trained model (best weights loaded) to save it in run.model_dir
    save_model: Any = None
    extra_results: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoopState:
    epoch: int = 0  # completed epochs
    iteration: int = 0  # steps done in epoch ``epoch + 1``
    best_metric: float = -math.inf
    best_epoch: int = 0
    loss_sums: dict[str, float] = field(default_factory=dict)
    loss_count: int = 0
    train_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _checkpoint_state(setup: TrainingSetup, state: LoopState, rng_ranks: list[Any] | None = None) -> dict[str, Any]:
    ckpt = {
        "kind": "last",
        "job": setup.cfg.job,
        "loop": state.to_dict(),
        "model": setup.model.state_dict(),
        "objective": setup.objective.state_dict(),
        "optimizer": setup.optimizer.state_dict(),
        "scheduler": setup.scheduler.state_dict(),
        "rng": get_rng_state(),
    }
    if rng_ranks is not None and len(rng_ranks) > 1:  # several processes: every rank's RNG state
        ckpt["world_size"] = len(rng_ranks)
        ckpt["rng_ranks"] = rng_ranks
    return ckpt


def _gather_rng_states(world_size: int) -> list[Any] | None:
    """Every rank's RNG state (a collective: all ranks call it at the same point)."""
    return all_gather_object(get_rng_state()) if world_size > 1 else None


def _restore_rank_rng(ckpt: dict[str, Any], cfg: TrainConfig, rank: int, world_size: int, state: "LoopState") -> None:
    """Rank ``rank``'s RNG state: its own from the checkpoint when the run had as many
    processes; otherwise rank 0 keeps the checkpoint's and the others derive one from the
    seed and the position."""
    saved = ckpt.get("rng_ranks")
    if isinstance(saved, list) and len(saved) == world_size:
        set_rng_state(saved[rank])
    elif rank > 0:
        seed_everything(rank_seed(cfg.seed, rank, state.epoch, state.iteration))


def _stop_requested(world_size: int, device: torch.device) -> bool:
    """A stop was requested (on any rank: every rank stops at the same step)."""
    if world_size == 1:
        return _STOP.is_set()
    return any_rank(_STOP.is_set(), device)


def _restore(setup: TrainingSetup, ckpt: dict[str, Any]) -> LoopState:
    if ckpt.get("kind") != "last" or ckpt.get("job") != setup.cfg.job:
        raise ValueError(
            f"{setup.run.last_checkpoint} is a {ckpt.get('kind')!r} checkpoint of job "
            f"{ckpt.get('job')!r}; expected the 'last' checkpoint of a {setup.cfg.job!r} run"
        )
    try:
        setup.model.load_state_dict(ckpt["model"])
        setup.objective.load_state_dict(ckpt["objective"])
        setup.optimizer.load_state_dict(ckpt["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise ValueError(
            f"{setup.run.last_checkpoint} does not match this run's model or optimizer: "
            f"{str(exc).splitlines()[0]}"
        ) from None
    setup.scheduler.load_state_dict(ckpt["scheduler"])
    set_rng_state(ckpt["rng"])
    return LoopState(**ckpt["loop"])


def _evaluate(setup: TrainingSetup) -> dict[str, dict[str, float]]:
    """Recall@K (and PML's metrics) on every evaluation split; leaves the RNG untouched."""
    from ..evaluation import evaluate

    results = {}
    setup.model.eval()
    with torch.random.fork_rng(devices=[]):
        for split, dataset in setup.eval_sets.items():
            results[split] = evaluate(
                setup.model,
                dataset,
                ks=tuple(setup.cfg.recall_ks),
                batch_size=setup.cfg.eval_batch_size,
                device=setup.device,
                progress=setup.cfg.progress,
            )
    setup.model.train()
    return results


def _selection_split(setup: TrainingSetup) -> str:
    return "val" if "val" in setup.eval_sets else "test"


def _fmt_metrics(metrics: dict[str, dict[str, float]], ks: Sequence[int]) -> str:
    out = []
    for split, m in metrics.items():
        recalls = " ".join(f"R@{k} {100 * m[f'recall@{k}']:.1f}" for k in ks if f"recall@{k}" in m)
        out.append(f"{split} {recalls}")
    return " | ".join(out)


def log(message: str) -> None:
    """One line on stdout, from the main process only (keeps tqdm bars intact)."""
    if is_main_process():
        tqdm.write(message)


def fit(setup: TrainingSetup) -> dict[str, Any]:
    """Train ``setup.model`` for ``cfg.epochs`` epochs (continuing from the last checkpoint
    when ``cfg.resume``); return the results dict also written to results.json.

    On return the model holds the weights of the best epoch (by Recall@1 on the validation
    split when there is one, on the test split otherwise).

    With an initialised process group of several processes, every rank calls it with its own
    setup (same config and seed): each trains on its share of the global batch, rank 0 alone
    evaluates and writes, and every rank returns the same results.
    """
    cfg, run, model, device = setup.cfg, setup.run, setup.model, setup.device
    ctx = current_context()
    rank, world_size = ctx.rank, ctx.world_size
    state = LoopState()
    history = []
    if world_size > 1:
        check_world_size(cfg.batch_size, world_size)
    if cfg.resume and run.last_checkpoint.is_file():
        ckpt = load_checkpoint(run.last_checkpoint, map_location=device)  # every rank reads it
        state = _restore(setup, ckpt)
        if world_size > 1:
            _restore_rank_rng(ckpt, cfg, rank, world_size, state)
        del ckpt
        history = [r for r in run.read_metrics() if r.get("epoch", 0) <= state.epoch]
        run.keep_metrics(history)
        log(f"[{setup.name}] resuming {run.path} after epoch {state.epoch}, step {state.iteration}")
    else:
        if cfg.resume:
            run.keep_metrics([])
            log(f"[{setup.name}] no checkpoint in {run.path} yet: starting from the beginning")
        if rank > 0:  # rank 0 keeps the single-process RNG stream; the others get their own
            seed_everything(rank_seed(cfg.seed, rank))

    # inference mode, eval mode for good, no gradients; returns ordinary tensors
    teacher = freeze_teacher(setup.teacher) if setup.teacher is not None else None
    labels = [int(x) for x in setup.train_set.labels]
    selection = _selection_split(setup)
    iters = cfg.iterations_per_epoch
    # what a training step calls: the model and the objective themselves in one process; with
    # several, the model in DDP and the objective on the gathered global batch
    train_model, objective = model, setup.objective
    if world_size > 1:
        broadcast_module(setup.objective)  # a loss's own parameters start equal on every rank
        train_model = wrap_model(model, device, sync_bn=bool(getattr(cfg, "sync_bn", False)))
        objective = DistributedObjective(setup.objective, world_size)
    return _train(setup, state, history, teacher, train_model, objective, labels, selection, iters, rank, world_size)


def _train(setup, state, history, teacher, train_model, objective, labels, selection, iters, rank, world_size):
    """The epochs of :func:`fit`, from ``state`` on."""
    cfg, run, model, device = setup.cfg, setup.run, setup.model, setup.device
    main = is_main_process()
    for epoch in range(state.epoch + 1, cfg.epochs + 1):
        started = time.perf_counter()
        batches = epoch_batches(labels, cfg, epoch, rank, world_size)[state.iteration :]
        loader = make_loader(setup.train_set, batches, cfg, epoch, device, rank)
        model.train()
        objective.train()
        bar = tqdm(
            loader,
            total=iters,
            initial=state.iteration,
            desc=f"{setup.name} epoch {epoch}/{cfg.epochs}",
            leave=False,
            disable=not (cfg.progress and main),
            dynamic_ncols=True,
        )
        for images, batch_labels in bar:
            images = images.to(device, non_blocking=True)
            batch_labels = batch_labels.to(device, non_blocking=True)
            embeddings = train_model(images)
            ref = teacher(images) if objective.needs_teacher else None
            loss, parts = objective(embeddings, batch_labels, ref)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"non-finite loss ({parts}) at epoch {epoch}, step {state.iteration + 1}; "
                    "lower the learning rate or check the data"
                )
            setup.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if world_size > 1:
                objective.reduce_gradients()
            setup.optimizer.step()

            state.iteration += 1
            state.loss_count += 1
            for k, v in parts.items():
                state.loss_sums[k] = state.loss_sums.get(k, 0.0) + v
            bar.set_postfix(loss=f"{parts['loss']:.4f}", refresh=False)
            mid_epoch = state.iteration < iters
            stop = _stop_requested(world_size, device) if mid_epoch else False
            if mid_epoch and (stop or (cfg.checkpoint_every and state.iteration % cfg.checkpoint_every == 0)):
                state.train_seconds += time.perf_counter() - started
                started = time.perf_counter()
                rng_ranks = _gather_rng_states(world_size)
                if main:
                    save_checkpoint(run.last_checkpoint, _checkpoint_state(setup, state, rng_ranks))
                barrier()  # the checkpoint is complete before any rank goes on (or stops)
                if stop:
                    bar.close()
                    _STOP.clear()
                    raise TrainingInterrupted(
                        f"stopped at epoch {epoch}, step {state.iteration}; continue with --resume "
                        f"(checkpoint {run.last_checkpoint})"
                    )
        bar.close()
        epoch_lr = setup.optimizer.param_groups[0]["lr"]
        setup.scheduler.step()
        state.train_seconds += time.perf_counter() - started

        # ---- end of epoch: evaluate, log, checkpoint
        record: dict[str, Any] = {
            "epoch": epoch,
            **{k: v / max(state.loss_count, 1) for k, v in state.loss_sums.items()},
            "lr": epoch_lr,
            "train_seconds": round(state.train_seconds, 3),
        }
        is_eval_epoch = epoch % cfg.eval_every == 0 or epoch == cfg.epochs
        improved = False
        if is_eval_epoch:
            # rank 0 evaluates, the other ranks wait for its metrics (so every rank keeps the
            # same history and best epoch)
            metrics = _evaluate(setup) if main else None
            if world_size > 1:
                metrics = broadcast_object(metrics)
            record.update(metrics)
            score = metrics[selection]["recall@1"]
            if score > state.best_metric:
                state.best_metric, state.best_epoch, improved = score, epoch, True
        state.epoch, state.iteration = epoch, 0
        state.loss_sums, state.loss_count = {}, 0
        history.append(record)
        rng_ranks = _gather_rng_states(world_size)
        if main:
            run.append_metrics(record)
            if improved:
                save_checkpoint(
                    run.best_checkpoint,
                    {"kind": "best", "job": cfg.job, "epoch": epoch, "model": model.state_dict(),
                     "objective": setup.objective.state_dict()},
                )
            save_checkpoint(run.last_checkpoint, _checkpoint_state(setup, state, rng_ranks))
            plot_recall({setup.name: history}, run.plot_path, title=f"{setup.name}: Recall@1 per epoch")
            summary = _fmt_metrics({k: record[k] for k in setup.eval_sets if k in record}, cfg.recall_ks)
            log(
                f"[{setup.name}] epoch {epoch}/{cfg.epochs} loss {record.get('loss', float('nan')):.4f} "
                f"lr {record['lr']:.1e} | {summary or 'no evaluation'} | "
                f"{state.train_seconds:.1f}s{' *' if improved else ''}"
            )
        barrier()  # rank 0 has written the epoch's files
        if _stop_requested(world_size, device):
            _STOP.clear()
            raise TrainingInterrupted(f"stopped after epoch {epoch}; continue with --resume")

    return _finish(setup, state, history)


def _finish(setup: TrainingSetup, state: LoopState, history: list[dict[str, Any]]) -> dict[str, Any]:
    cfg, run, model = setup.cfg, setup.run, setup.model
    last = history[-1] if history else {}
    best_record = next((r for r in history if r.get("epoch") == state.best_epoch), last)
    if run.best_checkpoint.is_file():
        best = load_checkpoint(run.best_checkpoint, map_location=setup.device)
        model.load_state_dict(best["model"])
    if is_main_process() and setup.save_model is not None:
        setup.save_model(model, run.model_dir)
    world_size = current_context().world_size
    splits = list(setup.eval_sets)
    results = {
        "job": cfg.job,
        "name": setup.name,
        "run_dir": str(run.path),
        "model_dir": str(run.model_dir),
        "selection_split": _selection_split(setup),
        "best_epoch": state.best_epoch,
        "best": {s: best_record.get(s) for s in splits},
        "last": {"epoch": last.get("epoch"), **{s: last.get(s) for s in splits}},
        "epochs": cfg.epochs,
        "train_seconds": round(state.train_seconds, 3),
        **setup.extra_results,
        "config": cfg.to_dict(),
    }
    if world_size > 1:
        results["world_size"] = world_size
    run.write_results(results)
    barrier()  # the saved model and results.json exist when any rank returns
    return results
