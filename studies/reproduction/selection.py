"""Which runs a command selects: the grid (full, reduced or --quick), narrowed by the command line.

:func:`choose_grid` picks the grid from the estimates of both (a study keeps the grid it started
with); :func:`planned_keys` lists the runs that the sessions of a study planned, re-reading the
commands of sessions that did not record them (the first study's).
"""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from .cli import build_parser
from .cost import CostModel
from .methods import DEFAULT_METHODS, LEGACY_DEFAULT_METHODS
from .plan import DEFAULT_SEEDS, GRIDS, QUICK_SELECTION, Job, describe_grid, plan_jobs
from .recipe import Recipe


def _narrowing_flags(args: argparse.Namespace) -> list[tuple[str, Any]]:
    """The command line's flags that narrow a grid, with their values (those given)."""
    given = (("--seeds", args.seeds), ("--sizes", args.sizes), ("--methods", args.methods), ("--l2", args.l2))
    return [(flag, v) for flag, v in given if v]


def _parse_command(command: str) -> argparse.Namespace:
    """The arguments of a recorded ``python -m studies.reproduction ...`` (or, before it,
    ``python .../reproduce.py ...``) command."""
    argv = shlex.split(command)
    i = next((k for k, a in enumerate(argv) if a.endswith("reproduce.py") or a == "studies.reproduction"), 1)
    return build_parser().parse_args(argv[i + 1:])


def selection_of_grid(args: argparse.Namespace, grid: str) -> dict[str, Any]:
    """Seeds, sizes, methods and the student L2 spec of ``grid``, overridden by the command line."""
    if args.quick:
        g = dict(sizes=QUICK_SELECTION["sizes"], methods=QUICK_SELECTION["methods"], l2={"*": "both"})
        seeds = QUICK_SELECTION["seeds"]
    else:
        g, seeds = GRIDS[grid], DEFAULT_SEEDS
    return {
        "seeds": tuple(args.seeds or seeds),
        "sizes": tuple(args.sizes or g["sizes"]),
        "methods": tuple(args.methods or g["methods"]),
        "l2": {"*": args.l2} if args.l2 else dict(g["l2"]),
    }


def plan_selection(recipe: Recipe, sel: dict[str, Any]) -> list[Job]:
    """The runs of a selection (:func:`selection_of_grid`)."""
    return plan_jobs(recipe, sel["seeds"], sel["sizes"], sel["methods"], sel["l2"])


def choose_grid(args: argparse.Namespace, recipe: Recipe, cost: CostModel, workers: int,
                study: dict[str, Any] | None) -> dict[str, Any]:
    """The grid this command runs, with the estimates of both grids (from scratch) behind the choice.

    ``first``: the reason and estimates of the study's first session (kept by every later one)."""
    estimates = {}
    for name in () if args.quick else GRIDS:
        jobs = plan_selection(recipe, selection_of_grid(args, name))
        estimates[name] = {"runs": len(jobs), "hours": round(cost.total(jobs, workers) / 3600, 2)}
    limit = args.grid_limit_hours
    first = None  # why and with which estimates the study's grid was chosen when it started
    if args.quick:
        name, reason = "quick", "--quick"
    elif args.grid != "auto":
        name, reason = args.grid, f"--grid {args.grid}"
    elif study and (study.get("grid") or {}).get("name") in GRIDS:
        name = study["grid"]["name"]
        first = study["grid"].get("first") or {k: study["grid"].get(k) for k in ("reason", "estimates", "workers")}
        reason = "the grid this study started with"
    elif estimates["full"]["hours"] <= limit:  # noqa: SIM114
        name, reason = "full", f"the full grid's estimate ({estimates['full']['hours']:.1f} h) is within {limit:g} h"
    else:
        name, reason = "reduced", (f"the full grid's estimate ({estimates['full']['hours']:.1f} h) exceeds {limit:g} h")
    sel = selection_of_grid(args, name if name in GRIDS else "full")
    custom = [flag for flag, _v in _narrowing_flags(args)]
    return {
        "name": name,
        "description": describe_grid(name) if name in GRIDS else "the --quick selection",
        "reason": reason + (f"; narrowed by {', '.join(custom)}" if custom else ""),
        "selection": {"seeds": list(sel["seeds"]), "sizes": list(sel["sizes"]), "methods": list(sel["methods"]),
                      "l2": sel["l2"]},
        "estimates": estimates, "limit_hours": limit, "workers": workers,
        "first": first or {"reason": reason, "estimates": estimates, "workers": workers},
    }


def command_keys(command: str, recipe: dict[str, Any]) -> list[str]:
    """The keys of the runs that a recorded session command plans in a study of ``recipe``
    (for sessions that did not record their keys: the first study's)."""
    args = _parse_command(command)
    legacy = "eval_every" in recipe
    r = Recipe.from_dict(recipe)
    seeds = args.seeds or DEFAULT_SEEDS
    if legacy:
        sizes = args.sizes or (16, 32, 64, 128)
        methods = args.methods or LEGACY_DEFAULT_METHODS
        if args.methods == DEFAULT_METHODS:  # "all" meant the first study's methods
            methods = LEGACY_DEFAULT_METHODS
        l2 = {"*": args.l2 or "both"}
        return [j.key for j in plan_jobs(r, seeds, sizes, methods, l2)]
    sel = selection_of_grid(args, args.grid if args.grid in GRIDS else "full")
    return [j.key for j in plan_selection(r, sel)]


def command_narrowing(command: str) -> str | None:
    """How a recorded session command narrowed its grid (``"--sizes 64"``), or None (or unreadable)."""
    try:
        args = _parse_command(command)
    except SystemExit:
        return None
    parts = [f"{flag} {','.join(map(str, v)) if isinstance(v, (list, tuple)) else v}"
             for flag, v in _narrowing_flags(args)]
    return " ".join(parts) or None


def planned_keys(study: dict[str, Any]) -> set[str] | None:
    """The runs planned by the study's sessions (recorded, or re-planned from their commands);
    None when a session's command cannot be re-read."""
    keys: set[str] = set()
    try:
        for s in study.get("sessions", []):
            if s.get("planned_keys") is not None:
                keys |= set(s["planned_keys"])
            elif s.get("command"):
                keys |= set(command_keys(s["command"], study["recipe"]))
    except (Exception, SystemExit):  # noqa: BLE001 - fall back to the sessions' counts
        return None
    return keys
