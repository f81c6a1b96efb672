#!/usr/bin/env python
"""Render the reproduction study's report (Markdown + figure) from its records.

Everything in the report is computed from ``<out>/records.jsonl`` and ``<out>/study.json``
written by ``benchmarks/reproduce.py``; nothing is typed in by hand::

    python benchmarks/report.py --out benchmarks/results/reproduce \\
        --md docs/RESULTS.md --png docs/results_recall_vs_dim.png
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

#: rows of the main tables: (method, student L2)
TABLE_ROWS = [
    ("triplet", True), ("triplet", False),
    ("fitnet", True), ("fitnet", False),
    ("darkrank", True), ("darkrank", False),
    ("rkd-d", True), ("rkd-d", False),
    ("rkd-a", True), ("rkd-a", False),
    ("rkd-da", True), ("rkd-da", False),
]
LABELS = {
    "triplet": "Triplet (no teacher)", "fitnet": "FitNet", "darkrank": "DarkRank",
    "rkd-d": "RKD-D", "rkd-a": "RKD-A", "rkd-da": "RKD-DA", "self": "Self-distillation (RKD-DA)",
    "self-long": "Self-distillation (RKD-DA) at the teacher's budget", "teacher": "Teacher (triplet)",
}
#: self-distillation (student = the teacher's architecture): the students' budget, the teacher's budget
SELF_METHODS = ("self", "self-long")
PROTOCOLS = {"selected": "epoch chosen on validation", "best_on_test": "best test epoch (paper's protocol)"}
KS = (1, 2, 4, 8)


# --------------------------------------------------------------------------- loading and statistics


def load(out: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The study's description and its records (one per run key), as benchmarks/reproduce.py wrote them."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import reproduce

    study = json.loads((out / "study.json").read_text())
    return study, list(reproduce.read_records(out).values())


def recall(rec: dict[str, Any], protocol: str, k: int = 1) -> float | None:
    test = (rec.get(protocol) or {}).get("test") or {}
    value = test.get(f"recall@{k}")
    return None if value is None else 100.0 * float(value)


class Index:
    """Records by (method, l2, dim) -> {seed: record}."""

    def __init__(self, records: Iterable[dict[str, Any]]):
        self.by: dict[tuple, dict[int, dict[str, Any]]] = {}
        self.teachers: dict[int, dict[str, Any]] = {}
        for r in records:
            if r["kind"] == "teacher":
                self.teachers[int(r["seed"])] = r
            else:
                self.by.setdefault((r["method"], bool(r["l2"]), int(r["dim"])), {})[int(r["seed"])] = r

    def values(self, method: str, l2: bool, dim: int, protocol: str, k: int = 1) -> dict[int, float]:
        runs = self.by.get((method, l2, dim), {})
        out = {}
        for seed, rec in runs.items():
            v = recall(rec, protocol, k)
            if v is not None:
                out[seed] = v
        return out

    def self_values(self, protocol: str, k: int = 1, method: str = "self") -> dict[int, float]:
        out = {}
        for (m, _l2, _dim), runs in self.by.items():
            if m == method:
                for seed, rec in runs.items():
                    v = recall(rec, protocol, k)
                    if v is not None:
                        out[seed] = v
        return out

    def teacher_values(self, protocol: str, k: int = 1) -> dict[int, float]:
        return {s: v for s, r in self.teachers.items() if (v := recall(r, protocol, k)) is not None}

    def sizes(self) -> list[int]:
        return sorted({d for (m, _l2, d) in self.by if m not in SELF_METHODS})


def mean_std(values: Iterable[float]) -> tuple[float, float, int] | None:
    values = list(values)
    if not values:
        return None
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.fmean(values), std, len(values)


def cell(values: dict[int, float], n_expected: int, bold: bool = False) -> str:
    s = mean_std(values.values())
    if s is None:
        return "–"
    mean, std, n = s
    text = f"{mean:.1f} ± {std:.1f}" if n > 1 else f"{mean:.1f}"
    if bold:
        text = f"**{text}**"
    return text + (f" (n={n})" if n != n_expected else "")


def paired_diff(a: dict[int, float], b: dict[int, float]) -> tuple[float, float, int, int] | None:
    """Mean and std of a - b over the seeds both have; seeds where a > b; seeds compared."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    diffs = [a[s] - b[s] for s in seeds]
    std = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
    return statistics.fmean(diffs), std, sum(d > 0 for d in diffs), len(diffs)


def fmt_diff(d: tuple[float, float, int, int] | None) -> str:
    if d is None:
        return "n/a"
    mean, std, wins, n = d
    noise = " (within noise)" if n > 1 and abs(mean) <= std else ""
    return f"{mean:+.1f} pts, {wins}/{n} seeds{noise}"


# --------------------------------------------------------------------------- tables


def table_r1(idx: Index, protocol: str, sizes: Sequence[int], n_seeds: int) -> str:
    head = "| Method | student L2 | " + " | ".join(f"d = {d}" for d in sizes) + " |"
    lines = [head, "|" + "---|" * (2 + len(sizes))]
    # best mean per column in bold
    best: dict[int, float] = {}
    for d in sizes:
        means = [s[0] for m, l2 in TABLE_ROWS if (s := mean_std(idx.values(m, l2, d, protocol).values()))]
        if means:
            best[d] = max(means)
    for method, l2 in TABLE_ROWS:
        if not any(idx.by.get((method, l2, d)) for d in sizes):
            continue
        cells = []
        for d in sizes:
            vals = idx.values(method, l2, d, protocol)
            s = mean_std(vals.values())
            cells.append(cell(vals, n_seeds, bold=s is not None and d in best and math.isclose(s[0], best[d])))
        lines.append(f"| {LABELS[method]} | {'yes' if l2 else 'no'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table_recall_at_k(idx: Index, dim: int, n_seeds: int, recipe: dict[str, Any], n_teachers: int) -> str:
    head = "| Model | Method | student L2 | " + " | ".join(f"R@{k}" for k in KS) + " | R@1, best test epoch |"
    lines = [head, "|" + "---|" * (4 + len(KS))]
    tname = f"{recipe['teacher_model']}-{recipe['teacher_dim']}"
    sname = f"{recipe['student_model']}-{dim}"

    def row(model: str, label: str, l2: str, getter) -> None:
        cells = [cell(getter("selected", k), n_expected) for k in KS]
        cells.append(cell(getter("best_on_test", 1), n_expected))
        lines.append(f"| {model} | {label} | {l2} | " + " | ".join(cells) + " |")

    if idx.teachers:
        n_expected = n_teachers
        row(tname, LABELS["teacher"], "yes", lambda p, k: idx.teacher_values(p, k))
    n_expected = n_seeds
    for method in SELF_METHODS:
        if idx.self_values("selected", method=method):
            row(tname, _self_label(method, recipe), "no", lambda p, k, m=method: idx.self_values(p, k, m))
    for method, l2 in TABLE_ROWS:
        if idx.by.get((method, l2, dim)):
            row(sname, LABELS[method], "yes" if l2 else "no",
                lambda p, k, m=method, l=l2: idx.values(m, l, dim, p, k))
    return "\n".join(lines)


def _self_label(method: str, recipe: dict[str, Any]) -> str:
    if method == "self-long":
        return f"Self-distillation at the teacher's budget ({recipe['teacher_iterations']} iterations)"
    return f"{LABELS['self']}, students' budget ({recipe['iterations']} iterations)"


def _self_vs_teacher(idx: Index, protocol: str, method: str):
    """(self-distilled values, teacher values paired by seed, paired difference, iterations) or None."""
    s, t = idx.self_values(protocol, method=method), idx.teacher_values(protocol)
    if not s or not t:
        return None
    if len(t) == 1:  # one teacher shared by every seed
        tv = next(iter(t.values()))
        t = {seed: tv for seed in s}
    iterations = {r["iterations"] for (m, _l2, _d), runs in idx.by.items() if m == method for r in runs.values()}
    return s, t, paired_diff(s, t), "/".join(map(str, sorted(iterations)))


def table_self(idx: Index, recipe: dict[str, Any], n_seeds: int) -> str:
    """Teacher and self-distilled students at both budgets: Recall@1 (%), val-selected and best-on-test."""
    lines = ["| Run | iterations | R@1 val-selected | R@1 best-on-test | val-selected R@1 per seed |",
             "|---|---|---|---|---|"]

    def per_seed(values: dict[int, float]) -> str:
        return ", ".join(f"s{s}: {v:.1f}" for s, v in sorted(values.items())) or "–"

    n_teachers, teacher = len(idx.teachers), idx.teacher_values("selected")
    lines.append(f"| {LABELS['teacher']} | {recipe['teacher_iterations']} | {cell(teacher, n_teachers)} | "
                 f"{cell(idx.teacher_values('best_on_test'), n_teachers)} | {per_seed(teacher)} |")
    for method in SELF_METHODS:
        sel = idx.self_values("selected", method=method)
        iters = recipe["teacher_iterations"] if method == "self-long" else recipe["iterations"]
        lines.append(f"| {_self_label(method, recipe)} | {iters} | {cell(sel, n_seeds)} | "
                     f"{cell(idx.self_values('best_on_test', method=method), n_seeds)} | {per_seed(sel)} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- claims


def _per_size(idx: Index, sizes, protocol, a: tuple[str, bool], b: tuple[str, bool]):
    return {d: paired_diff(idx.values(*a, d, protocol), idx.values(*b, d, protocol)) for d in sizes}


def _verdict(diffs: dict[int, Any]) -> tuple[str, str]:
    known = {d: x for d, x in diffs.items() if x is not None}
    if not known:
        return "not measured", ""
    held = [d for d, x in known.items() if x[0] > 0]
    margins = "; ".join(f"d={d}: {fmt_diff(x)}" for d, x in sorted(known.items()))
    if len(held) == len(known):
        verdict = "held" + (f" at all {len(known)} sizes" if len(known) > 1 else "")
    elif not held:
        verdict = "did not hold" + (f" at any of the {len(known)} sizes" if len(known) > 1 else "")
    else:
        verdict = f"did not hold at every size (held at {len(held)} of {len(known)})"
    if len(known) < len(diffs):
        verdict += f" [only {len(known)} of {len(diffs)} sizes measured]"
    return verdict, margins


def claims(idx: Index, sizes: Sequence[int], protocol: str) -> list[tuple[str, str, str]]:
    """(claim, verdict, margins) for one protocol."""
    out = []
    rkd, trip, trip_nol2 = ("rkd-da", False), ("triplet", True), ("triplet", False)

    v, m = _verdict(_per_size(idx, sizes, protocol, rkd, trip))
    extra = _verdict(_per_size(idx, sizes, protocol, rkd, trip_nol2))
    out.append(("RKD (RKD-DA, no student L2, the paper's recipe) beats the triplet-trained student "
                "(with L2) of the same size at every embedding size", v,
                m + (f". Against the triplet student without L2: {extra[0]} ({extra[1]})" if extra[1] else "")))

    # sensitivity to small sizes: drop from the largest to the smallest size
    if len(sizes) >= 2:
        lo, hi = min(sizes), max(sizes)
        drops = {}
        for name, key in (("RKD-DA", rkd), ("triplet", trip)):
            a = mean_std(idx.values(*key, hi, protocol).values())
            b = mean_std(idx.values(*key, lo, protocol).values())
            drops[name] = None if a is None or b is None else (a[0] - b[0], a[0], b[0])
        if all(drops.values()):
            r, t = drops["RKD-DA"], drops["triplet"]
            verdict = "held" if r[0] < t[0] else "did not hold"
            if r[0] < t[0] and t[0] > 0 and r[0] > 0.5 * t[0]:
                verdict = "held, but not by much"
            margins = (f"Recall@1 lost from d={hi} to d={lo}: RKD-DA {r[0]:+.1f} pts ({r[1]:.1f} -> {r[2]:.1f}), "
                       f"triplet {t[0]:+.1f} pts ({t[1]:.1f} -> {t[2]:.1f})")
        else:
            verdict, margins = "not measured", ""
        out.append(("RKD is much less sensitive to small embedding sizes than the triplet student", verdict, margins))

    v, m = _verdict(_per_size(idx, sizes, protocol, rkd, ("rkd-da", True)))
    others = []
    for name in ("rkd-d", "rkd-a"):
        diffs = _per_size(idx, sizes, protocol, (name, False), (name, True))
        known = [x for x in diffs.values() if x is not None]
        if known:
            others.append(f"{LABELS[name]}: no-L2 better at {sum(x[0] > 0 for x in known)} of {len(known)} sizes")
    out.append(("RKD without student L2 beats RKD with it (RKD-DA)", v, m + (". " + "; ".join(others) if others else "")))

    # two budgets: the students' (as every other student) and the teacher's ("self-long")
    verdicts, margins = [], []
    for method, budget in (("self", "at the students' budget"), ("self-long", "at the teacher's budget")):
        pair = _self_vs_teacher(idx, protocol, method)
        if pair is None:
            continue
        s, t, d, iterations = pair
        sm, tm = mean_std(s.values()), mean_std(t.values())
        verdicts.append(f"{'held' if d[0] > 0 else 'did not hold'} {budget} ({iterations} iterations)")
        margins.append(f"{budget}: self-distilled {sm[0]:.1f} vs teacher {tm[0]:.1f}, {fmt_diff(d)}")
    if margins:
        margins.append("the paper trains the self-distilled student for twice the teacher's budget")
    margin = "; ".join(margins)
    out.append(("The self-distilled student beats its teacher", "; ".join(verdicts) or "not measured",
                margin[:1].upper() + margin[1:]))

    vd = _per_size(idx, sizes, protocol, rkd, ("rkd-d", False))
    va = _per_size(idx, sizes, protocol, rkd, ("rkd-a", False))
    both = {d: (None if vd[d] is None or va[d] is None else min(vd[d], va[d], key=lambda x: x[0])) for d in sizes}
    v, _ = _verdict(both)
    m = "; ".join(f"d={d}: vs RKD-D {fmt_diff(vd[d])}, vs RKD-A {fmt_diff(va[d])}" for d in sizes
                  if vd[d] is not None or va[d] is not None)
    out.append(("RKD-DA beats RKD-D and RKD-A alone (no student L2)", v, m))

    for base in ("fitnet", "darkrank"):
        parts = []
        for l2 in (True, False):
            diffs = _per_size(idx, sizes, protocol, rkd, (base, l2))
            known = {d: x for d, x in diffs.items() if x is not None}
            if known:
                parts.append(f"vs {LABELS[base]} {'with' if l2 else 'without'} L2: RKD-DA ahead at "
                             f"{sum(x[0] > 0 for x in known.values())} of {len(known)} sizes ("
                             + ", ".join(f"d={d} {x[0]:+.1f}" for d, x in sorted(known.items())) + ")")
            tdiff = _per_size(idx, sizes, protocol, (base, l2), trip)
            tk = {d: x for d, x in tdiff.items() if x is not None}
            if tk:
                parts.append(f"{LABELS[base]} {'with' if l2 else 'without'} L2 vs triplet: "
                             + ", ".join(f"d={d} {x[0]:+.1f}" for d, x in sorted(tk.items())))
        if parts:
            v, _ = _verdict({d: x for d, x in _per_size(idx, sizes, protocol, rkd, (base, True)).items()})
            out.append((f"RKD-DA beats {LABELS[base]} (the paper's {LABELS[base]} row uses L2)", v, "; ".join(parts)))
    return out


# --------------------------------------------------------------------------- figure


def plot(idx: Index, sizes: Sequence[int], path: Path, recipe: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(14, 4.8), dpi=110)
    methods = [m for m in ("triplet", "fitnet", "darkrank", "rkd-d", "rkd-a", "rkd-da")]
    for i, protocol in enumerate(("selected", "best_on_test")):
        ax = fig.add_subplot(1, 2, i + 1)
        for c, method in enumerate(methods):
            for l2, style in ((False, "-"), (True, "--")):
                xs, ys, es = [], [], []
                for d in sizes:
                    s = mean_std(idx.values(method, l2, d, protocol).values())
                    if s:
                        xs.append(d)
                        ys.append(s[0])
                        es.append(s[1])
                if xs:
                    ax.errorbar(xs, ys, yerr=es, fmt=style, marker="o", markersize=4, capsize=3, color=f"C{c}",
                                label=f"{LABELS[method]}{' + L2' if l2 else ''}")
        t = mean_std(idx.teacher_values(protocol).values())
        if t:
            ax.axhline(t[0], color="black", linestyle=":",
                       label=f"teacher {recipe['teacher_model']}-{recipe['teacher_dim']}")
        for method, style, label in (("self", "-.", "self-distilled (teacher arch.)"),
                                     ("self-long", "--", "self-distilled, teacher's budget")):
            s = mean_std(idx.self_values(protocol, method=method).values())
            if s:
                ax.axhline(s[0], color="grey", linestyle=style, label=label)
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(sizes))
        ax.set_xticklabels([str(d) for d in sizes])
        ax.set_xlabel("student embedding size")
        ax.set_ylabel("test Recall@1 (%)")
        ax.set_title(f"{recipe['student_model']} students: {PROTOCOLS[protocol]}", fontsize=10)
        ax.grid(True, alpha=0.3)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, fontsize=8, loc="center right", frameon=False)
    fig.suptitle("Recall@1 on unseen Omniglot characters vs embedding size (mean ± std over seeds)"
                 if recipe["dataset"] == "omniglot" else "Recall@1 vs embedding size (mean ± std over seeds)",
                 fontsize=11)
    fig.tight_layout(rect=(0, 0, 0.83, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- markdown


def _student_drop(recipe: dict[str, Any]) -> str:
    """The students' learning-rate drop as benchmarks/reproduce.py schedules it."""
    epochs = recipe["iterations"] // recipe["eval_every"]
    drop = min(max(1, round(recipe["lr_drop_at"] * epochs)), epochs)
    return f"x0.1 after iteration {drop * recipe['eval_every']}" if drop < epochs else "constant"


def planned_keys(study: dict[str, Any]) -> set[str] | None:
    """The runs planned by the study's commands, re-planned with benchmarks/reproduce.py (None: not possible)."""
    try:
        import reproduce

        return {k for s in study.get("sessions", []) if s.get("command")
                for k in reproduce.planned_keys(s["command"], study["recipe"])}
    except (Exception, SystemExit):  # noqa: BLE001 - fall back to the sessions' counts
        return None


def _status(study: dict[str, Any], records: list[dict[str, Any]]) -> str:
    keys = planned_keys(study)
    if keys is None:
        planned = max((s.get("planned", 0) for s in study.get("sessions", [])), default=0)
        done, missing = len(records), []
    else:
        planned = len(keys)
        missing = sorted(keys - {r["key"] for r in records})
        done = planned - len(missing)
    if done >= planned:
        return f"complete: all {planned} planned runs recorded"
    shown = ", ".join(f"`{k}`" for k in missing[:12]) + (f" and {len(missing) - 12} more" if len(missing) > 12 else "")
    return (f"**partial: {done} of {planned} planned runs recorded**" + (f" (missing: {shown})" if missing else "")
            + "; the study is still running or was stopped, and the same command continues it")


def _teacher_budget(recipe: dict[str, Any]) -> str:
    """The teacher's schedule as benchmarks/reproduce.py sets it (also the self-long variant's)."""
    epochs = recipe["teacher_iterations"] // recipe["teacher_eval_every"]
    drops = sorted({min(max(1, round(f * epochs)), epochs) for f in (25 / 40, 30 / 40, 35 / 40)})
    drops = [d * recipe["teacher_eval_every"] for d in drops if d < epochs]
    return (f"{recipe['teacher_iterations']} iterations, Adam lr {recipe['teacher_lr']:g}"
            + (f" x0.5 after iterations {', '.join(map(str, drops))}" if drops else "")
            + f", evaluated every {recipe['teacher_eval_every']} iterations")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min {s:02d} s"


def render_report(out: str | os.PathLike, md_path: str | os.PathLike, png_path: str | os.PathLike) -> Path:
    """Write the Markdown report and its figure from the study in ``out``; return the report path."""
    out, md_path, png_path = Path(out), Path(md_path), Path(png_path)
    study, records = load(out)
    recipe = study["recipe"]
    idx = Index(records)
    sessions = study.get("sessions", [])
    seeds = sorted({int(r["seed"]) for r in records if r["kind"] != "teacher"})
    n_seeds = len(seeds)
    n_teachers = len(idx.teachers)
    sizes = idx.sizes()
    plot(idx, sizes, png_path, recipe)

    sched_students = recipe["iterations"]
    lines: list[str] = []
    add = lines.append
    add("# Reproduction of the RKD paper's metric-learning claims on Omniglot")
    add("")
    add("<!-- Generated by benchmarks/report.py from the study's records; do not edit by hand. -->")
    add("")
    add(f"Status: {_status(study, records)}.")
    add("")
    add("Park et al. (CVPR 2019) distil a ResNet-50 teacher into ResNet-18 students on CUB-200-2011, Cars196 and "
        "Stanford Online Products. Those data sets cannot be downloaded here, so this study repeats the "
        "experiment design at CPU scale on real data: "
        + ("the Omniglot characters of `images_background_small1.zip` (136 characters x 20 drawings)"
           if recipe["dataset"] == "omniglot" else f"the `{recipe['dataset']}` data set")
        + ", with every model trained from scratch. Absolute numbers are not comparable with the paper's; "
          "the claims are about the ordering of methods, which is what is checked below.")
    add("")
    add("## Setup")
    add("")
    add(f"- Data: {recipe['dataset']} at {recipe['image_size']} px; the first half of the classes trains, the second "
        f"half (never seen in training) is the test set; {recipe['val_fraction']:.0%} of the training classes are held "
        "out as a class-disjoint **validation split used for model selection**. Train augmentation: "
        f"`{recipe['train_transform']}`"
        + (" (the recipe scaled to the image size: resize to 37 px, random 32 px crop, horizontal flip)."
           if recipe["train_transform"] == "paper" and recipe["image_size"] == 32 else "."))
    ts = recipe
    add(f"- Teacher: timm `{ts['teacher_model']}` -> Linear({ts['teacher_dim']}) -> L2, triplet loss (margin 0.2) "
        f"on distance-weighted triplets, Adam lr {ts['teacher_lr']:g}, {ts['teacher_iterations']} iterations "
        f"(lr x0.5 after 25/40, 30/40 and 35/40 of them as in the paper's teacher schedule, rounded to "
        f"evaluation intervals of {ts['teacher_eval_every']}), "
        + ("one teacher per seed." if ts.get("teacher_per_seed") else
           "trained once (seed 0) and shared by every student seed; its epoch is chosen on the validation split."))
    add(f"- Students: timm `{ts['student_model']}` -> Linear(d), d in {{{', '.join(map(str, sizes))}}}, "
        f"each with and without L2 on the student; every method gets the same {sched_students} iterations "
        f"of batch {ts['batch_size']} ({ts['m_per_class']} images per class), Adam lr {ts['lr']:g} "
        f"({_student_drop(ts)}), weight decay {ts['weight_decay']:g}. Triplet: margin 0.2, "
        "distance-weighted triplets, no teacher. FitNet: learned linear map to the teacher's width + MSE. "
        "DarkRank: hard DarkRank (alpha 3, beta 3, list of 4). RKD-D / RKD-A / RKD-DA: 1 x distance, 2 x angle "
        "(RKD-DA = both), no other loss. Self-distillation: student = the teacher's architecture and size "
        f"(`{ts['teacher_model']}`-{ts['teacher_dim']}, no L2), RKD-DA, same budget"
        + (f"; a separate variant trains it at the teacher's budget ({_teacher_budget(ts)})."
           if idx.by.get(("self-long", False, ts["teacher_dim"])) else "."))
    add(f"- Evaluation: Recall@1/2/4/8 on the test characters (every test image queries all the others, "
        f"Euclidean), measured every {ts['eval_every']} iterations on the validation and the test split. "
        f"Seeds: {', '.join(map(str, seeds)) or '-'} (a seed fixes the initialisation and the batches, so runs "
        "with the same seed are paired).")
    add("- Two protocols: **val-selected** (test metrics at the evaluation with the best validation Recall@1; "
        "the test characters play no part in the choice) and **best-on-test** (the best test Recall@1 over the "
        "evaluations, as the official code reports).")
    add("")
    add("## Recall@1 (%) on the test characters, mean ± std over seeds")
    add("")
    add("Model selection on the validation split (not on the test characters):")
    add("")
    add(table_r1(idx, "selected", sizes, n_seeds))
    add("")
    add("The paper's protocol (best test Recall@1 over the evaluated epochs; optimistic by construction):")
    add("")
    add(table_r1(idx, "best_on_test", sizes, n_seeds))
    add("")
    dim = 64 if 64 in sizes else (max(sizes) if sizes else None)
    if dim is not None or idx.teachers:
        add(f"## Recall@K (%) at d = {dim}, with the teacher and the self-distilled student")
        add("")
        add("Val-selected, except the last column (best-on-test Recall@1).")
        add("")
        add(table_recall_at_k(idx, dim, n_seeds, recipe, n_teachers))
        add("")
    if any(m == "self-long" for (m, _l2, _d) in idx.by):
        add(f"## Self-distillation at the teacher's budget ({recipe['teacher_iterations']} iterations)")
        add("")
        add(f"Every student above, the self-distilled one included, trains {recipe['iterations']} iterations, while "
            f"the teacher trained {recipe['teacher_iterations']}. This separate variant gives the self-distilled "
            f"student (`{ts['teacher_model']}`-{ts['teacher_dim']}, no L2, RKD-DA from the same teacher) the "
            f"teacher's budget and schedule: {_teacher_budget(ts)}, epoch chosen on the validation split. The "
            "paper gives the self-distilled student twice its teacher's budget (80 vs 40 epochs), so this is still "
            "half of the paper's ratio.")
        add("")
        add(table_self(idx, recipe, n_seeds))
        add("")
        for protocol in PROTOCOLS:
            parts = []
            for method in SELF_METHODS:
                pair = _self_vs_teacher(idx, protocol, method)
                if pair:
                    budget = "teacher's" if method == "self-long" else "students'"
                    parts.append(f"at the {budget} budget ({pair[3]} iterations) {fmt_diff(pair[2])}")
            if parts:
                add(f"- Self-distilled minus teacher, {PROTOCOLS[protocol]}: " + "; ".join(parts) + ".")
        add("")
    rel_png = os.path.relpath(png_path, md_path.parent)
    add(f"![Recall@1 versus embedding size]({rel_png})")
    add("")
    add("## The paper's claims, checked")
    add("")
    add("Margins are differences of the means over seeds in Recall@1 points; `k/n seeds` counts the seeds where the "
        "paired runs (same seed) agree with the claim; *within noise* marks a margin smaller than the standard "
        "deviation of the paired differences.")
    add("")
    main_claims = claims(idx, sizes, "selected")
    test_claims = {c: (v, m) for c, v, m in claims(idx, sizes, "best_on_test")}
    for claim, verdict, margins in main_claims:
        tv, tm = test_claims.get(claim, ("not measured", ""))
        add(f"- **{claim}: {verdict}** (val-selected)." + (f" {margins}." if margins else ""))
        add(f"  - Best-on-test protocol: {tv}." + (f" {tm}." if tm else ""))
    add("")
    add("## Caveats")
    add("")
    evals = recipe["iterations"] // recipe["eval_every"]
    add(f"- Short budget: every student trains {recipe['iterations']} iterations of batch {recipe['batch_size']} "
        f"from scratch (the paper: 8,000 iterations of batch 128 from ImageNet weights); the teacher trains "
        f"{recipe['teacher_iterations']}. The students are far from converged, which can favour losses that "
        "learn fast over losses that learn well.")
    add(f"- The self-distilled student gets the students' budget ({recipe['iterations']} iterations) while its "
        f"teacher trained {recipe['teacher_iterations']}; the paper gives students twice the teacher's budget, so "
        "this comparison favours the teacher here"
        + (f"; the variant at the teacher's budget ({recipe['teacher_iterations']} iterations) removes that handicap "
           "but still gives the student half of the paper's ratio." if any(m == "self-long" for (m, _l2, _d) in idx.by)
           else "."))
    if not recipe.get("teacher_per_seed"):
        add("- One teacher (seed 0) serves every seed: the standard deviations cover the students' initialisation "
            "and batches, not the teacher's training.")
    add(f"- Model selection looks at {evals} evaluations per run on a small validation split "
        f"({recipe['val_fraction']:.0%} of the training classes), so the val-selected numbers are noisy; the "
        "best-on-test numbers are biased upwards by construction.")
    add("")
    add("## How these numbers were made")
    add("")
    commands = []
    for s in sessions:
        if s.get("command") and s["command"] not in commands:
            commands.append(s["command"])
    add("Command(s) (each start of the same command continues the study where it stopped):")
    add("")
    add("```")
    for c in commands:
        add(c)
    add("```")
    add("")
    add("This report: `python benchmarks/report.py --out " + _display_path(out) + f" --md {_display_path(md_path)}"
        f" --png {_display_path(png_path)}`.")
    add("")
    wall = sum(float(s.get("wall_seconds", 0)) for s in sessions)
    trained = [r for r in records if r.get("trained", True)]
    add(f"- Wall time: {_duration(wall)} over {len(sessions)} session(s) "
        f"({sum(int(s.get('runs_trained', 0)) for s in sessions)} runs trained).")
    groups: dict[str, list[float]] = {}
    for r in trained:
        groups.setdefault(r.get("group", r["kind"]), []).append(float(r.get("wall_seconds") or 0))
    if groups:
        add("- Mean wall time per run (one worker): "
            + ", ".join(f"{g} {statistics.fmean(v):.0f} s (x{len(v)})" for g, v in sorted(groups.items())) + ".")
    machines = [s.get("machine") for s in sessions if s.get("machine")]
    if machines:
        mach = machines[-1]
        loads = ", ".join(str(m.get("load_average_at_start", ["?"])[0]) for m in machines)
        add(f"- Machine: {mach.get('cpu')}, {mach.get('logical_cores')} logical cores, "
            f"{mach.get('workers')} worker process(es) x {mach.get('threads_per_worker')} torch thread(s); "
            f"torch {mach.get('torch')}, timm {mach.get('timm', '?')}, pytorch-metric-learning "
            f"{mach.get('pytorch_metric_learning', '?')}, Python {mach.get('python')}. The machine was shared with "
            f"other work (1-minute load average at the start of each session: {loads}), so times are indicative.")
    add(f"- Records: `{_display_path(out / 'records.jsonl')}` (one JSON line per run, with the validation and "
        "test curve of every run); run directories in `" + _display_path(out / "runs") + "`.")
    add("")
    text = "\n".join(lines).rstrip() + "\n"
    md_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = md_path.with_name(f".{md_path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, md_path)
    return md_path


def _display_path(path: Path) -> str:
    path = Path(path).resolve()
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results/reproduce", help="study directory")
    p.add_argument("--md", default=str(REPO / "docs" / "RESULTS.md"))
    p.add_argument("--png", default=str(REPO / "docs" / "results_recall_vs_dim.png"))
    args = p.parse_args(argv)
    out = Path(args.out)
    if not (out / "study.json").is_file():
        print(f"no study in {out}: run benchmarks/reproduce.py first", file=sys.stderr)
        return 2
    print(render_report(out, args.md, args.png))
    return 0


if __name__ == "__main__":
    sys.exit(main())
