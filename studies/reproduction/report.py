#!/usr/bin/env python
"""Render the reproduction study's report (Markdown + figures) from its records.

Everything in the report is computed from ``<out>/records.jsonl`` and ``<out>/study.json``
written by ``python -m studies.reproduction`` (and, for budgets chosen from curves, the curves'
``budgets.json``): the data file, the methods, the student L2 settings, the sizes and the budgets
are the ones that ran; nothing is typed in by hand. By default the report goes into the study
directory; ``--docs DIR`` writes it (``RESULTS.md`` and its figures) into DIR instead::

    python -m studies.reproduction.report --out studies/reproduction/results/reproduce-converged \
        --docs studies/reproduction --learning-speed studies/reproduction/results/reproduce

A curves directory (``python -m studies.reproduction --curves``) renders its figure and budgets instead::

    python -m studies.reproduction.report --out studies/reproduction/results/reproduce-curves
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .cli import DEFAULT_OUT
from .curves import BUDGET_RULES, PLATEAU_POINTS, PLATEAU_SMOOTH
from .curves_report import render_curves
from .results_report import render_report
from .study_dir import CURVES_MD, CURVES_PNG, REPORT_MD, REPORT_PNG, STUDY

__all__ = ["main", "render_curves", "render_report"]


def main(argv: list[str] | None = None) -> int:
    """Render the report (or, for a curves directory, its budgets and figure) of ``--out``."""
    p = argparse.ArgumentParser(prog="python -m studies.reproduction.report", description=__doc__.splitlines()[0])
    p.add_argument("--out", default=DEFAULT_OUT, help="study (or curves) directory")
    p.add_argument("--docs", default=None, metavar="DIR",
                   help=f"write {REPORT_MD} and its figures (a curves directory: {CURVES_MD} and {CURVES_PNG}) into DIR "
                        "(default: the study directory)")
    p.add_argument("--md", default=None, help=f"report path (default DOCS/{REPORT_MD})")
    p.add_argument("--png", default=None, help=f"figure path (default DOCS/{REPORT_PNG})")
    p.add_argument("--learning-speed", default=None, metavar="DIR",
                   help="a shorter study of the same methods (e.g. studies/reproduction/results/reproduce, 120 iterations per "
                        "student), shown as a labelled learning-speed table")
    p.add_argument("--budget-rule", choices=BUDGET_RULES, default="first-drop", help="curves only")
    p.add_argument("--plateau-points", type=float, default=PLATEAU_POINTS, help="curves only")
    p.add_argument("--plateau-smooth", type=int, default=PLATEAU_SMOOTH, help="curves only")
    args = p.parse_args(argv)
    out = Path(args.out)
    if not (out / STUDY).is_file():
        print(f"no study in {out}: run python -m studies.reproduction first", file=sys.stderr)
        return 2
    study = json.loads((out / STUDY).read_text())
    if study.get("mode") == "curves":
        budgets = render_curves(out, args.budget_rule, args.plateau_points, args.plateau_smooth, args.docs)
        print(json.dumps({k: budgets[k] for k in ("teacher_iterations", "iterations", "self_iterations", "complete")}))
        return 0
    docs = Path(args.docs) if args.docs else out
    md = Path(args.md) if args.md else docs / REPORT_MD
    png = Path(args.png) if args.png else md.parent / REPORT_PNG
    print(render_report(out, md, png, args.learning_speed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
