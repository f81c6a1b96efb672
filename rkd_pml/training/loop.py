"""The training loop shared by the teacher, the baseline and the distilled student.

One step (:func:`train_step`)::

    images, labels = next batch              # class-balanced, images in [0, 1], unnormalised
    with autocast:                           # fp32: nothing; bf16 / fp16: the forward passes
        embeddings = model(images)           # the model normalises its own input
        teacher_emb = teacher(images)        # distillation only (or read from a teacher cache)
    loss, parts = objective(embeddings.float(), labels, teacher_emb.float())
    scaler.scale(loss).backward(); scaler.step(optimizer)   # skipped when a gradient is not finite

and after each epoch (:func:`end_of_epoch`): learning-rate step, Recall@K on the validation
and test splits, one line in metrics.jsonl (every loss term, the learning rate, the step time),
best/last checkpoints, recall.png.

Reproducibility: the batches of epoch ``e``, the augmentation of each image and every random
draw of a step (the miner's, dropout's) depend only on ``(seed, e, position)``, never on
torch's global stream; the checkpoint holds the model, objective, optimizer, scheduler,
gradient scaler, RNG states and the position in the epoch, so a run resumed at an epoch end
or in the middle of one ends with the same weights as an uninterrupted one. Under torchrun
(:mod:`rkd_pml.distributed.session`) each rank trains on its share of the global batch, the
objective relates the gathered global batch, and rank 0 alone evaluates and writes.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..data.batches import EpochBatches, EpochItems, epoch_batches, make_loader, seeded_random, step_seed
from ..data.fast_input import training_loader
from ..distributed import session as dist
from ..distributed.objective import DistributedObjective
from ..runs import EpochLog, RunDir, is_main_process, log
from .checkpoint import get_rng_state, load_checkpoint, save_checkpoint, seed_everything, set_rng_state
from .config import TrainConfig
from .objective import Objective
from .signals import TrainingInterrupted, clear_stop, stop_requested
from .speed import autocast, gradients_are_finite, make_scaler, prepare_forward, to_input

MAX_SKIPPED_IN_A_ROW = 5  # non-finite gradients this many steps running: the run has diverged


@dataclass
class TrainingSetup:
    """Everything :func:`fit` needs; built by :func:`rkd_pml.training.jobs.run_job`."""

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
    extra_results: dict[str, Any] = field(default_factory=dict)
    records: dict[str, Any] = field(default_factory=dict)  # what config.json records beside the settings


@dataclass
class LoopState:
    epoch: int = 0  # completed epochs
    iteration: int = 0  # steps done in epoch ``epoch + 1``
    best_metric: float = -math.inf
    best_epoch: int = 0
    loss_sums: dict[str, float] = field(default_factory=dict)
    loss_count: int = 0
    train_seconds: float = 0.0
    step_seconds: float = 0.0
    skipped_steps: int = 0  # in epoch ``epoch + 1``: optimizer steps skipped for non-finite gradients
    skipped_in_a_row: int = 0

    def position(self, epochs: int, steps: int) -> str:
        """Where the run stands, counted as every message counts it (epochs and steps 1-based):
        ``"after epoch 1 of 2"`` at an epoch end, ``"in epoch 2 of 2, after step 5 of 12"`` within one."""
        if self.iteration == 0:
            return f"after epoch {self.epoch} of {epochs}"
        return f"in epoch {self.epoch + 1} of {epochs}, after step {self.iteration} of {steps}"


@dataclass
class Runner:
    """The per-process pieces of a run: what a step calls, the scaler, the rank."""

    forward: Any
    teacher_forward: Any
    objective: Any
    scaler: torch.amp.GradScaler
    rank: int
    world_size: int


def _checkpoint_state(setup: TrainingSetup, runner: Runner, state: LoopState) -> dict[str, Any]:
    ranks = dist.all_gather_object(get_rng_state()) if runner.world_size > 1 else None
    ckpt = {
        "kind": "last", "job": setup.cfg.job, "loop": dict(state.__dict__),
        "model": setup.model.state_dict(), "objective": setup.objective.state_dict(),
        "optimizer": setup.optimizer.state_dict(), "scheduler": setup.scheduler.state_dict(),
        "scaler": runner.scaler.state_dict(), "rng": get_rng_state(),
    }
    if ranks is not None:  # several processes: every rank's RNG state
        ckpt["world_size"], ckpt["rng_ranks"] = len(ranks), ranks
    return ckpt


def _restore(setup: TrainingSetup, runner: Runner, ckpt: dict[str, Any]) -> LoopState:
    path = setup.run.last_checkpoint
    if ckpt.get("kind") != "last" or ckpt.get("job") != setup.cfg.job:
        raise ValueError(f"{path} is a {ckpt.get('kind')!r} checkpoint of job {ckpt.get('job')!r}; expected the 'last' checkpoint of a {setup.cfg.job!r} run")
    try:
        setup.model.load_state_dict(ckpt["model"])
        setup.objective.load_state_dict(ckpt["objective"])
        setup.optimizer.load_state_dict(ckpt["optimizer"])
        setup.scheduler.load_state_dict(ckpt["scheduler"])
        runner.scaler.load_state_dict(ckpt["scaler"])
        state = LoopState(**ckpt["loop"])
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} does not match this run's model, optimizer or loop: {str(exc).splitlines()[0]}") from None
    set_rng_state(ckpt["rng"])
    saved = ckpt.get("rng_ranks")
    if isinstance(saved, list) and len(saved) == runner.world_size:
        set_rng_state(saved[runner.rank])
    elif runner.rank > 0:
        seed_everything(dist.rank_seed(setup.cfg.seed, runner.rank, state.epoch, state.iteration))
    return state


def evaluate_splits(setup: TrainingSetup) -> dict[str, dict[str, float]]:
    """Recall@K (and PML's metrics) on every evaluation split; leaves the RNG untouched."""
    from ..evaluation import evaluate

    setup.model.eval()
    with torch.random.fork_rng(devices=[]), autocast(setup.cfg.precision, setup.device):
        results = {
            split: evaluate(setup.model, data, ks=tuple(setup.cfg.recall_ks), batch_size=setup.cfg.eval_batch_size,
                            device=setup.device, progress=setup.cfg.progress)
            for split, data in setup.eval_sets.items()
        }
    setup.model.train()
    return results


def train_step(setup: TrainingSetup, runner: Runner, images, labels, cached_teacher=None) -> tuple[dict[str, float], bool]:
    """One optimisation step on a batch; returns the logged parts (each loss term, ``loss``) and
    whether the optimizer stepped (False: a gradient was not finite and the step was skipped;
    with fp16 the gradient scaler makes that choice itself)."""
    cfg, device = setup.cfg, setup.device
    images = to_input(images, device, cfg.channels_last)
    labels = labels.to(device, non_blocking=True)
    with autocast(cfg.precision, device):
        embeddings = runner.forward(images)
        teacher = None
        if runner.objective.needs_teacher:
            teacher = cached_teacher.to(device) if cached_teacher is not None else runner.teacher_forward(images)
    loss, parts = runner.objective(embeddings.float(), labels, teacher.float() if teacher is not None else None)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite loss ({parts}); lower --lr or check the data")
    setup.optimizer.zero_grad(set_to_none=True)
    runner.scaler.scale(loss).backward()
    if runner.world_size > 1:
        runner.objective.reduce_gradients()  # every rank holds the same gradients: the same choice
    if not runner.scaler.is_enabled() and not gradients_are_finite(setup.optimizer):
        setup.optimizer.zero_grad(set_to_none=True)
        return parts, False
    runner.scaler.step(setup.optimizer)
    runner.scaler.update()
    return parts, True


def end_of_epoch(setup: TrainingSetup, runner: Runner, state: LoopState, epoch: int, epoch_lr: float, logger: EpochLog) -> None:
    """Evaluate (on evaluation epochs), log, checkpoint; updates ``state``."""
    cfg, run = setup.cfg, setup.run
    main = is_main_process()
    record: dict[str, Any] = {
        "epoch": epoch,
        **{k: v / max(state.loss_count, 1) for k, v in state.loss_sums.items()},
        "lr": epoch_lr,
        "step_seconds": round(state.step_seconds / max(state.loss_count, 1), 4),
        "train_seconds": round(state.train_seconds, 3),
    }
    if state.skipped_steps:
        record["skipped_steps"] = state.skipped_steps
        if main:
            log(f"[{setup.name}] epoch {epoch}: {state.skipped_steps} of {state.loss_count} optimizer steps skipped "
                f"(non-finite gradients from a finite loss)")
    improved = False
    if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
        metrics = evaluate_splits(setup) if main else None
        metrics = dist.broadcast_object(metrics) if runner.world_size > 1 else metrics
        if any(not math.isfinite(m["recall@1"]) for m in metrics.values()):
            raise FloatingPointError(f"Recall@1 is not finite after epoch {epoch} ({metrics}): the model diverged; lower --lr")
        record.update(metrics)
        score = metrics["val" if "val" in metrics else "test"]["recall@1"]
        if score > state.best_metric:
            state.best_metric, state.best_epoch, improved = score, epoch, True
    state.epoch, state.iteration, state.loss_sums, state.loss_count, state.step_seconds = epoch, 0, {}, 0, 0.0
    state.skipped_steps = 0
    ckpt = _checkpoint_state(setup, runner, state)
    if main:
        if improved:  # the best checkpoint: the weights only
            save_checkpoint(run.best_checkpoint, {"kind": "best", "job": cfg.job, "epoch": epoch,
                                                  "model": setup.model.state_dict(), "objective": setup.objective.state_dict()})
        save_checkpoint(run.last_checkpoint, ckpt)
        logger.write(record, improved)
    dist.barrier()  # rank 0 has written the epoch's files


def fit(setup: TrainingSetup) -> dict[str, Any]:
    """Train ``setup.model`` for ``cfg.epochs`` epochs (continuing from the last checkpoint when
    ``cfg.resume``); return the results dict also written to results.json.

    On return the model holds the weights of the best epoch (by Recall@1 on the validation
    split when there is one, on the test split otherwise).
    """
    cfg, run, model, device = setup.cfg, setup.run, setup.model, setup.device
    ctx = dist.current_context()
    forward = prepare_forward(model, cfg.channels_last, cfg.compile, "student")
    teacher_forward = None
    if setup.teacher is not None:
        teacher_forward = prepare_forward(setup.teacher, cfg.channels_last, cfg.compile, "teacher")
    objective = setup.objective
    if ctx.world_size > 1:
        dist.broadcast_module(setup.objective)  # a loss's own parameters start equal on every rank
        forward = dist.wrap_model(model, device, sync_bn=cfg.sync_bn)
        objective = DistributedObjective(setup.objective, ctx.world_size)
    runner = Runner(forward, teacher_forward, objective, make_scaler(cfg.precision, device), ctx.rank, ctx.world_size)
    state = LoopState()
    if cfg.resume and run.last_checkpoint.is_file():
        state = _restore(setup, runner, load_checkpoint(run.last_checkpoint, map_location=device))
        run.keep_metrics([r for r in run.read_metrics() if r.get("epoch", 0) <= state.epoch])
        log(f"[{setup.name}] resuming {run.path} {state.position(cfg.epochs, cfg.iterations_per_epoch)}")
    else:
        if cfg.resume:
            run.keep_metrics([])
            log(f"[{setup.name}] no checkpoint in {run.path} yet: starting from the beginning")
        if ctx.rank > 0:  # rank 0 keeps the single-process RNG stream; the others get their own
            seed_everything(dist.rank_seed(cfg.seed, ctx.rank))
    logger = EpochLog(setup, run.read_metrics() if cfg.resume else [])
    try:
        _epochs(setup, runner, state, logger)
    finally:
        logger.close()
    return finish(setup, state, logger.history)


def _epochs(setup: TrainingSetup, runner: Runner, state: LoopState, logger: EpochLog) -> None:
    cfg, device = setup.cfg, setup.device
    labels = [int(x) for x in setup.train_set.labels]
    cached = hasattr(setup.train_set, "cache")  # CachedViews: stored views and the teacher's embeddings of them
    sampler = EpochBatches()
    if cached:
        loader = make_loader(EpochItems(setup.train_set), sampler, cfg.num_workers,
                             pin_memory=device.type == "cuda", seed=cfg.seed)
    else:
        loader = training_loader(setup.train_set, sampler, device, cfg.input_pipeline, cfg.num_workers,
                                 cfg.progress, seed=cfg.seed)
    for epoch in range(state.epoch + 1, cfg.epochs + 1):
        started = time.perf_counter()
        batches = epoch_batches(labels, cfg.batch_size, cfg.m_per_class, cfg.iterations_per_epoch,
                                cfg.seed, epoch, runner.rank, runner.world_size)[state.iteration:]
        sampler.set([[(i, epoch) for i, _ in b] for b in batches] if cached else batches)
        setup.model.train()
        runner.objective.train()
        bar = tqdm(loader, total=cfg.iterations_per_epoch, initial=state.iteration, leave=False, dynamic_ncols=True,
                   desc=f"{setup.name} epoch {epoch}/{cfg.epochs}", disable=not (cfg.progress and is_main_process()))
        for batch in bar:
            step_started = time.perf_counter()
            with seeded_random(step_seed(cfg.seed, epoch, state.iteration + 1, runner.rank), device):
                parts, stepped = train_step(setup, runner, *batch)
            state.step_seconds += time.perf_counter() - step_started
            state.skipped_in_a_row = 0 if stepped else state.skipped_in_a_row + 1
            state.skipped_steps += not stepped
            if state.skipped_in_a_row >= MAX_SKIPPED_IN_A_ROW:
                raise FloatingPointError(f"non-finite gradients in {state.skipped_in_a_row} steps in a row (epoch {epoch}, "
                                         f"step {state.iteration + 1}): the model diverged; lower --lr or use --precision fp32")
            state.iteration += 1
            state.loss_count += 1
            for k, v in parts.items():
                state.loss_sums[k] = state.loss_sums.get(k, 0.0) + v
            bar.set_postfix(loss=f"{parts['loss']:.4f}", refresh=False)
            if state.iteration < cfg.iterations_per_epoch:
                stop = dist.any_rank(stop_requested(), device) if runner.world_size > 1 else stop_requested()
                if stop or (cfg.checkpoint_every and state.iteration % cfg.checkpoint_every == 0):
                    state.train_seconds += time.perf_counter() - started
                    started = time.perf_counter()
                    ckpt = _checkpoint_state(setup, runner, state)
                    if is_main_process():
                        save_checkpoint(setup.run.last_checkpoint, ckpt)
                    dist.barrier()  # the checkpoint is complete before any rank goes on (or stops)
                    if stop:
                        bar.close()
                        clear_stop()
                        where = state.position(cfg.epochs, cfg.iterations_per_epoch)
                        raise TrainingInterrupted(f"stopped {where}; continue with --resume "
                                                  f"(checkpoint {setup.run.last_checkpoint})")
        bar.close()
        epoch_lr = setup.optimizer.param_groups[0]["lr"]
        setup.scheduler.step()
        state.train_seconds += time.perf_counter() - started
        end_of_epoch(setup, runner, state, epoch, epoch_lr, logger)
        if dist.any_rank(stop_requested(), device) if runner.world_size > 1 else stop_requested():
            clear_stop()
            where = state.position(cfg.epochs, cfg.iterations_per_epoch)
            raise TrainingInterrupted(f"stopped {where}; continue with --resume "
                                      f"(checkpoint {setup.run.last_checkpoint})")


def finish(setup: TrainingSetup, state: LoopState, history: list[dict[str, Any]]) -> dict[str, Any]:
    """Load the best weights, save the model, write results.json; returns the results."""
    cfg, run, model = setup.cfg, setup.run, setup.model
    last = history[-1] if history else {}
    best_record = next((r for r in history if r.get("epoch") == state.best_epoch), last)
    evaluated = [r for r in history if "test" in r]
    test_best = max(evaluated, key=lambda r: r["test"]["recall@1"]) if evaluated else last
    if run.best_checkpoint.is_file():
        model.load_state_dict(load_checkpoint(run.best_checkpoint, map_location=setup.device)["model"])
    splits = list(setup.eval_sets)
    if is_main_process():
        model.save(run.model_dir, overwrite=True)
    results = {
        "job": cfg.job, "name": setup.name, "run_dir": str(run.path), "model_dir": str(run.model_dir),
        "selection_split": "val" if "val" in setup.eval_sets else "test",
        "best_epoch": state.best_epoch,
        "best": {s: best_record.get(s) for s in splits},
        "last": {"epoch": last.get("epoch"), **{s: last.get(s) for s in splits}},
        # chosen by the test split itself: an optimistic figure, for comparison only
        "test_selected": {"epoch": test_best.get("epoch"), "test": test_best.get("test")},
        "epochs": cfg.epochs, "train_seconds": round(state.train_seconds, 3),
        **setup.extra_results,
        "config": {**cfg.to_dict(), **setup.records},
    }
    if dist.current_context().world_size > 1:
        results["world_size"] = dist.current_context().world_size
    run.write_results(results)
    if is_main_process() and not cfg.keep_checkpoints:
        shutil.rmtree(run.checkpoint_dir, ignore_errors=True)
    dist.barrier()  # the saved model and results.json exist when any rank returns
    return results
