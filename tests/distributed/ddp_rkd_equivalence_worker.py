"""One rank of the DDP equivalence check for the RKD losses (CPU, gloo, float64).

Every rank builds the same global batch, keeps the rows ``rank::world_size`` (as a
DistributedSampler would), takes one SGD step of a DDP-wrapped student with the RKD loss in
PML's distributed wrappers, and compares with one single-process step on the whole batch,
which it computes itself. It writes ``rank<r>.json`` under ``--out``.

Started by ``test_distributed_equivalence.py`` (two processes, FileStore rendezvous), or by
hand::

    torchrun --standalone --nproc_per_node=2 tests/distributed/ddp_rkd_equivalence_worker.py --out /tmp/o
"""

from __future__ import annotations

import sys

import torch
from pytorch_metric_learning.miners import MultiSimilarityMiner, TripletMarginMiner
from pytorch_metric_learning.utils.distributed import (
    DistributedLossWrapper,
    DistributedMinerWrapper,
)
from torch.nn.parallel import DistributedDataParallel

from rkd_pml import RKDAngleLoss, RKDDistanceLoss, RKDLoss
from rkd_pml.distributed import distributed_rkd

from ddp_launch import serve_rank  # the script's own folder is on sys.path

N_GLOBAL = 16
N_CLASSES = 4
IN_DIM, STUDENT_DIM, TEACHER_DIM = 5, 6, 12
LR = 0.5

LOSSES = {"rkd": RKDLoss, "distance": RKDDistanceLoss, "angle": RKDAngleLoss}
MINERS = {
    "all": None,
    "multisimilarity": lambda: MultiSimilarityMiner(epsilon=0.5),
    "triplet_margin": lambda: TripletMarginMiner(margin=0.2, type_of_triplets="all"),
}
APIS = ("pml", "helper")


def case_names() -> list[str]:
    return [f"{api}-{loss}-{mining}" for api in APIS for loss in LOSSES for mining in MINERS]


def global_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs ``(N, IN_DIM)``, teacher embeddings ``(N, TEACHER_DIM)`` and labels ``(N,)``."""
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(N_GLOBAL, IN_DIM, generator=g)
    a = torch.randn(IN_DIM, 16, generator=g)
    b = torch.randn(16, TEACHER_DIM, generator=g)
    teacher = torch.tanh(x @ a) @ b
    labels = (torch.arange(N_GLOBAL) % N_CLASSES)[torch.randperm(N_GLOBAL, generator=g)]
    return x, teacher, labels


def make_student() -> torch.nn.Module:
    torch.manual_seed(7)
    return torch.nn.Sequential(
        torch.nn.Linear(IN_DIM, 16), torch.nn.Tanh(), torch.nn.Linear(16, STUDENT_DIM)
    )


def wrapped(api: str, loss_name: str, mining: str):
    loss = LOSSES[loss_name]()
    miner = MINERS[mining]() if MINERS[mining] else None
    if api == "helper":
        return distributed_rkd(loss, miner)
    return (
        DistributedLossWrapper(loss, efficient=False),
        DistributedMinerWrapper(miner, efficient=False) if miner is not None else None,
    )


def n_tuples(indices_tuple) -> int:
    if indices_tuple is None:
        return 0
    if len(indices_tuple) == 4:
        return len(indices_tuple[0]) + len(indices_tuple[2])
    return len(indices_tuple[0])


def n_cross_rank(indices_tuple, n_local: int) -> int:
    """Tuples that involve a row of another rank (the gathered batch starts with the local rows)."""
    if indices_tuple is None:
        return 0
    if len(indices_tuple) == 4:
        a1, p, a2, n = indices_tuple
        pos = (a1 >= n_local) | (p >= n_local)
        neg = (a2 >= n_local) | (n >= n_local)
        return int(pos.sum() + neg.sum())
    a, p, n = indices_tuple
    return int(((a >= n_local) | (p >= n_local) | (n >= n_local)).sum())


def max_abs_diff(xs, ys) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(xs, ys))


def run_case(name: str, rank: int, world_size: int) -> dict:
    api, loss_name, mining = name.split("-")
    x, teacher, labels = global_batch()
    rows = torch.arange(rank, N_GLOBAL, world_size)

    # Single-process reference: one step on the whole batch.
    ref_student = make_student()
    ref_opt = torch.optim.SGD(ref_student.parameters(), lr=LR)
    before = [p.detach().clone() for p in ref_student.parameters()]
    ref_loss_fn = LOSSES[loss_name]()
    ref_miner = MINERS[mining]() if MINERS[mining] else None
    emb = ref_student(x)
    ref_idx = ref_miner(emb, labels) if ref_miner is not None else None
    ref_loss = ref_loss_fn(emb, labels, ref_idx, ref_emb=teacher)
    ref_loss.backward()
    ref_grads = [p.grad.detach().clone() for p in ref_student.parameters()]
    ref_opt.step()

    # Distributed: local rows only, PML's wrappers relate the global batch.
    student = DistributedDataParallel(make_student())
    opt = torch.optim.SGD(student.parameters(), lr=LR)
    loss_fn, miner_fn = wrapped(api, loss_name, mining)
    emb = student(x[rows])
    idx = miner_fn(emb, labels[rows]) if miner_fn is not None else None
    loss = loss_fn(emb, labels[rows], idx, ref_emb=teacher[rows])
    loss.backward()
    grads = [p.grad.detach().clone() for p in student.parameters()]
    opt.step()

    return {
        "loss_returned": loss.item(),
        "loss_global": loss.item() / world_size,
        "loss_reference": ref_loss.item(),
        "max_grad_diff": max_abs_diff(grads, ref_grads),
        "max_param_diff": max_abs_diff(student.parameters(), ref_student.parameters()),
        "max_param_step": max_abs_diff(ref_student.parameters(), before),
        "max_abs_grad": max(float(g.abs().max()) for g in ref_grads),
        "n_tuples": n_tuples(idx),
        "n_tuples_reference": n_tuples(ref_idx),
        "n_cross_rank": n_cross_rank(idx, len(rows)),
    }


def capture(fn) -> dict:
    try:
        return {"value": fn(), "error_type": None, "error": None}
    except Exception as e:  # noqa: BLE001 - the type and message are what is checked
        return {"value": None, "error_type": type(e).__name__, "error": str(e)}


def run_probes(rank: int, world_size: int) -> dict:
    """Uses that must not give a wrong loss silently, and what they do instead."""
    x, teacher, labels = global_batch()
    rows = torch.arange(rank, N_GLOBAL, world_size)
    student = make_student()
    with torch.no_grad():
        emb_all = student(x)
    emb, t, y = emb_all[rows], teacher[rows], labels[rows]
    probes = {}

    probes["pml_efficient_with_labels"] = capture(
        lambda: DistributedLossWrapper(RKDLoss(), efficient=True)(emb, y, ref_emb=t).item()
    )
    probes["pml_efficient_without_labels"] = capture(
        lambda: DistributedLossWrapper(RKDLoss(), efficient=True)(emb, None, ref_emb=t).item()
    )

    ms = lambda: MultiSimilarityMiner(epsilon=0.5)  # noqa: E731
    reference = RKDLoss()(emb_all, labels, ms()(emb_all, labels), ref_emb=teacher).item()
    probes["mined_reference"] = {"value": reference}
    for key, miner in (
        ("efficient_miner", DistributedMinerWrapper(ms(), efficient=True)),
        ("local_miner", ms()),
    ):
        idx = miner(emb, y)
        value = DistributedLossWrapper(RKDLoss(), efficient=False)(emb, y, idx, ref_emb=t).item()
        probes[key] = {"value": value / world_size}

    n = 8 if rank == 0 else 6
    loss_fn, miner_fn = distributed_rkd(RKDLoss(), ms())
    probes["helper_uneven_loss"] = capture(
        lambda: loss_fn(emb_all[:n], None, ref_emb=teacher[:n]).item()
    )
    probes["helper_uneven_miner"] = capture(lambda: len(miner_fn(emb_all[:n], labels[:n])[0]))
    probes["helper_misaligned_teacher"] = capture(
        lambda: loss_fn(emb, None, ref_emb=t if rank == 0 else t[:-1]).item()
    )
    return probes


def main(argv=None) -> int:
    def results(rank: int, world_size: int) -> dict:
        cases = {name: run_case(name, rank, world_size) for name in case_names()}
        return {"world_size": world_size, "cases": cases, "probes": run_probes(rank, world_size)}

    return serve_rank(results, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
