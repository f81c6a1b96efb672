"""``RELATIONAL.md``: the relational study's report, rendered from its records (``python -m studies.relational.report``).

Every number comes from ``<out>/records.jsonl`` and ``<out>/study.json``: symmetric test Recall@1
at the epoch chosen on the validation split, the asymmetric one (the student's queries in its
teacher's gallery, both at their chosen epochs), paired margins against RKD-DA by seed, and the
wall time of the sessions. A study that is not complete says so at the top.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..reproduction.formatting import display_path, fmt_duration, schedule_text
from ..reproduction.methods import METHODS
from ..reproduction.recipe import Recipe
from ..reproduction.report_sections import data_facts, describe_data, status, teacher_schedule
from ..reproduction.stats import Index, cell, fmt_diff, label, paired_diff, recall
from ..reproduction.study_dir import STUDY, read_records
from . import DEFAULT_OUT, RELATIONAL_METHODS, REPORT_MD

#: the reference of the paired margins
REFERENCE = "rkd-da"
#: the protocols of the tables: the selected epoch's own test Recall@1, and its queries in the teacher's gallery
SYMMETRIC, ASYMMETRIC = "selected", "asymmetric"


def _by_seed(idx: Index, method: str, protocol: str) -> dict[int, float]:
    """Recall@1 (%) by student seed of ``method`` (every width and L2 setting that ran: there is one of each)."""
    out: dict[int, float] = {}
    for (m, _l2, _dim), runs in idx.by.items():
        if m == method:
            out.update({s: v for s, r in runs.items() if (v := recall(r, protocol)) is not None})
    return out


def _l2(idx: Index, method: str) -> str:
    return "/".join(sorted({"yes" if l2 else "no" for (m, l2, _d) in idx.by if m == method})) or "–"


def results_table(idx: Index, methods: list[str], n_seeds: int) -> list[str]:
    """Method | student L2 | Recall@1 | its margin over RKD-DA | asymmetric Recall@1 | its margin."""
    ref = {p: _by_seed(idx, REFERENCE, p) for p in (SYMMETRIC, ASYMMETRIC)}
    lines = ["| Method | student L2 | R@1 | vs RKD-DA, paired | asymmetric R@1 (teacher's gallery) | vs RKD-DA, paired |",
             "|---|---|---|---|---|---|"]
    teacher = idx.teacher_values(SYMMETRIC)
    if teacher:
        lines.append(f"| Teacher (its own gallery) | yes | {cell(teacher, n_seeds)} | | {cell(teacher, n_seeds)} | |")
    for m in methods:
        row = [label(m), _l2(idx, m)]
        for p in (SYMMETRIC, ASYMMETRIC):
            values = _by_seed(idx, m, p)
            row += [cell(values, n_seeds), "" if m == REFERENCE else fmt_diff(paired_diff(values, ref[p]))]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def seeds_table(idx: Index, methods: list[str]) -> list[str]:
    """Recall@1 / asymmetric Recall@1 of every run, by student seed."""
    seeds = sorted({s for (m, _l, _d), runs in idx.by.items() if m in methods for s in runs})
    lines = ["| Method | " + " | ".join(f"seed {s}" for s in seeds) + " |", "|---|" + "---|" * len(seeds)]
    for m in methods:
        sym, asym = _by_seed(idx, m, SYMMETRIC), _by_seed(idx, m, ASYMMETRIC)
        cells = [f"{sym[s]:.1f} / {asym[s]:.1f}" if s in sym and s in asym else (f"{sym[s]:.1f} / –" if s in sym else "–")
                 for s in seeds]
        lines.append(f"| {label(m)} | " + " | ".join(cells) + " |")
    return lines


def wall_time(study: dict[str, Any], records: list[dict[str, Any]]) -> str:
    """The sessions' wall time, the runs' own time, and the machine."""
    sessions = study.get("sessions", [])
    wall = sum(float(s.get("wall_seconds") or 0) for s in sessions)
    runs = sum(float(r.get("wall_seconds") or 0) for r in records)
    m = next((s["machine"] for s in reversed(sessions) if s.get("machine")), {})
    where = (f"{m.get('workers')} worker(s) x {m.get('threads_per_worker')} thread(s) on {m.get('device', 'cpu')} "
             f"({m.get('cpu', '?')}, {m.get('logical_cores', '?')} logical cores, load at start "
             f"{m.get('load_average_at_start', '?')})") if m else "unknown"
    return (f"{fmt_duration(wall, words=True)} of wall time over {len(sessions)} session(s); the {len(records)} "
            f"recorded runs took {fmt_duration(runs, words=True)} together; {where}.")


def render_report(out: Path, md_path: Path) -> Path:
    """Write ``md_path`` from the study in ``out``; return its path."""
    out = Path(out)
    study = json.loads((out / STUDY).read_text())
    records = list(read_records(out).values())
    recipe = Recipe.from_dict(study["recipe"])
    idx = Index(records)
    ran = {m for (m, _l, _d) in idx.by}
    methods = [m for m in RELATIONAL_METHODS if m in ran] + sorted(ran - set(RELATIONAL_METHODS))
    planned = (study.get("selection") or {}).get("methods") or methods
    teacher_seeds = sorted(idx.teachers) or (study.get("selection") or {}).get("seeds", [])
    student_seeds = sorted({int(r["seed"]) for r in records if r["kind"] != "teacher"})
    facts = data_facts(study, records, recipe)
    budgets = study.get("budgets") or {}
    lines = [f"# Relational distillation losses and teacher-compatible students on {facts['title']}", "",
             f"<!-- Generated by {study['sessions'][-1]['command'].split(' --')[0] if study.get('sessions') else 'python -m studies.relational'} "
             "from the study's records; do not edit by hand. -->", "",
             f"Status: {status(study, records)}.", ""]
    if budgets.get("kind") == "quick":
        lines += ["**A --quick run: tiny models and budgets, a test of the pipeline; its numbers are not results.**", ""]
    lines += ["## Setup", "",
              f"- Data: {describe_data(facts, recipe)}.",
              "- Recipe: " + (f"the converged reproduction study's (`{budgets.get('recipe_of')}`; budgets "
                              f"{budgets.get('kind')}{': `' + budgets['file'] + '`' if budgets.get('file') else ''})"
                              if budgets.get("recipe_of") else "the --quick recipe")
              + f", precision {recipe.precision}{', channels-last' if recipe.channels_last else ''}.",
              f"- Teacher: timm `{recipe.teacher_model}` -> Linear({recipe.teacher_dim}) -> L2, triplet loss, "
              f"{teacher_schedule(recipe)}; one per seed ({', '.join(map(str, teacher_seeds))}); its epoch chosen on "
              "the validation split.",
              f"- Students: timm `{recipe.student_model}` -> Linear({recipe.teacher_dim}), as wide as the teacher so "
              f"that their queries can search its gallery; "
              f"{schedule_text(recipe.iterations, recipe.evals, recipe.lr_drops, recipe.lr_gamma, recipe.lr)}, batch "
              f"{recipe.batch_size} ({recipe.m_per_class} images per class); the student of study seed s trains with "
              f"seed s + {recipe.student_seed_offset} (seeds {', '.join(map(str, student_seeds)) or '–'}) and "
              "distils the teacher of seed s, so it shares neither its teacher's initialisation nor its batches.",
              "- Methods: " + "; ".join(f"{label(m)}: {METHODS[m].describe}" for m in planned if m in METHODS) + ".",
              "- Metrics: test Recall@1 at the epoch with the best validation Recall@1 (the saved model); "
              "**asymmetric Recall@1**: every test image embedded by that student queries the other test images "
              "embedded by its teacher (the teacher's saved model); paired margins are over the seeds both methods "
              "ran (each seed shares its teacher, data split and student seed).", "",
              "## Recall@1 (%) on the test classes, mean ± std over seeds", ""]
    lines += results_table(idx, methods, len(teacher_seeds) or 1)
    lines += ["", "Per run (student seed): Recall@1 / asymmetric Recall@1.", ""]
    lines += seeds_table(idx, methods)
    lines += ["", "## Wall time", "", wall_time(study, records), "",
              "## Notes", "",
              "- FitNet trains a linear map from the student's width to the teacher's inside its loss; the saved "
              "student is the network without that map, so its asymmetric Recall@1 measures its own embedding in the "
              "teacher's gallery, not the mapped one.",
              "- A student's validation classes are drawn with its own seed, so some of them were training classes "
              "of its teacher: the choice of the epoch may favour what the teacher learnt; the test classes are "
              "unseen by both.",
              "- Every method trains the converged recipe's common student budget; PKT, SP, CC, relaxed contrastive "
              "and the compat term had no curves of their own, and the epoch chosen on validation guards against a "
              "budget that is too long, not one that is too short.", ""]
    md_path = Path(md_path)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text("\n".join(lines))
    return md_path


def render(args: argparse.Namespace, out: Path, quiet: bool = False) -> None:
    """The scheduler's renderer: write ``args.report_md``; a failure is reported, the records stay."""
    try:
        md = render_report(out, Path(args.report_md))
    except Exception as exc:  # noqa: BLE001 - the records are safe; --report-only renders later
        print(f"report not rendered: {type(exc).__name__}: {exc}", flush=True)
        return
    if not quiet:
        print(f"report: {display_path(md)}", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Render the report of ``--out`` into ``--md``."""
    p = argparse.ArgumentParser(prog="python -m studies.relational.report", description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(DEFAULT_OUT), help="the study directory")
    p.add_argument("--md", default=None, help=f"the report (default OUT/{REPORT_MD})")
    args = p.parse_args(argv)
    if not (Path(args.out) / STUDY).is_file():
        print(f"--out {args.out}: no study there (run python -m studies.relational first)", file=sys.stderr)
        return 2
    print(render_report(Path(args.out), Path(args.md) if args.md else Path(args.out) / REPORT_MD))
    return 0


if __name__ == "__main__":
    sys.exit(main())
