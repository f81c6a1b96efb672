"""One rank of the DDP check of RelationalDistillationTask (CPU, gloo, float64).

Every rank builds the same models and global batch of 8, keeps the rows ``rank::world_size``,
runs the DDP-wrapped task on them (models in eval mode, so that BatchNorm does not depend on
the split) and the plain task on the whole batch, and writes ``rank<r>.json`` under ``--out``:
the RKD terms of both and the largest difference of the student gradients.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import traceback

import timm
import torch
import torch.distributed as dist

from rkd_pml.tasks import RelationalDistillationTask


def _task():
    torch.manual_seed(0)
    student = timm.create_model("test_resnet", num_classes=4).double()
    teacher = timm.create_model("test_resnet", num_classes=4, channels=(16, 24, 32, 48)).double()
    teacher.pretrained_cfg = dict(student.pretrained_cfg)
    return RelationalDistillationTask(student, teacher, dtype=torch.float64, verbose=False), student


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--rank", type=int, required=True)
    p.add_argument("--world-size", type=int, required=True)
    p.add_argument("--init-method", required=True)
    a = p.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(8, 3, 32, 32, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (8,), generator=g)

    ref_task, ref_student = _task()
    ref_task.eval()
    ref = ref_task(x, y)
    ref["loss"].backward()

    dist.init_process_group("gloo", init_method=a.init_method, rank=a.rank, world_size=a.world_size,
                            timeout=datetime.timedelta(seconds=60))
    try:
        task, student = _task()
        task.prepare_distributed()
        task.eval()
        out = task(x[a.rank::a.world_size], y[a.rank::a.world_size])
        out["loss"].backward()
        diff = max(float((p.grad - q.grad).abs().max()) for p, q in zip(student.parameters(), ref_student.parameters()))
        scale = max(float(q.grad.abs().max()) for q in ref_student.parameters())
        result = {
            "distance": float(out["rkd_distance_loss"]), "angle": float(out["rkd_angle_loss"]),
            "distance_ref": float(ref["rkd_distance_loss"]), "angle_ref": float(ref["rkd_angle_loss"]),
            "max_grad_diff": diff, "max_abs_grad": scale,
            "eval_model_is_student": task.get_eval_model() is student,
            "wrapped": type(task.get_trainable_module()).__name__,
        }
    finally:
        dist.destroy_process_group()
    with open(os.path.join(a.out, f"rank{a.rank}.json"), "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:
        traceback.print_exc()
        sys.exit(1)
