"""The classification study's report: the table of top-1 accuracies and the curves, from its records."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .study import LABELS, run_key


def summarize(records: dict[str, dict], methods, seeds) -> list[dict]:
    """One row per method: top-1 test accuracy mean and std (over seeds), selected epochs."""
    rows = []
    for method in ("teacher", *methods):
        runs = [records[k] for k in ([run_key("teacher", 0)] if method == "teacher" else
                                     [run_key(method, s) for s in seeds]) if k in records]
        if runs:
            acc = np.array([100 * r["test"] for r in runs])
            val = np.array([[100 * c["val"] for c in r["curve"]] for r in runs])
            rows.append({"method": method, "model": runs[0]["model"], "n": len(runs), "mean": acc.mean(),
                         "std": acc.std(ddof=1) if len(runs) > 1 else 0.0,
                         "epochs": [r["selected_epoch"] for r in runs],
                         "of": runs[0]["epochs"], "last": np.mean([100 * r["last_test"] for r in runs]),
                         "late_gain": val[:, -5:].mean() - val[:, -10:-5].mean() if val.shape[1] >= 10 else np.nan})
    return rows


def table(rows: list[dict]) -> str:
    """Markdown; "late val gain": mean val top-1 of the last 5 epochs minus the 5 before (points)."""
    lines = ["| Method | Model | Top-1 test (%) | Seeds | Selected epochs | Last-epoch top-1 (%) | Late val gain |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {LABELS[r['method']]} | {r['model']} | {r['mean']:.1f} +- {r['std']:.1f} | {r['n']} | "
                     f"{', '.join(map(str, r['epochs']))} of {r['of']} | {r['last']:.1f} | {r['late_gain']:+.1f} |")
    return "\n".join(lines)


def plot(records: dict[str, dict], methods, seeds, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    teacher = records.get(run_key("teacher", 0))
    for split, style in (("val", "-"), ("test", "--")) if teacher else ():
        ep, acc = zip(*[(c["epoch"], 100 * c[split]) for c in teacher["curve"]])
        axes[0].plot(ep, acc, style, label=split)
        axes[0].set_title(f"Teacher {teacher['model']} (grey: epoch chosen on val)")
        axes[0].axvline(teacher["selected_epoch"], color="grey", lw=0.8)
    finals = [100.0]
    for method in methods:
        runs = [records[run_key(method, s)] for s in seeds if run_key(method, s) in records]
        if runs:
            val = np.array([[100 * c["val"] for c in r["curve"]] for r in runs])
            ep = np.arange(1, val.shape[1] + 1)
            line, = axes[1].plot(ep, val.mean(0), label=LABELS[method])
            axes[1].fill_between(ep, val.min(0), val.max(0), color=line.get_color(), alpha=0.15)
            finals.append(val.mean(0)[-1])
    axes[1].set_ylim(max(0.0, min(finals) - 15), min(100.0, max(finals[1:] or finals) + 4))
    axes[1].set_title("Students: validation top-1 (mean, min-max over seeds)")
    for ax in axes:
        ax.set(xlabel="epoch", ylabel="top-1 (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
