"""One rank of the check that the all-triplets angle term is shared out across processes.

Every rank builds the same float64 global batch (72 examples: two CPU tiles of end points,
one exact duplicate pair split across ranks), keeps the contiguous rows of its rank, and
evaluates RKD-DA and RKD-A through :func:`rkd_pml.distributed.distributed_rkd`; it also
evaluates the same losses on the whole batch in this one process (the reference). It
records the losses (with and without gradient), the gradient w.r.t. its own rows, the
Hessian block of its own rows applied to a direction (``create_graph=True``), and how many
vertex x end x end entries the angle kernel visited, with and without the process group.

Started by ``test_sharded_angle.py`` (FileStore rendezvous), or by hand::

    torchrun --standalone --nproc_per_node=4 tests/distributed/sharded_angle_worker.py --out /tmp/o
"""

from __future__ import annotations

import sys

import torch

from rkd_pml import RKDAngleLoss, RKDLoss
from rkd_pml.distributed import distributed_rkd
from rkd_pml.functional import angle_tiles

from ddp_launch import serve_rank  # the script's own folder is on sys.path

N_GLOBAL = 72
IN_DIM, STUDENT_DIM, TEACHER_DIM = 5, 6, 12
LOSSES = {"rkd": RKDLoss, "angle": RKDAngleLoss}

#: Entries (vertices x T x T) the eager angle kernel has visited in this process.
VISITED = [0]
_block_eager = angle_tiles.block_eager


def _counting_block_eager(ci, cj, bc, diag, need_grad):
    VISITED[0] += ci.shape[1] * ci.shape[2] * cj.shape[2]
    return _block_eager(ci, cj, bc, diag, need_grad)


angle_tiles.block_eager = _counting_block_eager


def global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``(N, IN_DIM)`` and teacher embeddings ``(N, TEACHER_DIM)``; rows 3 and 60
    are equal (an exact duplicate pair in both models, on different ranks)."""
    g = torch.Generator().manual_seed(4321)
    x = torch.randn(N_GLOBAL, IN_DIM, generator=g)
    x[60] = x[3]
    a = torch.randn(IN_DIM, 16, generator=g)
    b = torch.randn(16, TEACHER_DIM, generator=g)
    return x, torch.tanh(x @ a) @ b


def make_student() -> torch.nn.Module:
    torch.manual_seed(11)
    return torch.nn.Sequential(torch.nn.Linear(IN_DIM, 16), torch.nn.Tanh(), torch.nn.Linear(16, STUDENT_DIM))


def evaluate(loss_fn, emb, teacher, rows, direction) -> dict:
    """Loss (with and without gradient), its gradient w.r.t. ``emb[rows]`` and the Hessian
    block of those rows applied to ``direction``; the kernel entries visited for each."""
    out = {}
    VISITED[0] = 0
    with torch.no_grad():
        out["loss_no_grad"] = float(loss_fn(emb, ref_emb=teacher))
    out["visited_no_grad"] = VISITED[0]
    VISITED[0] = 0
    emb = emb.detach().requires_grad_(True)
    loss = loss_fn(emb, ref_emb=teacher)
    (grad,) = torch.autograd.grad(loss, emb, create_graph=True)
    out["visited"] = VISITED[0]
    (hvp,) = torch.autograd.grad((grad[rows] * direction).sum(), emb)
    out["loss"] = float(loss)
    out["grad"] = grad[rows].detach()
    out["hvp"] = hvp[rows]
    return out


def run_case(name: str, rank: int, world_size: int) -> dict:
    x, teacher = global_batch()
    n_local = N_GLOBAL // world_size
    rows = slice(rank * n_local, (rank + 1) * n_local)
    with torch.no_grad():
        emb = make_student()(x)
    direction = torch.randn(n_local, STUDENT_DIM, generator=torch.Generator().manual_seed(rank))
    ref = evaluate(LOSSES[name](), emb, teacher, rows, direction)
    loss_fn, _ = distributed_rkd(LOSSES[name]())
    # This process's rows only; the wrapper gathers the others (they come first-local).
    got = evaluate(loss_fn, emb[rows], teacher[rows], slice(None), direction)
    # The wrapped loss is W x the global-batch loss, and so are its derivatives.
    result = {"world_size": world_size}
    for key in ("loss", "loss_no_grad"):
        result[key] = got[key] / world_size
        result[key + "_reference"] = ref[key]
    for key in ("grad", "hvp"):
        result[key + "_max_diff"] = float((got[key] / world_size - ref[key]).abs().max())
        result[key + "_max_abs"] = float(ref[key].abs().max())
    for key in ("visited", "visited_no_grad"):
        result[key] = got[key]
        result[key + "_reference"] = ref[key]
    return result


def main(argv=None) -> int:
    return serve_rank(lambda rank, world_size: {"cases": {name: run_case(name, rank, world_size) for name in LOSSES}},
                      __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
