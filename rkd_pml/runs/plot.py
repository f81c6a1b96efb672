"""Recall@1 curves (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..files import atomic_write


def _curve(records: Sequence[Mapping[str, Any]], split: str, key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for r in records:
        metrics = r.get(split)
        if isinstance(metrics, Mapping) and metrics.get(key) is not None:
            xs.append(int(r["epoch"]))
            ys.append(100.0 * float(metrics[key]))
    return xs, ys


def plot_recall(
    runs: Mapping[str, Sequence[Mapping[str, Any]]],
    path: str | os.PathLike,
    title: str = "Recall@1 per epoch",
    key: str = "recall@1",
) -> Path:
    """Plot ``key`` per epoch for each named run (test split solid, validation dashed)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # no pyplot: no global state, thread safe

    fig = Figure(figsize=(6.4, 4.2), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    for i, (name, records) in enumerate(runs.items()):
        color = f"C{i}"
        for split, style in (("test", "-"), ("val", "--")):
            xs, ys = _curve(records, split, key)
            if xs:
                label = name if split == "test" else f"{name} (val)"
                ax.plot(xs, ys, style, color=color, marker="o", markersize=3, label=label)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{key.replace('recall', 'Recall')} (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right")
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda f: fig.savefig(f, format="png"))
    return path
