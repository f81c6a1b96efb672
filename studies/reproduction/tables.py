"""The report's tables: Recall@1 by method and size, Recall@K, self-distillation, model selection.

Cells are mean ± std over seeds (:func:`.stats.cell`); the best mean of each size is bold.
:func:`selection_quality` measures, from every run's curve, what choosing the evaluation on the
validation split costs against choosing it on the test classes.
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Iterable, Sequence

from .methods import SELF_METHODS
from .recipe import Recipe
from .stats import Index, cell, l2_text, label, mean_std, self_iterations, self_label

#: the Recall@K columns
KS = (1, 2, 4, 8)


def table_r1(idx: Index, protocol: str, sizes: Sequence[int], n_seeds: int) -> str:
    """Recall@1 (%) of every (method, student L2) row at every size under ``protocol``."""
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
    """Recall@1/2/4/8 (val-selected) and best-on-test Recall@1 at size ``dim``, with the teacher and self-distillation."""
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


def table_self(idx: Index, recipe: Recipe, n_seeds: int) -> str:
    """The teacher against the self-distilled students, with the val-selected Recall@1 of each seed."""
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
    """The table of :func:`selection_quality`, one row per kind of run."""
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
