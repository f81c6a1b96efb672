"""The demo: teacher, triplet baseline and RKD student on the embedded digits, in about a minute."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..distributed.session import distributed_session
from .jobs import distill, train_baseline, train_teacher
from .logs import log
from .plot import plot_recall
from .run_dir import RunDir, is_main_process

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
        cells = "".join(f"{100 * metrics[f'recall@{k}']:>8.1f}" if f"recall@{k}" in metrics else f"{'-':>8}" for k in ks)
        lines.append(f"{row['name']:<34}{cells}")
    return "\n".join(lines)


def demo(out: str = "runs/demo", overwrite: bool = False, device: str = "auto", seed: int = 0,
         progress: bool = True, **settings: Any) -> dict[str, Any]:
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
    if not overwrite and Path(out).is_dir() and any(Path(out).iterdir()):
        # the demo cannot resume: its message names only what the demo has
        raise FileExistsError(f"output directory {out} already exists: pass --overwrite to replace the demo in it, "
                              "or choose another --out")
    with RunDir.create(out, overwrite=overwrite) as run:
        run.write_config({"job": "demo", "seed": seed, "device": device, **s})
        # digits has 5 training classes: too few for a validation split, so the epoch is
        # picked on the test classes (the results say so: selection_split "test")
        common = dict(
            dataset="digits", image_size=s["image_size"], epochs=s["epochs"], val_fraction=0.0,
            iterations_per_epoch=s["iterations_per_epoch"], batch_size=s["batch_size"], m_per_class=s["m_per_class"],
            lr=s["lr"], lr_milestones=tuple(s["lr_milestones"]), lr_gamma=s["lr_gamma"],
            train_transform=s["train_transform"], seed=seed, device=device, progress=progress,
            keep_checkpoints=False,  # each run's model/ holds its best weights: about 85 MB in all
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
        results = {"job": "demo", "run_dir": str(run.path), "rows": rows, "table": table,
                   "seconds": round(time.perf_counter() - started, 1)}
        run.write_results(results)
    log("\nRecall@K (%) on digits 5-9, classes never seen in training (epoch picked on them: digits has "
        "too few classes for a validation split):\n" + table)
    log(f"wall time {results['seconds']:.0f} s; outputs in {run.path}")
    return results
