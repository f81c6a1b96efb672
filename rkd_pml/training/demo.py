"""The demo: one teacher, then a triplet baseline and an RKD student for several seeds, on the
embedded digits, in about two minutes on one CPU core.

A single pair of student runs does not tell RKD from the baseline at this budget: the Recall@1
of one run moves by several points with the seed (the initialisation and the batches), and the
sign of the difference with it. So the students are trained for ``seeds`` seeds (a pair per
seed, both students with that seed), and the demo reports the mean and
the standard deviation over seeds, the difference per seed, and what they show.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..distributed.session import distributed_session
from .jobs import distill, train_baseline, train_teacher
from ..runs import RunDir, is_main_process, log
from ..runs.plot import plot_recall

#: The demo's settings: small models that learn digits at 32 px; one teacher and ``seeds``
#: student pairs take about two minutes on one CPU core.
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
    seeds=3,
)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard deviation (Bessel's correction; NaN for one value) of ``values``."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
    return mean, std


def compare(baseline: Sequence[float], rkd: Sequence[float]) -> dict[str, Any]:
    """The RKD-minus-baseline differences of paired per-seed figures, their mean, standard
    deviation and standard error (``std / sqrt(seeds)``), and a verdict that says only what
    they show: one method is called ahead only when it is ahead for every seed and the mean
    difference exceeds twice its standard error."""
    gaps = [r - b for b, r in zip(baseline, rkd)]
    mean, std = mean_std(gaps)
    error = std / math.sqrt(len(gaps))
    if len(gaps) < 2:
        verdict = "one seed cannot tell the two apart (a single run moves by several points with the seed)"
    elif (all(g > 0 for g in gaps) or all(g < 0 for g in gaps)) and abs(mean) > 2 * error:
        first, second = ("RKD-DA", "the baseline") if mean > 0 else ("the baseline", "RKD-DA")
        verdict = f"{first} ahead of {second} for each of the {len(gaps)} seeds, by more than twice the standard error"
    else:
        why = "the sign changes with the seed" if min(gaps) < 0 < max(gaps) or 0 in gaps else (
            "the mean is within twice its standard error")
        verdict = f"within what the seeds vary by ({why}): at this budget the demo does not separate the two"
    return {"per_seed": gaps, "mean": mean, "std": std, "standard_error": error, "verdict": verdict}


def format_table(rows: Sequence[Mapping[str, Any]], ks: Sequence[int] = (1, 2, 4, 8)) -> str:
    """A fixed-width table of Recall@K (in %) per model: the mean over seeds, then the standard
    deviation over seeds where a row has several."""
    header = f"{'model':<34}" + "".join(f"{'R@' + str(k):>12}" for k in ks)
    lines = [header, "-" * len(header)]
    for row in rows:
        metrics, spread = row.get("test") or {}, row.get("test_std") or {}
        cells = []
        for k in ks:
            key = f"recall@{k}"
            if key not in metrics:
                cells.append(f"{'-':>12}")
            elif key in spread and not math.isnan(spread[key]):
                cells.append(f"{f'{100 * metrics[key]:.1f} ±{100 * spread[key]:.1f}':>12}")
            else:
                cells.append(f"{100 * metrics[key]:>12.1f}")
        lines.append(f"{row['name']:<34}{''.join(cells)}")
    return "\n".join(lines)


def demo(out: str = "runs/demo", overwrite: bool = False, device: str = "auto", seed: int = 0,
         progress: bool = True, **settings: Any) -> dict[str, Any]:
    """One teacher (seed ``seed``), then a baseline and an RKD student for each of the seeds
    ``seed, seed + 1, ...`` (``settings["seeds"]`` of them), on the embedded digits data; prints
    and returns the Recall@K table (mean and standard deviation over seeds) and the per-seed
    Recall@1 differences, and writes ``out`` (the run directories: ``teacher``, ``baseline``
    and ``rkd`` for the first seed, ``baseline-seedS`` and ``rkd-seedS`` for the others;
    results.json, recall.png). ``settings`` override :data:`DEMO_SETTINGS`."""
    unknown = set(settings) - set(DEMO_SETTINGS)
    if unknown:
        raise ValueError(f"unknown demo settings {sorted(unknown)}; known: {sorted(DEMO_SETTINGS)}")
    s = {**DEMO_SETTINGS, **settings}
    if isinstance(s["seeds"], bool) or not isinstance(s["seeds"], int) or s["seeds"] < 1:
        raise ValueError(f"seeds must be an integer >= 1, got {s['seeds']!r}")
    with distributed_session(device):  # under torchrun: one process group for every run
        return _demo(out, overwrite, device, seed, progress, s)


def run_name(kind: str, index: int, seed: int) -> str:
    """``baseline``/``rkd`` for the first seed, ``baseline-seed3`` for the others."""
    return kind if index == 0 else f"{kind}-seed{seed}"


def _demo(out: str, overwrite: bool, device: str, seed: int, progress: bool, s: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    if not overwrite and Path(out).is_dir() and any(Path(out).iterdir()):
        # the demo cannot resume: its message names only what the demo has
        raise FileExistsError(f"output directory {out} already exists: pass --overwrite to replace the demo in it, "
                              "or choose another --out")
    seeds = [seed + i for i in range(s["seeds"])]
    with RunDir.create(out, overwrite=overwrite) as run:
        run.write_config({"job": "demo", "seed": seed, "device": device, **s})
        # digits has 5 training classes: too few for a validation split, so the epoch is
        # picked on the test classes (the results say so: selection_split "test")
        common = dict(
            dataset="digits", image_size=s["image_size"], epochs=s["epochs"], val_fraction=0.0,
            iterations_per_epoch=s["iterations_per_epoch"], batch_size=s["batch_size"], m_per_class=s["m_per_class"],
            lr=s["lr"], lr_milestones=tuple(s["lr_milestones"]), lr_gamma=s["lr_gamma"],
            train_transform=s["train_transform"], device=device, progress=progress,
            keep_checkpoints=False,  # each run's model/ holds its best weights: about 160 MB in all with 3 seeds
        )
        teacher = train_teacher(model=s["teacher"], embedding_dim=s["teacher_dim"], out=str(run.path / "teacher"),
                                seed=seed, **common)
        student = dict(embedding_dim=s["student_dim"], **common)
        best: dict[str, list[dict[str, float]]] = {"baseline": [], "rkd": []}
        for i, student_seed in enumerate(seeds):
            b = train_baseline(model=s["student"], out=str(run.path / run_name("baseline", i, student_seed)),
                               seed=student_seed, **student)
            r = distill(teacher=str(run.path / "teacher"), student=s["student"],
                        out=str(run.path / run_name("rkd", i, student_seed)), seed=student_seed, **student)
            best["baseline"].append(b["best"]["test"])
            best["rkd"].append(r["best"]["test"])
        rows = [{"name": f"teacher   {s['teacher']}-{s['teacher_dim']} (triplet)", "run": "teacher",
                 "runs": ["teacher"], "test": teacher["best"]["test"]}]
        for kind, label in (("baseline", f"baseline  {s['student']}-{s['student_dim']} (triplet)"),
                            ("rkd", f"RKD-DA    {s['student']}-{s['student_dim']}")):
            per_seed = best[kind]
            stats = {key: mean_std([m[key] for m in per_seed]) for key in per_seed[0]}
            rows.append({"name": label, "run": kind, "runs": [run_name(kind, i, x) for i, x in enumerate(seeds)],
                         "test": {k: v[0] for k, v in stats.items()}, "test_std": {k: v[1] for k, v in stats.items()},
                         "per_seed": per_seed})
        gap = compare([m["recall@1"] for m in best["baseline"]], [m["recall@1"] for m in best["rkd"]])
        table = format_table(rows)
        names = [name for row in rows for name in row["runs"]]
        histories = {name: RunDir(run.path / name).read_metrics() for name in names}
        if is_main_process():
            plot_recall(histories, run.plot_path, title="digits 5-9 (unseen): Recall@1 per epoch")
        results = {"job": "demo", "run_dir": str(run.path), "seeds": seeds, "rows": rows, "table": table,
                   "rkd_minus_baseline_recall@1": gap, "seconds": round(time.perf_counter() - started, 1)}
        run.write_results(results)
    log(f"\nRecall@K (%) on digits 5-9, classes never seen in training; students: mean ±std over {len(seeds)} "
        f"seed(s) {', '.join(map(str, seeds))}, one teacher (seed {seed}). Each run's epoch is picked on the test "
        "classes (digits has too few classes for a validation split).\n" + table)
    log(f"RKD-DA minus baseline, Recall@1 per seed: {' '.join(f'{100 * g:+.1f}' for g in gap['per_seed'])}"
        + (f" (mean {100 * gap['mean']:+.1f}, standard error {100 * gap['standard_error']:.1f} points)"
           if len(seeds) > 1 else "")
        + f": {gap['verdict']}.")
    log(f"wall time {results['seconds']:.0f} s; outputs in {run.path}")
    return results
