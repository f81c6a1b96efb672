"""The records of a study indexed by method, student L2 and size, and the statistics over seeds.

Recall values are in percent; a record's protocols are ``selected`` (the evaluation chosen on
the validation split) and ``best_on_test`` (the best test evaluation, the paper's protocol).
Runs with the same seed are paired (same initialisation, batches and validation classes).
"""

from __future__ import annotations

import statistics
from typing import Any, Iterable

from .methods import METHODS, SELF_METHODS, STUDENT_METHODS
from .recipe import Recipe

PROTOCOLS = {"selected": "epoch chosen on validation", "best_on_test": "best test epoch (paper's protocol)"}


def label(method: str) -> str:
    """The method's name in the tables and figures."""
    if method == "teacher":
        return "Teacher (triplet)"
    return METHODS[method].label if method in METHODS else method


def recall(rec: dict[str, Any], protocol: str, k: int = 1) -> float | None:
    """Test Recall@k (%) of a record under ``protocol``; None when it was not measured."""
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
        """Recall@k (%) by seed of the students of one method, L2 setting and size."""
        out = {}
        for seed, rec in self.by.get((method, l2, dim), {}).items():
            v = recall(rec, protocol, k)
            if v is not None:
                out[seed] = v
        return out

    def self_values(self, protocol: str, k: int = 1, method: str = "self") -> dict[int, float]:
        """Recall@k (%) by seed of the self-distilled students of ``method``."""
        out = {}
        for (m, _l2, _dim), runs in self.by.items():
            if m == method:
                for seed, rec in runs.items():
                    v = recall(rec, protocol, k)
                    if v is not None:
                        out[seed] = v
        return out

    def teacher_values(self, protocol: str, k: int = 1) -> dict[int, float]:
        """Recall@k (%) of the teachers by seed."""
        return {s: v for s, r in self.teachers.items() if (v := recall(r, protocol, k)) is not None}

    def sizes(self) -> list[int]:
        """The students' embedding sizes that ran (self-distillation aside)."""
        return sorted({d for (m, _l2, d) in self.by if m not in SELF_METHODS})

    def has(self, method: str, l2: bool | None = None) -> bool:
        """Whether a run of ``method`` (with this student L2 setting, unless None) is recorded."""
        return any(m == method and (l2 is None or l == l2) for (m, l, _d) in self.by)

    def rows(self) -> list[tuple[str, bool]]:
        """(method, student L2) rows that ran, in the tables' order (with L2 first)."""
        methods = list(STUDENT_METHODS) + sorted({m for (m, _l, _d) in self.by}
                                                 - set(STUDENT_METHODS) - set(SELF_METHODS))
        return [(m, l2) for m in methods for l2 in (True, False) if self.has(m, l2)]

    def self_methods(self) -> list[str]:
        """The self-distillation variants that ran."""
        return [m for m in SELF_METHODS if self.has(m)]


def mean_std(values: Iterable[float]) -> tuple[float, float, int] | None:
    """Mean, sample standard deviation (0 for one value) and count; None for no values."""
    values = list(values)
    if not values:
        return None
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.fmean(values), std, len(values)


def cell(values: dict[int, float], n_expected: int, bold: bool = False) -> str:
    """A table cell: mean ± std over seeds, with the count when it is not ``n_expected``."""
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
    """A paired difference in words: the margin, the seeds that agree, and whether it is within noise."""
    if d is None:
        return "n/a"
    mean, std, wins, n = d
    noise = " (within noise)" if n > 1 and abs(mean) <= std else ""
    return f"{mean:+.1f} pts, {wins}/{n} seeds{noise}"


def l2_text(l2: bool) -> str:
    """The tables' student L2 column."""
    return "yes" if l2 else "no"


def self_label(method: str, recipe: Recipe) -> str:
    """The name of a self-distillation variant, with its budget."""
    if method == "self-long":
        return f"Self-distillation on the teacher's schedule ({recipe.teacher_iterations} iterations)"
    if recipe.self_scale is None:
        return f"{label('self')}, students' budget ({recipe.iterations} iterations)"
    return f"{label('self')}, {recipe.self_scale:g} x the teacher's budget ({recipe.self_iterations} iterations)"


def self_budget(method: str, recipe: Recipe) -> str:
    """A self-distillation variant's budget in words (``at N iterations (...)``)."""
    if method == "self-long":
        what = "the teacher's schedule"
    elif recipe.self_scale is None:
        what = "the students' budget"
    else:
        what = f"{recipe.self_scale:g} x the teacher's budget"
    return f"at {self_iterations(method, recipe)} iterations ({what})"


def self_iterations(method: str, recipe: Recipe) -> int:
    """The iterations a self-distillation variant trains."""
    return recipe.teacher_iterations if method == "self-long" else recipe.self_iterations


def self_vs_teacher(idx: Index, protocol: str, method: str
                    ) -> tuple[dict[int, float], dict[int, float], tuple[float, float, int, int] | None] | None:
    """(self-distilled values, teacher values paired by seed, paired difference) or None."""
    s, t = idx.self_values(protocol, method=method), idx.teacher_values(protocol)
    if not s or not t:
        return None
    if len(t) == 1:  # one teacher shared by every seed
        tv = next(iter(t.values()))
        t = {seed: tv for seed in s}
    return s, t, paired_diff(s, t)
