"""One rank of the DDP equivalence check for PKT, SP, CC and relaxed contrastive (CPU, gloo, float64).

Every rank builds the same global batch, keeps the rows ``rank::world_size``, takes one SGD step
of a DDP-wrapped student with the loss wrapped by :func:`rkd_pml.distributed.distributed_rkd`,
and compares with one single-process step on the whole batch, which it computes itself. It
writes ``rank<r>.json`` under ``--out``. Started by ``test_relational_baselines_distributed.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from rkd_pml import CorrelationCongruenceLoss, PKTLoss, RelaxedContrastiveLoss, SimilarityPreservingLoss
from rkd_pml.distributed import distributed_rkd

sys.path.insert(0, str(Path(__file__).parent))
from ddp_launch import serve_rank  # noqa: E402
from ddp_rkd_equivalence_worker import N_GLOBAL, LR, global_batch, make_student, max_abs_diff  # noqa: E402

LOSSES = {
    "pkt": PKTLoss,
    "sp": SimilarityPreservingLoss,
    "cc": CorrelationCongruenceLoss,
    "relaxed-contrastive": RelaxedContrastiveLoss,
}


def run_case(name: str, rank: int, world_size: int) -> dict:
    x, teacher, labels = global_batch()
    rows = torch.arange(rank, N_GLOBAL, world_size)

    ref_student = make_student()
    ref_opt = torch.optim.SGD(ref_student.parameters(), lr=LR)
    before = [p.detach().clone() for p in ref_student.parameters()]
    ref_loss = LOSSES[name]()(ref_student(x), labels, ref_emb=teacher)
    ref_loss.backward()
    ref_grads = [p.grad.detach().clone() for p in ref_student.parameters()]
    ref_opt.step()

    student = DistributedDataParallel(make_student())
    opt = torch.optim.SGD(student.parameters(), lr=LR)
    loss_fn, _ = distributed_rkd(LOSSES[name]())
    loss = loss_fn(student(x[rows]), labels[rows], ref_emb=teacher[rows])
    loss.backward()
    grads = [p.grad.detach().clone() for p in student.parameters()]
    opt.step()
    return {
        "loss_global": loss.item() / world_size,
        "loss_reference": ref_loss.item(),
        "max_grad_diff": max_abs_diff(grads, ref_grads),
        "max_abs_grad": max(float(g.abs().max()) for g in ref_grads),
        "max_param_diff": max_abs_diff(student.parameters(), ref_student.parameters()),
        "max_param_step": max_abs_diff(ref_student.parameters(), before),
    }


def main(argv=None) -> int:
    return serve_rank(lambda rank, world_size: {"cases": {n: run_case(n, rank, world_size) for n in LOSSES}},
                      __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
