"""The report's "learning speed" section: a shorter study of the same methods, shown beside the converged one.

A study whose students stop while still improving (the first study: 120 iterations per student)
measures how fast each method learns, not what it reaches; its table is kept, labelled as such,
with the share of its runs that were still improving at their last evaluation.
"""

from __future__ import annotations

import json
from pathlib import Path

from .formatting import display_path, schedule_text
from .recipe import Recipe
from .stats import Index
from .study_dir import RECORDS, STUDY, read_records
from .tables import selection_quality, table_r1


def learning_speed_section(study_dir: str | Path) -> list[str]:
    """Markdown lines: the val-selected Recall@1 table of the study in ``study_dir`` and its budget."""
    study_dir = Path(study_dir)
    if not (study_dir / STUDY).is_file() or not (study_dir / RECORDS).is_file():
        raise SystemExit(f"--learning-speed {study_dir}: no study there (study.json and records.jsonl)")
    study = json.loads((study_dir / STUDY).read_text())
    recipe = Recipe.from_dict(study["recipe"])
    records = list(read_records(study_dir).values())
    idx = Index(records)
    seeds = sorted({int(r["seed"]) for r in records if r["kind"] != "teacher"})
    students = selection_quality(records).get("student") or {"runs": 0, "last_val": 0, "last_test": 0}
    n = students["runs"]
    teacher = ("one teacher per seed" if recipe.teacher_per_seed else "one teacher (seed 0) shared by every seed")
    lines = [
        f"## Learning speed: every student at {recipe.iterations} iterations",
        "",
        f"An earlier study (`{display_path(study_dir)}`) gave every student "
        f"{schedule_text(recipe.iterations, recipe.evals, recipe.lr_drops, recipe.lr_gamma, recipe.lr)}, "
        f"from {teacher} trained {recipe.teacher_iterations} iterations, with {recipe.val_fraction:.0%} of the "
        "training classes for validation.",
    ]
    if n:
        lines[-1] += (f" {students['last_test']} of its {n} student runs had their best test Recall@1 at the last "
                      f"evaluation and {students['last_val']} their best validation Recall@1: the students were "
                      "still improving when they stopped, so this table shows how fast each method learns, not "
                      "what it reaches; the verdicts above come from the converged study.")
    lines += [
        "",
        f"Val-selected test Recall@1 (%), mean ± std over seeds {', '.join(map(str, seeds))}:",
        "",
        table_r1(idx, "selected", idx.sizes(), len(seeds)),
        "",
        f"Its full report: `python -m studies.reproduction.report --out {display_path(study_dir)} --md <file>`.",
        "",
    ]
    return lines
