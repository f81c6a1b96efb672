"""Running the training jobs on several processes, as started by ``torchrun``.

::

    torchrun --standalone --nproc_per_node=4 -m rkd_pml distill --teacher runs/teacher --batch-size 128 ...

:func:`distributed_session` recognises torchrun's environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``), starts the process group (NCCL with one GPU per process,
``cuda:LOCAL_RANK``; gloo on CPU) and always destroys it when the job ends, also on errors.
Without those variables, or with ``WORLD_SIZE=1``, it does nothing and the job runs exactly as
a single process. A process group that the caller initialised already is used as it is (and
left alone).

Under a process group of ``W > 1`` processes, a training job:

* splits each class-balanced batch of ``batch_size`` images (the same batches as a single
  process with the same seed) into ``W`` contiguous shares of ``batch_size / W`` images, one
  per process; ``batch_size`` is the global batch and must be divisible by ``W``;
* trains the model wrapped in ``DistributedDataParallel``; the frozen teacher runs on every
  process, unwrapped;
* computes every loss and mines every tuple on the gathered global batch
  (:func:`rkd_pml.distributed.distributed_rkd`): RKD relates every example of the global
  batch, not only those of one process. The wrapped loss is ``W`` x the global loss, so DDP's
  gradient average is the gradient of the global loss; the logged loss is divided by ``W``;
* writes, evaluates and plots on rank 0 only (the other ranks wait for it at a barrier),
  into the same run directory layout; the checkpoint also holds every rank's RNG state, and
  ``--resume`` loads it on every rank (the run directory must be on a file system that all
  processes see).

Equivalence with one process on the global batch: the forward pass of each example, the
teacher's embeddings, the loss and, up to floating-point summation order, the gradient and the
update are those of the single-process step when (a) the model has no BatchNorm in training
mode, or BatchNorm is synchronised (``sync_bn``, CUDA only): plain BatchNorm normalises each
process's share with that share's statistics, and its running statistics are those of
rank 0's share; (b) the training transform draws no random numbers (``train_transform="none"``);
each process draws its own augmentation; and (c) the tuples are not drawn at random: a random
miner (the distance-weighted one of the triplet recipe) draws, on each process, its own tuples
from the same distribution over the global batch, which gives the same expected gradient
but not the same sample.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

#: How long a collective (a barrier while rank 0 evaluates, for example) may wait; the
#: environment variable ``RKD_PML_DIST_TIMEOUT`` (seconds) overrides it.
PROCESS_GROUP_TIMEOUT = datetime.timedelta(minutes=60)


def process_group_timeout() -> datetime.timedelta:
    """``RKD_PML_DIST_TIMEOUT`` seconds when set, else :data:`PROCESS_GROUP_TIMEOUT`."""
    raw = os.environ.get("RKD_PML_DIST_TIMEOUT")
    if not raw:
        return PROCESS_GROUP_TIMEOUT
    try:
        seconds = float(raw)
    except ValueError:
        raise ValueError(f"RKD_PML_DIST_TIMEOUT must be a number of seconds, got {raw!r}") from None
    if seconds <= 0:
        raise ValueError(f"RKD_PML_DIST_TIMEOUT must be positive, got {raw!r}")
    return datetime.timedelta(seconds=seconds)


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: its rank, the number of processes, its local rank."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        """True when several processes train together."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE_PROCESS = DistributedContext()


def _is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def torchrun_environment() -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` from the variables torchrun sets, or None outside torchrun."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    raw = {k: os.environ.get(k) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    try:
        rank, world_size = int(raw["RANK"]), int(raw["WORLD_SIZE"])
        local_rank = int(raw["LOCAL_RANK"]) if raw["LOCAL_RANK"] is not None else rank
    except ValueError:
        raise ValueError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers (as torchrun sets them), got {raw}") from None
    if world_size < 1 or not 0 <= rank < world_size or local_rank < 0:
        raise ValueError(f"inconsistent torchrun environment {raw}")
    return rank, world_size, local_rank


def current_context() -> DistributedContext:
    """The context of the initialised process group, or :data:`SINGLE_PROCESS`."""
    if not _is_initialized():
        return SINGLE_PROCESS
    rank, world_size = dist.get_rank(), dist.get_world_size()
    env = torchrun_environment()
    local_rank = env[2] if env is not None and env[0] == rank else rank
    return DistributedContext(rank, world_size, local_rank, str(dist.get_backend()))


def _wants_cuda(device: Any) -> bool:
    name = str(device)
    if name == "auto":
        return torch.cuda.is_available()
    return name.startswith("cuda")


@contextlib.contextmanager
def distributed_session(device: Any = "auto") -> Iterator[DistributedContext]:
    """Start the process group of a torchrun launch for the block; destroy it afterwards.

    ``device`` ("auto", "cpu", "cuda", ...) picks the backend: NCCL (after
    ``torch.cuda.set_device(LOCAL_RANK)``) when it means CUDA, gloo otherwise. Outside torchrun
    or with ``WORLD_SIZE=1``, yields :data:`SINGLE_PROCESS` and does nothing; inside a process
    group initialised elsewhere, yields its context and leaves it initialised.
    """
    if _is_initialized():
        yield current_context()
        return
    env = torchrun_environment()
    if env is None or env[1] == 1:
        yield SINGLE_PROCESS
        return
    if not dist.is_available():
        raise RuntimeError("this PyTorch build has no torch.distributed: run a single process")
    rank, world_size, local_rank = env
    if str(device).startswith("mps"):
        raise ValueError("several processes train on CPU (gloo) or CUDA (NCCL), not on MPS; use --device cpu or cuda")
    cuda = _wants_cuda(device)
    kwargs: dict[str, Any] = {}
    if cuda:
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but no CUDA GPU is available; use --device cpu or auto")
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise ValueError(
                f"process with LOCAL_RANK {local_rank}, but only {count} CUDA device(s) are visible: "
                f"start at most {count} processes per node (torchrun --nproc_per_node)"
            )
        torch.cuda.set_device(local_rank)
        kwargs["device_id"] = torch.device("cuda", local_rank)
    backend = "nccl" if cuda else "gloo"
    dist.init_process_group(backend, timeout=process_group_timeout(), **kwargs)
    try:
        yield DistributedContext(rank, world_size, local_rank, backend)
    finally:
        dist.destroy_process_group()


def process_device(device: torch.device, ctx: DistributedContext) -> torch.device:
    """This process's device: ``cuda:LOCAL_RANK`` for CUDA, the CPU as it is."""
    if not ctx.enabled:
        return device
    nccl = "nccl" in str(ctx.backend)
    if device.type == "cuda":
        if not nccl:
            raise ValueError(
                f"the process group uses {ctx.backend!r}: training on CUDA with several processes needs NCCL"
            )
        if device.index is not None and device.index != ctx.local_rank:
            raise ValueError(
                f"with several processes each one uses the GPU of its LOCAL_RANK ({ctx.local_rank}), "
                f"not {device}: pass --device cuda (or auto)"
            )
        return torch.device("cuda", ctx.local_rank)
    if device.type == "cpu":
        if nccl and "gloo" not in str(ctx.backend):
            raise ValueError("the process group uses NCCL, which cannot train on the CPU; pass --device cuda (or auto)")
        return device
    raise ValueError(f"several processes train on CPU (gloo) or CUDA (NCCL), not on {device.type}")


def check_world_size(batch_size: int, world_size: int) -> None:
    """ValueError unless the global batch splits evenly across the processes."""
    if world_size > 1 and batch_size % world_size:
        raise ValueError(
            f"batch_size ({batch_size}) must be divisible by the number of processes ({world_size}): "
            f"--batch-size is the global batch, split evenly across processes; choose a multiple of "
            f"{world_size} (and of --m-per-class)"
        )


# --------------------------------------------------------------------------- collectives


def barrier() -> None:
    """Wait for every process (a no-op in a single process)."""
    if _is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (a picklable object; the identity in a single process)."""
    if not (_is_initialized() and dist.get_world_size() > 1):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` in a single process)."""
    if not (_is_initialized() and dist.get_world_size() > 1):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def any_rank(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True on every rank when ``flag`` is true on at least one."""
    if not (_is_initialized() and dist.get_world_size() > 1):
        return bool(flag)
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Copy the parameters and buffers of rank ``src``'s ``module`` to every rank."""
    if not (_is_initialized() and dist.get_world_size() > 1):
        return
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src=src)


# --------------------------------------------------------------------------- seeds and the model


def rank_seed(seed: int, rank: int, *position: int) -> int:
    """A seed for the RNGs of ``rank`` (> 0) derived from the run's seed (and a position)."""
    return int(np.random.SeedSequence([int(seed), 0x52414E4B, int(rank), *(int(p) for p in position)]).generate_state(1)[0])


def wrap_model(model: nn.Module, device: torch.device, sync_bn: bool = False) -> nn.Module:
    """``model`` in ``DistributedDataParallel`` (its BatchNorm layers synchronised with ``sync_bn``).

    The returned wrapper shares ``model``'s parameters: keep optimising, saving and evaluating
    ``model`` itself. ``sync_bn`` replaces the BatchNorm layers of ``model`` in place by
    ``SyncBatchNorm`` (same parameters and buffers, same state-dict keys).
    """
    from torch.nn.parallel import DistributedDataParallel

    if sync_bn:
        if device.type != "cuda":
            raise ValueError("sync_bn (--sync-bn) needs CUDA: SyncBatchNorm runs on GPUs only")
        converted = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if converted is not model:  # only when the model itself is a BatchNorm layer
            raise ValueError("sync_bn: the model itself is a BatchNorm layer")
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def check_sync_bn(sync_bn: bool, device: torch.device, ctx: DistributedContext) -> None:
    """ValueError for ``sync_bn`` with several processes off CUDA (a no-op in a single process)."""
    if sync_bn and ctx.enabled and device.type != "cuda":
        raise ValueError("--sync-bn needs CUDA (SyncBatchNorm runs on GPUs only); leave it out on CPU")


__all__ = [
    "DistributedContext",
    "PROCESS_GROUP_TIMEOUT",
    "SINGLE_PROCESS",
    "all_gather_object",
    "any_rank",
    "barrier",
    "broadcast_module",
    "broadcast_object",
    "check_sync_bn",
    "check_world_size",
    "current_context",
    "distributed_session",
    "process_group_timeout",
    "process_device",
    "rank_seed",
    "torchrun_environment",
    "wrap_model",
]
