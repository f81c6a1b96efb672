#!/usr/bin/env python
"""Render the reproduction study's report (Markdown + figures) from its records.

Everything in the report is computed from ``<out>/records.jsonl`` and ``<out>/study.json``
written by ``benchmarks/reproduce.py`` (and, for budgets chosen from curves, the curves'
``budgets.json``): the data file, the methods, the student L2 settings, the sizes and the budgets
are the ones that ran; nothing is typed in by hand. By default the report goes into the study
directory; ``--docs DIR`` writes it (``RESULTS.md`` and its figures) into DIR instead::

    python benchmarks/report.py --out benchmarks/results/reproduce-converged --docs docs

A curves directory (``reproduce.py --curves``) renders its figure and budgets instead::

    python benchmarks/report.py --out benchmarks/results/reproduce-curves
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import study_plan  # noqa: E402
from study_plan import METHODS, SELF_METHODS, STUDENT_METHODS, Recipe  # noqa: E402

REPORT_MD = "RESULTS.md"
REPORT_PNG = "results_recall_vs_dim.png"
CURVES_PNG = "curves.png"
REPORT_CURVES_PNG = "results_curves.png"
PROTOCOLS = {"selected": "epoch chosen on validation", "best_on_test": "best test epoch (paper's protocol)"}
KS = (1, 2, 4, 8)
#: the paper's student budget: 80 epochs x 100 iterations of batch 128, from ImageNet weights
PAPER_STUDENT_ITERATIONS = 8000


def label(method: str) -> str:
    if method == "teacher":
        return "Teacher (triplet)"
    return METHODS[method].label if method in METHODS else method


# --------------------------------------------------------------------------- loading and statistics


def load(out: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The study's description and its records (one per run key), as benchmarks/reproduce.py wrote them."""
    import reproduce

    study = json.loads((Path(out) / "study.json").read_text())
    return study, list(reproduce.read_records(Path(out)).values())


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
        out = {}
        for seed, rec in self.by.get((method, l2, dim), {}).items():
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

    def has(self, method: str, l2: bool | None = None) -> bool:
        return any(m == method and (l2 is None or l == l2) for (m, l, _d) in self.by)

    def rows(self) -> list[tuple[str, bool]]:
        """(method, student L2) rows that ran, in the tables' order (with L2 first)."""
        methods = list(STUDENT_METHODS) + sorted({m for (m, _l, _d) in self.by}
                                                 - set(STUDENT_METHODS) - set(SELF_METHODS))
        return [(m, l2) for m in methods for l2 in (True, False) if self.has(m, l2)]

    def self_methods(self) -> list[str]:
        return [m for m in SELF_METHODS if self.has(m)]


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


def l2_text(l2: bool) -> str:
    return "yes" if l2 else "no"


# --------------------------------------------------------------------------- tables


def table_r1(idx: Index, protocol: str, sizes: Sequence[int], n_seeds: int) -> str:
    head = "| Method | student L2 | " + " | ".join(f"d = {d}" for d in sizes) + " |"
    lines = [head, "|" + "---|" * (2 + len(sizes))]
    rows = idx.rows()
    best: dict[int, float] = {}
    for d in sizes:
        means = [s[0] for m, l2 in rows if (s := mean_std(idx.values(m, l2, d, protocol).values()))]
        if means:
            best[d] = max(means)
    for method, l2 in rows:
        cells = []
        for d in sizes:
            vals = idx.values(method, l2, d, protocol)
            s = mean_std(vals.values())
            cells.append(cell(vals, n_seeds, bold=s is not None and d in best and math.isclose(s[0], best[d])))
        lines.append(f"| {label(method)} | {l2_text(l2)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table_recall_at_k(idx: Index, dim: int, n_seeds: int, recipe: Recipe) -> str:
    head = "| Model | Method | student L2 | " + " | ".join(f"R@{k}" for k in KS) + " | R@1, best test epoch |"
    lines = [head, "|" + "---|" * (4 + len(KS))]
    tname = f"{recipe.teacher_model}-{recipe.teacher_dim}"
    sname = f"{recipe.student_model}-{dim}"

    def row(model: str, text: str, l2: str, getter, n_expected: int) -> None:
        cells = [cell(getter("selected", k), n_expected) for k in KS]
        cells.append(cell(getter("best_on_test", 1), n_expected))
        lines.append(f"| {model} | {text} | {l2} | " + " | ".join(cells) + " |")

    if idx.teachers:
        row(tname, label("teacher"), "yes", lambda p, k: idx.teacher_values(p, k), len(idx.teachers))
    for method in idx.self_methods():
        row(tname, self_label(method, recipe), "no", lambda p, k, m=method: idx.self_values(p, k, m), n_seeds)
    for method, l2 in idx.rows():
        if idx.by.get((method, l2, dim)):
            row(sname, label(method), l2_text(l2), lambda p, k, m=method, l=l2: idx.values(m, l, dim, p, k), n_seeds)
    return "\n".join(lines)


def self_label(method: str, recipe: Recipe) -> str:
    if method == "self-long":
        return f"Self-distillation on the teacher's schedule ({recipe.teacher_iterations} iterations)"
    if recipe.self_scale is None:
        return f"{label('self')}, students' budget ({recipe.iterations} iterations)"
    return f"{label('self')}, {recipe.self_scale:g} x the teacher's budget ({recipe.self_iterations} iterations)"


def self_budget(method: str, recipe: Recipe) -> str:
    if method == "self-long":
        what = "the teacher's schedule"
    elif recipe.self_scale is None:
        what = "the students' budget"
    else:
        what = f"{recipe.self_scale:g} x the teacher's budget"
    return f"at {self_iterations(method, recipe)} iterations ({what})"


def self_iterations(method: str, recipe: Recipe) -> int:
    return recipe.teacher_iterations if method == "self-long" else recipe.self_iterations


def _self_vs_teacher(idx: Index, protocol: str, method: str):
    """(self-distilled values, teacher values paired by seed, paired difference) or None."""
    s, t = idx.self_values(protocol, method=method), idx.teacher_values(protocol)
    if not s or not t:
        return None
    if len(t) == 1:  # one teacher shared by every seed
        tv = next(iter(t.values()))
        t = {seed: tv for seed in s}
    return s, t, paired_diff(s, t)


def table_self(idx: Index, recipe: Recipe, n_seeds: int) -> str:
    lines = ["| Run | iterations | R@1 val-selected | R@1 best-on-test | val-selected R@1 per seed |",
             "|---|---|---|---|---|"]

    def per_seed(values: dict[int, float]) -> str:
        return ", ".join(f"s{s}: {v:.1f}" for s, v in sorted(values.items())) or "–"

    n_teachers, teacher = len(idx.teachers), idx.teacher_values("selected")
    lines.append(f"| {label('teacher')} | {recipe.teacher_iterations} | {cell(teacher, n_teachers)} | "
                 f"{cell(idx.teacher_values('best_on_test'), n_teachers)} | {per_seed(teacher)} |")
    for method in idx.self_methods():
        sel = idx.self_values("selected", method=method)
        lines.append(f"| {self_label(method, recipe)} | {self_iterations(method, recipe)} | {cell(sel, n_seeds)} | "
                     f"{cell(idx.self_values('best_on_test', method=method), n_seeds)} | {per_seed(sel)} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- model selection


def selection_quality(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per kind of run: how often the evaluation chosen on validation is the best test evaluation.

    From each run's curve (its metrics.jsonl): ``hits`` runs whose val-selected evaluation has the
    best test Recall@1 of the run (ties count), ``regret`` the test Recall@1 points lost by
    choosing on validation, ``last`` runs whose best validation evaluation is the last one."""
    out: dict[str, dict[str, Any]] = {}
    for r in records:
        curve = [c for c in r.get("curve") or [] if c[1] is not None]
        if len(curve) < 2 or (r.get("selected") or {}).get("iteration") is None:
            continue
        group = "teacher" if r["kind"] == "teacher" else ("self" if r["method"] in SELF_METHODS else "student")
        g = out.setdefault(group, {"runs": 0, "hits": 0, "regret": [], "last_val": 0, "last_test": 0, "evals": []})
        best_test = max(c[2] for c in curve)
        sel_it = r["selected"]["iteration"]
        sel_test = next((c[2] for c in curve if c[0] == sel_it), None)
        if sel_test is None:
            continue
        g["runs"] += 1
        g["hits"] += math.isclose(sel_test, best_test, abs_tol=1e-9)
        g["regret"].append(100.0 * (best_test - sel_test))
        best_val = max(c[1] for c in curve)
        g["last_val"] += math.isclose(curve[-1][1], best_val, abs_tol=1e-9)
        g["last_test"] += math.isclose(curve[-1][2], best_test, abs_tol=1e-9)
        g["evals"].append(len(curve))
    return out


def table_selection(quality: dict[str, dict[str, Any]]) -> str:
    names = {"teacher": "Teachers", "student": "Students (all methods and sizes)", "self": "Self-distilled students"}
    lines = ["| Runs | n | evaluations per run | val-selected = best test evaluation | test R@1 lost by "
             "selecting on validation: mean / max (pts) | best validation at the last evaluation | best test at "
             "the last evaluation |", "|---|---|---|---|---|---|---|"]
    for group in ("teacher", "student", "self"):
        g = quality.get(group)
        if not g or not g["runs"]:
            continue
        n = g["runs"]
        evals = sorted(set(g["evals"]))
        lines.append(f"| {names[group]} | {n} | {'/'.join(map(str, evals))} | {g['hits']}/{n} ({g['hits'] / n:.0%}) | "
                     f"{statistics.fmean(g['regret']):.1f} / {max(g['regret']):.1f} | {g['last_val']}/{n} | "
                     f"{g['last_test']}/{n} |")
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


def claims(idx: Index, sizes: Sequence[int], protocol: str, recipe: Recipe) -> list[tuple[str, str, str]]:
    """(claim, verdict, margins) for one protocol; only the claims whose runs are recorded."""
    out = []
    rkd, trip, trip_nol2 = ("rkd-da", False), ("triplet", True), ("triplet", False)
    has_rkd, has_trip = idx.has(*rkd), idx.has(*trip)

    if has_rkd and (has_trip or idx.has(*trip_nol2)):
        main_b = trip if has_trip else trip_nol2
        v, m = _verdict(_per_size(idx, sizes, protocol, rkd, main_b))
        extra = _verdict(_per_size(idx, sizes, protocol, rkd, trip_nol2)) if has_trip and idx.has(*trip_nol2) else None
        out.append((f"RKD (RKD-DA, no student L2, the paper's recipe) beats the triplet-trained student "
                    f"({'with' if main_b[1] else 'without'} L2) of the same size at every embedding size", v,
                    m + (f". Against the triplet student without L2: {extra[0]} ({extra[1]})"
                         if extra and extra[1] else "")))

        if len(sizes) >= 2:
            lo, hi = min(sizes), max(sizes)
            drops = {}
            for name, key in (("RKD-DA", rkd), ("triplet", main_b)):
                a = mean_std(idx.values(*key, hi, protocol).values())
                b = mean_std(idx.values(*key, lo, protocol).values())
                drops[name] = None if a is None or b is None else (a[0] - b[0], a[0], b[0])
            if all(drops.values()):
                r, t = drops["RKD-DA"], drops["triplet"]
                verdict = "held" if r[0] < t[0] else "did not hold"
                if r[0] < t[0] and t[0] > 0 and r[0] > 0.5 * t[0]:
                    verdict = "held, but not by much"
                out.append(("RKD is much less sensitive to small embedding sizes than the triplet student", verdict,
                            f"Recall@1 lost from d={hi} to d={lo}: RKD-DA {r[0]:+.1f} pts ({r[1]:.1f} -> {r[2]:.1f}), "
                            f"triplet {t[0]:+.1f} pts ({t[1]:.1f} -> {t[2]:.1f})"))

    if has_rkd and idx.has("rkd-da", True):
        v, m = _verdict(_per_size(idx, sizes, protocol, rkd, ("rkd-da", True)))
        others = []
        for name in ("rkd-d", "rkd-a"):
            known = [x for x in _per_size(idx, sizes, protocol, (name, False), (name, True)).values() if x is not None]
            if known:
                others.append(f"{label(name)}: no-L2 better at {sum(x[0] > 0 for x in known)} of {len(known)} sizes")
        out.append(("RKD without student L2 beats RKD with it (RKD-DA)", v,
                    m + (". " + "; ".join(others) if others else "")))

    verdicts, margins = [], []
    for method in idx.self_methods():
        pair = _self_vs_teacher(idx, protocol, method)
        if pair is None:
            continue
        s, t, d = pair
        sm, tm = mean_std(s.values()), mean_std(t.values())
        budget = self_budget(method, recipe)
        verdicts.append(f"{'held' if d[0] > 0 else 'did not hold'} {budget}")
        margins.append(f"{budget}: self-distilled {sm[0]:.1f} vs teacher {tm[0]:.1f}, {fmt_diff(d)}")
    if margins:
        ratio = recipe.self_scale
        margins.append("the paper trains the self-distilled student for twice the teacher's budget"
                       + (" (as here)" if ratio is not None and math.isclose(ratio, 2.0) else ""))
        margin = "; ".join(margins)
        out.append(("The self-distilled student beats its teacher", "; ".join(verdicts), margin[:1].upper() + margin[1:]))

    if has_rkd and (idx.has("rkd-d", False) or idx.has("rkd-a", False)):
        vd = _per_size(idx, sizes, protocol, rkd, ("rkd-d", False))
        va = _per_size(idx, sizes, protocol, rkd, ("rkd-a", False))
        both = {d: (None if vd[d] is None or va[d] is None else min(vd[d], va[d], key=lambda x: x[0])) for d in sizes}
        v, _ = _verdict(both)
        m = "; ".join(f"d={d}: vs RKD-D {fmt_diff(vd[d])}, vs RKD-A {fmt_diff(va[d])}" for d in sizes
                      if vd[d] is not None or va[d] is not None)
        out.append(("RKD-DA beats RKD-D and RKD-A alone (no student L2)", v, m))

    for base in ("fitnet", "darkrank"):
        if not has_rkd:
            break
        parts, main_l2 = [], None
        for l2 in (True, False):
            known = {d: x for d, x in _per_size(idx, sizes, protocol, rkd, (base, l2)).items() if x is not None}
            if known:
                main_l2 = l2 if main_l2 is None else main_l2
                parts.append(f"vs {label(base)} {'with' if l2 else 'without'} L2: RKD-DA ahead at "
                             f"{sum(x[0] > 0 for x in known.values())} of {len(known)} sizes ("
                             + ", ".join(f"d={d} {x[0]:+.1f}" for d, x in sorted(known.items())) + ")")
            if has_trip:
                tk = {d: x for d, x in _per_size(idx, sizes, protocol, (base, l2), trip).items() if x is not None}
                if tk:
                    parts.append(f"{label(base)} {'with' if l2 else 'without'} L2 vs triplet: "
                                 + ", ".join(f"d={d} {x[0]:+.1f}" for d, x in sorted(tk.items())))
        if parts:
            v, _ = _verdict(_per_size(idx, sizes, protocol, rkd, (base, main_l2)))
            out.append((f"RKD-DA beats {label(base)} (the paper's {label(base)} row uses L2)", v, "; ".join(parts)))
    return out


def combinations(idx: Index, sizes: Sequence[int], protocol: str) -> list[str]:
    """RKD-DA with a second loss against its parts (no claim of the paper)."""
    lines = []
    for combo, part in (("rkd-da-triplet", "triplet"), ("rkd-da-fitnet", "fitnet")):
        for l2 in (False, True):
            if not idx.has(combo, l2):
                continue
            parts = []
            for other in (("rkd-da", l2), (part, l2), (part, not l2)):
                if idx.has(*other):
                    v, m = _verdict(_per_size(idx, sizes, protocol, (combo, l2), other))
                    parts.append(f"vs {label(other[0])} {'with' if other[1] else 'without'} L2: {v} ({m})")
            if parts:
                lines.append(f"**{label(combo)} ({'with' if l2 else 'without'} student L2)** " + "; ".join(parts))
    return lines


# --------------------------------------------------------------------------- figures


def plot(idx: Index, sizes: Sequence[int], path: Path, recipe: Recipe, data_name: str) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(14, 4.8), dpi=110)
    rows = idx.rows()
    colours = {m: f"C{i}" for i, m in enumerate(dict.fromkeys(m for m, _ in rows))}
    for i, protocol in enumerate(("selected", "best_on_test")):
        ax = fig.add_subplot(1, 2, i + 1)
        for method, l2 in rows:
            xs, ys, es = [], [], []
            for d in sizes:
                s = mean_std(idx.values(method, l2, d, protocol).values())
                if s:
                    xs.append(d)
                    ys.append(s[0])
                    es.append(s[1])
            if xs:
                ax.errorbar(xs, ys, yerr=es, fmt="--" if l2 else "-", marker="o", markersize=4, capsize=3,
                            color=colours[method], label=f"{label(method)}{' + L2' if l2 else ''}")
        t = mean_std(idx.teacher_values(protocol).values())
        if t:
            ax.axhline(t[0], color="black", linestyle=":", label=f"teacher {recipe.teacher_model}-{recipe.teacher_dim}")
        for method, style in (("self", "-."), ("self-long", "--")):
            s = mean_std(idx.self_values(protocol, method=method).values())
            if s:
                ax.axhline(s[0], color="grey", linestyle=style,
                           label=f"self-distilled, {self_iterations(method, recipe)} it.")
        if sizes:
            ax.set_xscale("log", base=2)
            ax.set_xticks(list(sizes))
            ax.set_xticklabels([str(d) for d in sizes])
        ax.set_xlabel("student embedding size")
        ax.set_ylabel("test Recall@1 (%)")
        ax.set_title(f"{recipe.student_model} students: {PROTOCOLS[protocol]}", fontsize=10)
        ax.grid(True, alpha=0.3)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, fontsize=8, loc="center right", frameon=False)
    fig.suptitle(f"Recall@1 on unseen classes of {data_name} vs embedding size (mean ± std over seeds)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 0.83, 1))
    _save(fig, path)


def _save(fig, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)


def plot_curves(records: dict[str, dict[str, Any]], budgets: dict[str, Any], path: Path, title: str) -> None:
    """Validation (solid) and test (dotted) Recall@1 of the curve runs, the plateaus and the budgets."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(14, 5), dpi=110)
    panels = (("teacher", "teacher"), ("students", "student"))
    for i, (name, kind) in enumerate(panels):
        ax = fig.add_subplot(1, 2, i + 1)
        runs = [r for r in records.values() if r["kind"] == kind]
        for c, r in enumerate(sorted(runs, key=lambda r: STUDENT_METHODS.index(r["method"])
                                     if r["method"] in STUDENT_METHODS else 99)):
            curve = [row for row in r.get("curve") or [] if row[1] is not None]
            if not curve:
                continue
            xs = [row[0] for row in curve]
            colour = f"C{c}"
            text = label(r["method"]) + (" + L2" if r["l2"] and kind == "student" else "")
            smooth = budgets.get("plateau_smooth") or 1
            val = [100 * row[1] for row in curve]
            ax.plot(xs, study_plan._smooth(val, smooth), "-", color=colour, label=f"{text}")
            if smooth > 1:
                ax.plot(xs, val, "-", color=colour, alpha=0.25, linewidth=0.8)
            ax.plot(xs, [100 * row[2] for row in curve], ":", color=colour, alpha=0.7)
            p = (budgets.get("per_run") or {}).get(r["key"])
            if p and p.get("iteration") is not None:
                ax.plot([p["iteration"]], [p["val_at_plateau"]], "o", color=colour, markersize=6)
        chosen = budgets.get("teacher_iterations" if kind == "teacher" else "iterations")
        if chosen:
            ax.axvline(chosen, color="black", linestyle="--", linewidth=1, label=f"chosen budget: {chosen}")
        ax.set_xlabel("iteration")
        ax.set_ylabel("Recall@1 (%): validation (averaged) solid, test dotted")
        ax.set_title(f"{name} (constant learning rate); dots: plateau", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    _save(fig, path)


# --------------------------------------------------------------------------- curves


def render_curves(out: str | os.PathLike, rule: str = "first-drop", points: float = study_plan.PLATEAU_POINTS,
                  smooth: int = study_plan.PLATEAU_SMOOTH) -> dict[str, Any]:
    """budgets.json, curves.png and CURVES.md of a curves directory; returns the budgets."""
    import reproduce

    out = Path(out)
    study = json.loads((out / "study.json").read_text())
    records = reproduce.read_records(out)
    curve = Recipe.from_dict(study["recipe"])
    study_recipe = Recipe.from_dict(study.get("study_recipe") or study["recipe"])
    budgets = study_plan.choose_budgets(records, study_recipe, curve, rule, points, smooth)
    planned = set(study["sessions"][-1].get("planned_keys") or []) if study.get("sessions") else set()
    missing = sorted(planned - set(records))
    budgets.update(
        complete=not missing and bool(records), missing=missing, curves=_display_path(out),
        curve_iterations={"teacher": curve.teacher_iterations, "students": curve.iterations},
        description=study_plan.describe_rule(rule, points, smooth),
    )
    reproduce.write_json_atomic(out / reproduce.BUDGETS, budgets)
    data = next((x["data"] for x in reversed(study.get("sessions") or []) if x.get("data")), {})
    plot_curves(records, budgets, out / CURVES_PNG,
                f"Curves on {data.get('name') or curve.dataset}: {curve.teacher_model}-{curve.teacher_dim} teacher, "
                f"{curve.student_model}-{(study.get('curves') or {}).get('dim', '?')} students")
    lines = ["# Curves for the reproduction study's budgets", "",
             "<!-- Generated by benchmarks/report.py from the curve runs' records; do not edit by hand. -->", "",
             f"Status: {'complete' if budgets['complete'] else 'partial: missing ' + ', '.join(missing)}.", "",
             f"One teacher (`{curve.teacher_model}`-{curve.teacher_dim}, {curve.teacher_iterations} iterations) and one "
             f"student per method (`{curve.student_model}`, {curve.iterations} iterations), constant learning rate, "
             f"evaluated {curve.evals} times. Rule: {budgets['description']}.", "",
             "| Run | plateau (iteration) | best val R@1 (smoothed) | budget | converged within the curve |",
             "|---|---|---|---|---|"]
    for key, p in sorted(budgets["per_run"].items()):
        lines.append(f"| {key} | {p['iteration']} of {p['curve_iterations']} | {p['best_val']:.1f} | {p['budget']}"
                     f"{' (capped)' if p['capped'] else ''} | {'yes' if p['converged'] else 'no'} |")
    lines += ["", f"Chosen: teacher {budgets['teacher_iterations']} iterations, students {budgets['iterations']} "
                  f"(the largest of the methods' budgets), self-distillation {budgets['self_iterations']}.", "",
              f"![curves]({CURVES_PNG})", ""]
    (out / "CURVES.md").write_text("\n".join(lines))
    return budgets


# --------------------------------------------------------------------------- markdown


def planned_keys(study: dict[str, Any]) -> set[str] | None:
    """The runs planned by the study's sessions (recorded, or re-planned from their commands)."""
    keys: set[str] = set()
    try:
        import reproduce

        for s in study.get("sessions", []):
            if s.get("planned_keys") is not None:
                keys |= set(s["planned_keys"])
            elif s.get("command"):
                keys |= set(reproduce.planned_keys(s["command"], study["recipe"]))
    except (Exception, SystemExit):  # noqa: BLE001 - fall back to the sessions' counts
        return None
    return keys


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


def schedule_text(iterations: int, evals: int, drops, gamma: float, lr: float) -> str:
    ms = study_plan.milestones(evals, drops)
    ipe = iterations // evals
    drop = (f" x{gamma:g} after iterations {', '.join(str(m * ipe) for m in ms)}"
            f" ({', '.join(f'{m / evals:.0%}' for m in ms)} of the budget)") if ms else ", constant"
    return f"{iterations} iterations, Adam lr {lr:g}{drop}, evaluated every {ipe} iterations ({evals} evaluations)"


def teacher_schedule(r: Recipe) -> str:
    return schedule_text(r.teacher_iterations, r.teacher_evals, r.teacher_lr_drops, r.teacher_lr_gamma, r.teacher_lr)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min {s:02d} s"


def _display_path(path: Path) -> str:
    path = Path(path).resolve()
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def data_facts(study: dict[str, Any], records: list[dict[str, Any]], recipe: Recipe) -> dict[str, Any]:
    """What the data was: the file (from the sessions) and the splits' sizes (from the runs' logs)."""
    info = next((s["data"] for s in reversed(study.get("sessions", [])) if s.get("data")), None) or {
        "dataset": recipe.dataset, "root": recipe.root, "name": Path(recipe.root).name if recipe.root else None}
    counts = next((r["data"] for r in records if r["kind"] == "teacher" and r.get("data")), None) or next(
        (r["data"] for r in records if r.get("data")), None)
    name = info.get("name") or recipe.dataset
    if recipe.dataset == "omniglot":
        title = f"Omniglot (`{name}`)"
    elif recipe.dataset == "folder":
        title = f"the image folder `{name}`"
    else:
        title = f"the `{recipe.dataset}` data set"
    return {"info": info, "counts": counts, "title": title, "name": name}


def describe_data(facts: dict[str, Any], recipe: Recipe) -> str:
    info, counts = facts["info"], facts["counts"]
    where = f"`{_display_path(Path(info['root']))}`" if info.get("root") else f"the `{recipe.dataset}` data set"
    extra = []
    if info.get("bytes"):
        b = info["bytes"]
        extra.append(f"{b / 1e6:.1f} MB" if b >= 1e5 else f"{b / 1e3:.0f} kB")
    if info.get("sha256"):
        extra.append(f"SHA-256 `{info['sha256'][:16]}…`")
    if info.get("files"):
        extra.append(f"{info['files']} files")
    text = f"{where} ({recipe.dataset} layout{', ' + ', '.join(extra) if extra else ''}) at {recipe.image_size} px"
    if counts:
        tr, te, va = counts["train"], counts["test"], counts.get("val")
        n_train_classes = tr["classes"] + (va["classes"] if va else 0)
        text += (f": {n_train_classes + te['classes']} classes; the first half of the classes ({n_train_classes}) "
                 f"trains, the second half ({te['classes']} classes, {te['images']} images, never seen in training) is "
                 "the test set")
        if va:
            text += (f"; {va['classes']} of the {n_train_classes} training classes ({va['images']} images, "
                     f"{recipe.val_fraction:.0%}) are a class-disjoint **validation split used for model selection**, "
                     f"drawn with each run's seed, leaving {tr['classes']} classes ({tr['images']} images) to train on")
    else:
        text += (f"; the first half of the classes trains, the second half (never seen in training) is the test set; "
                 f"{recipe.val_fraction:.0%} of the training classes are held out as a class-disjoint **validation "
                 "split used for model selection**")
    return text


def budget_source(study: dict[str, Any]) -> dict[str, Any]:
    return study.get("budgets") or {"kind": "legacy"}


def read_curve_budgets(source: dict[str, Any]) -> tuple[dict[str, Any] | None, Path | None]:
    if source.get("kind") != "curves" or not source.get("file"):
        return None, None
    path = Path(source["file"])
    path = path if path.is_absolute() else REPO / path
    if not path.is_file():
        return None, None
    return json.loads(path.read_text()), path.parent


def render_report(out: str | os.PathLike, md_path: str | os.PathLike | None = None,
                  png_path: str | os.PathLike | None = None) -> Path:
    """Write the Markdown report and its figures from the study in ``out``; return the report path."""
    out = Path(out)
    md_path = Path(md_path) if md_path else out / REPORT_MD
    png_path = Path(png_path) if png_path else md_path.parent / REPORT_PNG
    study, records = load(out)
    recipe = Recipe.from_dict(study["recipe"])
    idx = Index(records)
    sessions = study.get("sessions", [])
    seeds = sorted({int(r["seed"]) for r in records if r["kind"] != "teacher"})
    n_seeds = len(seeds)
    sizes = idx.sizes()
    rows = idx.rows()
    facts = data_facts(study, records, recipe)
    plot(idx, sizes, png_path, recipe, facts["name"])
    source = budget_source(study)
    curve_budgets, curves_dir = read_curve_budgets(source)
    quality = selection_quality(records)
    ts = recipe

    lines: list[str] = []
    add = lines.append
    add(f"# Reproduction of the RKD paper's metric-learning claims on {facts['title']}")
    add("")
    add("<!-- Generated by benchmarks/report.py from the study's records; do not edit by hand. -->")
    add("")
    add(f"Status: {_status(study, records)}.")
    add("")
    add("Park et al. (CVPR 2019) distil a ResNet-50 teacher into ResNet-18 students on CUB-200-2011, Cars196 and "
        "Stanford Online Products. This study repeats the experiment design at CPU scale on "
        f"{facts['title']}, with every model trained from scratch. Absolute numbers are not comparable with the "
        "paper's; the claims are about the ordering of methods, which is what is checked below.")
    add("")
    add("## Setup")
    add("")
    add(f"- Data: {describe_data(facts, recipe)}. Train augmentation: `{recipe.train_transform}`"
        + (f" (the recipe scaled to the image size: resize to {round(recipe.image_size * 256 / 224)} px, random "
           f"{recipe.image_size} px crop, horizontal flip)." if recipe.train_transform == "paper" else "."))
    n_teachers = len(idx.teachers)
    add(f"- Teacher: timm `{ts.teacher_model}` -> Linear({ts.teacher_dim}) -> L2, triplet loss (margin 0.2) on "
        f"distance-weighted triplets, {teacher_schedule(ts)}; "
        + (f"one teacher per seed ({n_teachers} trained), each on its seed's split of the training classes; "
           if ts.teacher_per_seed else "trained once (seed 0) and shared by every student seed; ")
        + "its epoch is chosen on the validation split.")
    if rows:
        l2_by_method: dict[str, list[bool]] = {}
        for m, l2 in rows:
            l2_by_method.setdefault(m, []).append(l2)
        both = [m for m, v in l2_by_method.items() if len(v) == 2]
        one = {m: v[0] for m, v in l2_by_method.items() if len(v) == 1}
        l2_parts = []
        if both:
            l2_parts.append(("every method" if not one else ", ".join(label(m) for m in both))
                            + " with and without L2 on the student")
        for flag in (True, False):
            ms = [label(m) for m, v in one.items() if v == flag]
            if ms:
                l2_parts.append(f"{', '.join(ms)} {'with' if flag else 'without'} student L2 only")
        add(f"- Students: timm `{ts.student_model}` -> Linear(d), d in {{{', '.join(map(str, sizes))}}}; "
            + "; ".join(l2_parts) + f". Every method gets the same budget: "
            f"{schedule_text(ts.iterations, ts.evals, ts.lr_drops, ts.lr_gamma, ts.lr)}, batch {ts.batch_size} "
            f"({ts.m_per_class} images per class), weight decay {ts.weight_decay:g}.")
        add("- Methods: " + "; ".join(f"{label(m)}: {METHODS[m].describe}" for m in dict.fromkeys(m for m, _ in rows)
                                        if m in METHODS) + ".")
    for method in idx.self_methods():
        sched = (teacher_schedule(ts) if method == "self-long" else
                 schedule_text(ts.self_iterations, ts.evals, ts.lr_drops, ts.lr_gamma, ts.lr))
        add(f"- {self_label(method, recipe)}: student = the teacher's architecture and size (`{ts.teacher_model}`-"
            f"{ts.teacher_dim}, no L2), RKD-DA from {_whose_teacher(ts)}; "
            f"{sched}.")
    add(f"- Budgets: {describe_budgets(source, curve_budgets, recipe)}")
    add(f"- Evaluation: Recall@1/2/4/8 on the test classes (every test image queries all the others, Euclidean), "
        "measured at the end of every epoch on the validation and the test split. "
        f"Seeds: {', '.join(map(str, seeds)) or '-'} (a seed fixes the initialisation, the batches and the validation "
        "classes, so runs with the same seed are paired). Precision: "
        + (f"{recipe.precision} autocast{', channels-last' if recipe.channels_last else ''}."
           if recipe.precision != "fp32" else "fp32."))
    grid = study.get("grid")
    if grid:
        est = grid.get("estimates") or {}
        add(f"- Grid: **{grid['name']}** ({grid.get('description', '')}); chosen because {grid.get('reason', '')}"
            + (". Estimated before the study: "
               + ", ".join(f"{n} {e['runs']} runs / {e['hours']:.1f} h" for n, e in est.items())
               + f" with {grid.get('workers')} worker(s)" if est else "") + ".")
    add("- Two protocols: **val-selected** (test metrics at the evaluation with the best validation Recall@1; "
        "the test classes play no part in the choice) and **best-on-test** (the best test Recall@1 over the "
        "evaluations, as the official code reports).")
    add("")
    if curve_budgets and curves_dir is not None and (curves_dir / CURVES_PNG).is_file():
        target = md_path.parent / REPORT_CURVES_PNG
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(curves_dir / CURVES_PNG, target)
        add("## Budgets chosen from curves")
        add("")
        add(f"{curve_budgets.get('description', '')}. Curve runs (constant learning rate, "
            f"`{curve_budgets.get('curves')}`):")
        add("")
        add("| Curve run | plateau (iteration) | best val R@1 | budget | converged within the curve |")
        add("|---|---|---|---|---|")
        for key, p in sorted((curve_budgets.get("per_run") or {}).items()):
            add(f"| {key} | {p['iteration']} of {p['curve_iterations']} | {p['best_val']:.1f} | {p['budget']}"
                f"{' (capped)' if p.get('capped') else ''} | {'yes' if p['converged'] else 'no'} |")
        add("")
        add(f"![Validation and test Recall@1 of the curve runs]({REPORT_CURVES_PNG})")
        add("")
    if rows:
        add("## Recall@1 (%) on the test classes, mean ± std over seeds")
        add("")
        add("Model selection on the validation split (not on the test classes):")
        add("")
        add(table_r1(idx, "selected", sizes, n_seeds))
        add("")
        add("The paper's protocol (best test Recall@1 over the evaluated epochs; optimistic by construction):")
        add("")
        add(table_r1(idx, "best_on_test", sizes, n_seeds))
        add("")
    dim = 64 if 64 in sizes else (max(sizes) if sizes else None)
    if dim is not None or idx.teachers:
        add(f"## Recall@K (%){f' at d = {dim}' if dim is not None else ''}, with the teacher and the self-distilled student")
        add("")
        add("Val-selected, except the last column (best-on-test Recall@1).")
        add("")
        add(table_recall_at_k(idx, dim, n_seeds, recipe))
        add("")
    if idx.self_methods():
        add("## Self-distillation")
        add("")
        add(f"The self-distilled student (`{ts.teacher_model}`-{ts.teacher_dim}, no L2, RKD-DA from "
            f"{_whose_teacher(ts)}) "
            "against the teacher. The paper gives it twice its teacher's budget (80 vs 40 epochs).")
        add("")
        add(table_self(idx, recipe, n_seeds))
        add("")
        for protocol in PROTOCOLS:
            parts = []
            for method in idx.self_methods():
                pair = _self_vs_teacher(idx, protocol, method)
                if pair:
                    parts.append(f"{self_budget(method, recipe)} {fmt_diff(pair[2])}")
            if parts:
                add(f"- Self-distilled minus teacher, {PROTOCOLS[protocol]}: " + "; ".join(parts) + ".")
        add("")
    rel_png = os.path.relpath(png_path, md_path.parent)
    add(f"![Recall@1 versus embedding size]({rel_png})")
    add("")
    if quality:
        add("## Model selection on the validation split")
        add("")
        add("From every run's curve (its `metrics.jsonl`): how often the evaluation with the best validation Recall@1 "
            "is also the evaluation with the best test Recall@1, and how many test points choosing on validation "
            "costs against the best-on-test protocol.")
        add("")
        add(table_selection(quality))
        add("")
    add("## The paper's claims, checked")
    add("")
    add("Margins are differences of the means over seeds in Recall@1 points; `k/n seeds` counts the seeds where the "
        "paired runs (same seed) agree with the claim; *within noise* marks a margin smaller than the standard "
        "deviation of the paired differences. Only claims whose runs are in this study are listed.")
    add("")
    main_claims = claims(idx, sizes, "selected", recipe)
    test_claims = {c: (v, m) for c, v, m in claims(idx, sizes, "best_on_test", recipe)}
    for claim, verdict, margins in main_claims:
        tv, tm = test_claims.get(claim, ("not measured", ""))
        add(f"- **{claim}: {verdict}** (val-selected)." + (f" {margins}." if margins else ""))
        add(f"  - Best-on-test protocol: {tv}." + (f" {tm}." if tm else ""))
    if not main_claims:
        add("- (no claim can be checked with the runs recorded so far)")
    combos = combinations(idx, sizes, "selected")
    if combos:
        add("")
        add("Combinations (not claims of the paper), val-selected:")
        add("")
        for line in combos:
            add(f"- {line}.")
    add("")
    add("## Caveats")
    add("")
    for caveat in caveats(recipe, idx, quality, source, curve_budgets, facts):
        add(f"- {caveat}")
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
    if md_path.name == REPORT_MD and png_path.name == REPORT_PNG and png_path.parent == md_path.parent:
        where = "" if md_path.parent.resolve() == out.resolve() else f" --docs {_display_path(md_path.parent)}"
    else:
        where = f" --md {_display_path(md_path)} --png {_display_path(png_path)}"
    add(f"This report: `python benchmarks/report.py --out {_display_path(out)}{where}`.")
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
            + ", ".join(f"{g} {_duration(statistics.fmean(v))} (x{len(v)})" for g, v in sorted(groups.items())) + ".")
    machines = [s.get("machine") for s in sessions if s.get("machine")]
    if machines:
        mach = machines[-1]
        loads = ", ".join(str(m.get("load_average_at_start", ["?"])[0]) for m in machines)
        add(f"- Machine: {mach.get('cpu')}, {mach.get('logical_cores')} logical cores, "
            f"{mach.get('workers')} worker process(es) x {mach.get('threads_per_worker')} torch thread(s); "
            f"torch {mach.get('torch')}, timm {mach.get('timm', '?')}, pytorch-metric-learning "
            f"{mach.get('pytorch_metric_learning', '?')}, Python {mach.get('python')}. 1-minute load average at the "
            f"start of each session: {loads} (other work shared the machine, so times are indicative).")
    add(f"- Records: `{_display_path(out / 'records.jsonl')}` (one JSON line per run, with the validation and "
        "test curve of every run); run directories in `" + _display_path(out / "runs") + "`.")
    add("")
    text = "\n".join(lines).rstrip() + "\n"
    md_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = md_path.with_name(f".{md_path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, md_path)
    return md_path


def _whose_teacher(recipe: Recipe) -> str:
    return "its seed's teacher" if recipe.teacher_per_seed else "the shared teacher"


def describe_budgets(source: dict[str, Any], curve_budgets: dict[str, Any] | None, recipe: Recipe) -> str:
    kind = source.get("kind")
    if kind == "curves":
        text = (f"chosen from curves (`{source.get('file')}`): teacher {recipe.teacher_iterations}, students "
                f"{recipe.iterations}, self-distillation {recipe.self_iterations} iterations")
        if curve_budgets:
            text += (f"; students get the largest of the methods' budgets ("
                     + ", ".join(f"{label(m)} {b}" for m, b in (curve_budgets.get("students_by_method") or {}).items())
                     + ")")
        return text + "; see *Budgets chosen from curves*."
    if kind == "scale":
        return (f"the first study's budgets ({study_plan.BASE_STUDENT_ITERATIONS} and {study_plan.BASE_TEACHER_ITERATIONS} "
                f"iterations) times {source.get('scale'):g} (teacher x{source.get('teacher_scale'):g}), "
                "not chosen from curves.")
    if kind == "legacy":
        return "fixed by hand (the first study), not chosen from curves."
    if kind == "quick":
        return "the tiny --quick budgets (a test of the pipeline, not a result)."
    return "the script's defaults, not chosen from curves" + (
        f" (given explicitly: {', '.join(source['explicit'])})" if source.get("explicit") else "") + "."


def caveats(recipe: Recipe, idx: Index, quality: dict[str, dict[str, Any]], source: dict[str, Any],
            curve_budgets: dict[str, Any] | None, facts: dict[str, Any]) -> list[str]:
    out = []
    students = quality.get("student")
    still = students and students["runs"] and students["last_val"] / students["runs"] > 0.5
    scratch = (f"every student trains {recipe.iterations} iterations of batch {recipe.batch_size} from scratch (the "
               f"paper: {PAPER_STUDENT_ITERATIONS:,} iterations of batch 128 from ImageNet weights); the teacher trains "
               f"{recipe.teacher_iterations}")
    if source.get("kind") == "quick":
        out.append(f"Short budget: {scratch}; --quick checks the pipeline and its numbers are not results.")
    elif still:
        out.append(f"Short budget: {scratch}. In {students['last_val']} of {students['runs']} student runs the best "
                   "validation Recall@1 is at the last evaluation: the students were still improving, which can favour "
                   "losses that learn fast over losses that learn well.")
    elif source.get("kind") == "curves":
        per_run = (curve_budgets or {}).get("per_run") or {}
        capped = [k for k, p in per_run.items() if p.get("capped") or not p.get("converged")]
        out.append(f"Budget: {scratch}, chosen where the curves stopped improving"
                   + (f"; the curves of {', '.join(capped)} had not plateaued within their budget, so those budgets are a "
                      "lower bound" if capped else "")
                   + (f". {students['last_val']} of {students['runs']} student runs have their best validation Recall@1 at "
                      "the last evaluation." if students else "."))
    else:
        out.append(f"Budget: {scratch}; not chosen from curves"
                   + (f" ({students['last_val']} of {students['runs']} student runs have their best validation Recall@1 "
                      "at the last evaluation)." if students else "."))
    if idx.self_methods():
        ratio = None if recipe.self_scale is None else recipe.self_scale
        if ratio is None or ratio < 2:
            out.append(f"The self-distilled student trains {recipe.self_iterations} iterations against its teacher's "
                       f"{recipe.teacher_iterations}; the paper gives it twice the teacher's budget, so this comparison "
                       "favours the teacher.")
        if idx.has("self-long"):
            out.append(f"The variant on the teacher's schedule trains {recipe.teacher_iterations} iterations, half of "
                       "the paper's ratio.")
    if not recipe.teacher_per_seed:
        out.append("One teacher (seed 0) serves every seed: the standard deviations cover the students' initialisation "
                   "and batches, not the teacher's training; and because the validation classes are drawn with each "
                   "run's seed, the shared teacher trained on some of the other seeds' validation classes.")
    counts = facts.get("counts") or {}
    val_classes = (counts.get("val") or {}).get("classes")
    sel = [g for g in quality.values() if g["runs"]]
    if sel:
        runs = sum(g["runs"] for g in sel)
        hits = sum(g["hits"] for g in sel)
        regret = statistics.fmean(x for g in sel for x in g["regret"])
        out.append(f"Model selection uses one validation split of {val_classes or 'the held-out'} classes "
                   f"({recipe.val_fraction:.0%} of the training classes); the val-selected evaluation was the best test "
                   f"evaluation in {hits} of {runs} runs and cost {regret:.1f} test points on average against the "
                   "best-on-test protocol, which is biased upwards by construction.")
    if recipe.val_fraction >= 0.5:
        out.append(f"Holding out {recipe.val_fraction:.0%} of the training classes for validation leaves fewer classes "
                   "to train on than the paper's protocol (which has no validation split), for every method alike.")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results/reproduce-converged", help="study (or curves) directory")
    p.add_argument("--docs", default=None, metavar="DIR",
                   help=f"write {REPORT_MD} and its figures into DIR (default: the study directory)")
    p.add_argument("--md", default=None, help=f"report path (default DOCS/{REPORT_MD})")
    p.add_argument("--png", default=None, help=f"figure path (default DOCS/{REPORT_PNG})")
    p.add_argument("--budget-rule", choices=study_plan.BUDGET_RULES, default="first-drop", help="curves only")
    p.add_argument("--plateau-points", type=float, default=study_plan.PLATEAU_POINTS, help="curves only")
    p.add_argument("--plateau-smooth", type=int, default=study_plan.PLATEAU_SMOOTH, help="curves only")
    args = p.parse_args(argv)
    out = Path(args.out)
    if not (out / "study.json").is_file():
        print(f"no study in {out}: run benchmarks/reproduce.py first", file=sys.stderr)
        return 2
    study = json.loads((out / "study.json").read_text())
    if study.get("mode") == "curves":
        budgets = render_curves(out, args.budget_rule, args.plateau_points, args.plateau_smooth)
        print(json.dumps({k: budgets[k] for k in ("teacher_iterations", "iterations", "self_iterations", "complete")}))
        return 0
    docs = Path(args.docs) if args.docs else out
    md = Path(args.md) if args.md else docs / REPORT_MD
    png = Path(args.png) if args.png else md.parent / REPORT_PNG
    print(render_report(out, md, png))
    return 0


if __name__ == "__main__":
    sys.exit(main())
