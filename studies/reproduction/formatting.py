"""Durations, learning-rate schedules and paths, as the printed output and the report write them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from . import REPO
from .recipe import milestones


def fmt_duration(seconds: float, words: bool = False) -> str:
    """``1h02m03s`` / ``2m03s`` (the printed progress and estimates), or with ``words``
    ``1 h 02 min`` / ``2 min 03 s`` (the report)."""
    seconds = int(round(max(seconds, 0)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    if words:
        return f"{h} h {m:02d} min" if h else f"{m} min {s:02d} s"
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def schedule_text(iterations: int, evals: int, drops: Sequence[float], gamma: float, lr: float,
                  brief: bool = False) -> str:
    """A schedule in words: the budget, the learning rate and its drops, and the evaluations.

    ``brief``: the one-line form of the dry run (iterations of each drop, evaluation interval);
    else the report's (with the drops as fractions of the budget and the number of evaluations)."""
    ms = milestones(evals, drops)
    ipe = iterations // evals
    after = ", ".join(str(m * ipe) for m in ms)
    if brief:
        drop = f", lr x{gamma:g} after {after}" if ms else ", constant lr"
        return f"{iterations} iterations (Adam lr {lr:g}{drop}; evaluated every {ipe})"
    drop = (f" x{gamma:g} after iterations {after}"
            f" ({', '.join(f'{m / evals:.0%}' for m in ms)} of the budget)") if ms else ", constant"
    return f"{iterations} iterations, Adam lr {lr:g}{drop}, evaluated every {ipe} iterations ({evals} evaluations)"


def display_path(path: str | os.PathLike) -> str:
    """``path`` relative to the repository when it is inside it, else absolute."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)
