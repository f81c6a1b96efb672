"""One rank of the check that RKD of the global batch is shared out across processes.

Every rank builds the same float64 global batch (72 examples: two CPU tiles of end points,
one exact duplicate pair split across ranks, one near-duplicate pair closer than the
duplicate tolerance and a near pair), keeps the contiguous rows of its rank, and
evaluates RKD-DA, RKD-A, RKD-D (alone, and as RKD-DA with angle weight 0), RKD-DA on
L2-normalised embeddings and RKD-DA on mined triplets through
:func:`rkd_pml.distributed.distributed_rkd`; it also evaluates the same losses on the whole
batch in this one process (the reference). It records the losses (with and without
gradient), the gradient w.r.t. its own rows (plain backward, and with ``create_graph=True``),
the Hessian block of its own rows applied to a direction, how many vertex x end x end entries
the angle kernel visited (forward and plain backward, and without gradient), with and
without the process group, and whether the loss took the shared path.

Started by ``test_sharded_angle.py`` (FileStore rendezvous), or by hand::

    torchrun --standalone --nproc_per_node=4 tests/distributed/sharded_angle_worker.py --out /tmp/o
"""

from __future__ import annotations

import sys

import torch

from pytorch_metric_learning.miners import TripletMarginMiner

from rkd_pml import RKDAngleLoss, RKDDistanceLoss, RKDLoss
from rkd_pml._pml import LpDistance
from rkd_pml.distributed import distributed_rkd
from rkd_pml.functional import angle_tiles

from ddp_launch import serve_rank  # the script's own folder is on sys.path

N_GLOBAL = 72
IN_DIM, STUDENT_DIM, TEACHER_DIM = 5, 6, 12
LOSSES = {
    "rkd": RKDLoss,
    "angle": RKDAngleLoss,
    "distance": RKDDistanceLoss,
    "rkd_distance_only": lambda: RKDLoss(angle_weight=0.0),
    "rkd_normalized": lambda: RKDLoss(distance=LpDistance(normalize_embeddings=True)),
    "rkd_mined": RKDLoss,
}
#: Cases whose loss is computed whole on every process (mined tuples).
WHOLE = {"rkd_mined"}

#: Entries (vertices x T x T) the eager angle kernel has visited in this process.
VISITED = [0]
_block_eager = angle_tiles.block_eager


def _counting_block_eager(ci, cj, bc, diag, need_grad):
    VISITED[0] += ci.shape[1] * ci.shape[2] * cj.shape[2]
    return _block_eager(ci, cj, bc, diag, need_grad)


angle_tiles.block_eager = _counting_block_eager


def global_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs ``(N, IN_DIM)``, teacher embeddings ``(N, TEACHER_DIM)`` and labels ``(N,)``;
    rows 3 and 60 are equal (an exact duplicate pair in both models, on different ranks), row
    41 is row 7 moved by 1e-9 (a duplicate within the tolerance) and row 30 is row 50 moved by
    1e-2 (a near pair; one 1e-3 apart is resolved in float64 only to about 1e-10 of the
    gradient, which then differs between two row orders of the same batch in one process)."""
    g = torch.Generator().manual_seed(4321)
    x = torch.randn(N_GLOBAL, IN_DIM, generator=g)
    x[60] = x[3]
    x[41] = x[7] + 1e-9
    x[30] = x[50] + 1e-2
    a = torch.randn(IN_DIM, 16, generator=g)
    b = torch.randn(16, TEACHER_DIM, generator=g)
    labels = torch.arange(N_GLOBAL) % 5
    return x, torch.tanh(x @ a) @ b, labels


def make_student() -> torch.nn.Module:
    torch.manual_seed(11)
    return torch.nn.Sequential(torch.nn.Linear(IN_DIM, 16), torch.nn.Tanh(), torch.nn.Linear(16, STUDENT_DIM))


def _in_graph(loss: torch.Tensor, name: str) -> bool:
    seen, todo = set(), [loss.grad_fn]
    while todo:
        fn = todo.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if type(fn).__name__ == name:
            return True
        todo.extend(f for f, _ in fn.next_functions)
    return False


def evaluate(loss_fn, emb, teacher, rows, direction, call) -> dict:
    """Loss (with and without gradient), its gradient w.r.t. ``emb[rows]`` (plain and with
    ``create_graph``) and the Hessian block of those rows applied to ``direction``; the kernel
    entries visited by the forward and plain backward pass, and without gradient."""
    out = {}
    VISITED[0] = 0
    with torch.no_grad():
        out["loss_no_grad"] = float(call(loss_fn, emb, teacher))
    out["visited_no_grad"] = VISITED[0]
    VISITED[0] = 0
    emb = emb.detach().requires_grad_(True)
    loss = call(loss_fn, emb, teacher)
    out["shared"] = _in_graph(loss, "_SharedRKDBackward")
    (grad,) = torch.autograd.grad(loss, emb)
    out["visited"] = VISITED[0]
    loss = call(loss_fn, emb, teacher)
    (grad2,) = torch.autograd.grad(loss, emb, create_graph=True)
    (hvp,) = torch.autograd.grad((grad2[rows] * direction).sum(), emb)
    out["loss"] = float(loss)
    out["grad"] = grad[rows]
    out["grad2"] = grad2[rows].detach()
    out["hvp"] = hvp[rows]
    return out


def run_case(name: str, rank: int, world_size: int) -> dict:
    x, teacher, labels = global_batch()
    n_local = N_GLOBAL // world_size
    rows = slice(rank * n_local, (rank + 1) * n_local)
    with torch.no_grad():
        emb = make_student()(x)
    direction = torch.randn(n_local, STUDENT_DIM, generator=torch.Generator().manual_seed(rank))
    miner = TripletMarginMiner(margin=0.5, type_of_triplets="all") if name in WHOLE else None

    def call(lbl):
        def run(fn, e, t):
            if isinstance(fn, tuple):  # (loss_fn, miner_fn) of distributed_rkd
                fn, mine = fn
            else:
                fn, mine = fn, miner
            return fn(e, lbl, mine(e, lbl) if mine is not None else None, ref_emb=t)

        return run

    ref = evaluate(LOSSES[name](), emb, teacher, rows, direction, call(labels))
    wrapped = distributed_rkd(LOSSES[name](), miner)
    # This process's rows only; the wrapper gathers the others (they come first-local).
    got = evaluate(wrapped, emb[rows], teacher[rows], slice(None), direction, call(labels[rows]))
    # The wrapped loss is W x the global-batch loss, and so are its derivatives.
    result = {"world_size": world_size, "shared": got["shared"], "shared_reference": ref["shared"]}
    for key in ("loss", "loss_no_grad"):
        result[key] = got[key] / world_size
        result[key + "_reference"] = ref[key]
    for key in ("grad", "grad2", "hvp"):
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
