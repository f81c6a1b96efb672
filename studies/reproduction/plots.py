"""The figures: Recall@1 versus embedding size (the study), and the curve runs with their plateaus (the curves).

Both are drawn with matplotlib's Agg backend and written through a temporary file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from .curves import moving_average
from .methods import STUDENT_METHODS
from .recipe import Recipe
from .stats import PROTOCOLS, Index, label, mean_std, self_iterations


def plot(idx: Index, sizes: Sequence[int], path: Path, recipe: Recipe, data_name: str) -> None:
    """Recall@1 versus student embedding size, one panel per protocol, with the teacher and self-distillation."""
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


def _save(fig: Any, path: Path) -> None:
    """Write the figure as PNG through a temporary file."""
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
            ax.plot(xs, moving_average(val, smooth), "-", color=colour, label=f"{text}")
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
