"""The report of a study (or the budgets and figure of a curves directory), rendered during and after its runs.

Each rendering reloads the report's modules, so a long study renders with the current report code;
a report that fails to render is reported and leaves the records as they are (it can be rendered
later with ``--report-only`` or ``python -m studies.reproduction.report``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from pathlib import Path
from types import ModuleType

from .study_dir import BUDGETS, CURVES_PNG

#: the modules of the report, in the order they import each other
REPORT_MODULES = ("formatting", "stats", "tables", "claims", "plots", "report_sections", "learning_speed",
                  "results_report", "curves_report")


def current_report_code(name: str) -> ModuleType:
    """The report's module ``name``, after the current code of every report module has been loaded."""
    for module in REPORT_MODULES:
        full = f"{__package__}.{module}"
        if full in sys.modules:
            importlib.reload(sys.modules[full])
        else:
            importlib.import_module(full)
    return sys.modules[f"{__package__}.{name}"]


def render(args: argparse.Namespace, out: Path, quiet: bool = False) -> None:
    """Render the study's report into ``args.report_md`` and ``args.report_png``."""
    try:
        md = current_report_code("results_report").render_report(out, args.report_md, args.report_png)
    except Exception as exc:  # noqa: BLE001 - the records are safe; the report can be rendered later
        print(f"report not rendered: {type(exc).__name__}: {exc}", flush=True)
        if not quiet:
            traceback.print_exc()
        return
    if not quiet:
        print(f"report: {md}", flush=True)


def render_curves(args: argparse.Namespace, out: Path, quiet: bool = False) -> None:
    """Render a curves directory: budgets.json (by the budget rule of ``args``), curves.png and CURVES.md."""
    try:
        budgets = current_report_code("curves_report").render_curves(out, rule=args.budget_rule,
                                                                     points=args.plateau_points,
                                                                     smooth=args.plateau_smooth)
    except Exception as exc:  # noqa: BLE001
        print(f"curves not rendered: {type(exc).__name__}: {exc}", flush=True)
        if not quiet:
            traceback.print_exc()
        return
    if not quiet:
        print(f"curves: {out / CURVES_PNG}; budgets: {out / BUDGETS} (teacher {budgets['teacher_iterations']}, "
              f"students {budgets['iterations']}, self-distillation {budgets['self_iterations']} iterations"
              f"{'' if budgets['complete'] else '; the curves are not complete'})", flush=True)
