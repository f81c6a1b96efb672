"""The report's text sections: the study's status, its data, its schedules and budgets, and the caveats.

Each is computed from study.json and the records: the data file, the splits' sizes, the
schedules and where the budgets came from are the ones that ran.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from . import REPO
from .formatting import display_path, schedule_text
from .recipe import BASE_STUDENT_ITERATIONS, BASE_TEACHER_ITERATIONS, Recipe
from .selection import planned_keys
from .stats import Index, label

#: the paper's student budget: 80 epochs x 100 iterations of batch 128, from ImageNet weights
PAPER_STUDENT_ITERATIONS = 8000


def status(study: dict[str, Any], records: list[dict[str, Any]]) -> str:
    """Complete, or partial with the runs that are missing."""
    keys = planned_keys(study)
    if keys is None:
        planned = max((s.get("planned", 0) for s in study.get("sessions", [])), default=0)
        done, missing = len(records), []
    else:
        planned = len(keys)
        missing = sorted(keys - {r["key"] for r in records})
        done = planned - len(missing)
    if done >= planned:
        return f"complete: all {planned} planned runs recorded"
    shown = ", ".join(f"`{k}`" for k in missing[:12]) + (f" and {len(missing) - 12} more" if len(missing) > 12 else "")
    return (f"**partial: {done} of {planned} planned runs recorded**" + (f" (missing: {shown})" if missing else "")
            + "; the study is still running or was stopped, and the same command continues it")


def teacher_schedule(r: Recipe) -> str:
    """The teacher's schedule in words."""
    return schedule_text(r.teacher_iterations, r.teacher_evals, r.teacher_lr_drops, r.teacher_lr_gamma, r.teacher_lr)


def data_facts(study: dict[str, Any], records: list[dict[str, Any]], recipe: Recipe) -> dict[str, Any]:
    """What the data was: the file (from the sessions) and the splits' sizes (from the runs' logs)."""
    info = next((s["data"] for s in reversed(study.get("sessions", [])) if s.get("data")), None) or {
        "dataset": recipe.dataset, "root": recipe.root, "name": Path(recipe.root).name if recipe.root else None}
    counts = next((r["data"] for r in records if r["kind"] == "teacher" and r.get("data")), None) or next(
        (r["data"] for r in records if r.get("data")), None)
    name = info.get("name") or recipe.dataset
    if recipe.dataset == "omniglot":
        title = f"Omniglot (`{name}`)"
    elif recipe.dataset == "folder":
        title = f"the image folder `{name}`"
    else:
        title = f"the `{recipe.dataset}` data set"
    return {"info": info, "counts": counts, "title": title, "name": name}


def describe_data(facts: dict[str, Any], recipe: Recipe) -> str:
    """The data in words: the file, its size and hash, and the train, validation and test splits."""
    info, counts = facts["info"], facts["counts"]
    where = f"`{display_path(Path(info['root']))}`" if info.get("root") else f"the `{recipe.dataset}` data set"
    extra = []
    if info.get("bytes"):
        b = info["bytes"]
        extra.append(f"{b / 1e6:.1f} MB" if b >= 1e5 else f"{b / 1e3:.0f} kB")
    if info.get("sha256"):
        extra.append(f"SHA-256 `{info['sha256'][:16]}…`")
    if info.get("files"):
        extra.append(f"{info['files']} files")
    text = f"{where} ({recipe.dataset} layout{', ' + ', '.join(extra) if extra else ''}) at {recipe.image_size} px"
    if counts:
        tr, te, va = counts["train"], counts["test"], counts.get("val")
        n_train_classes = tr["classes"] + (va["classes"] if va else 0)
        text += (f": {n_train_classes + te['classes']} classes; the first half of the classes ({n_train_classes}) "
                 f"trains, the second half ({te['classes']} classes, {te['images']} images, never seen in training) is "
                 "the test set")
        if va:
            text += (f"; {va['classes']} of the {n_train_classes} training classes ({va['images']} images, "
                     f"{recipe.val_fraction:.0%}) are a class-disjoint **validation split used for model selection**, "
                     f"drawn with each run's seed, leaving {tr['classes']} classes ({tr['images']} images) to train on")
    else:
        text += (f"; the first half of the classes trains, the second half (never seen in training) is the test set; "
                 f"{recipe.val_fraction:.0%} of the training classes are held out as a class-disjoint **validation "
                 "split used for model selection**")
    return text


def budget_source(study: dict[str, Any]) -> dict[str, Any]:
    """Where the study's budgets came from (the first study's were fixed by hand: ``legacy``)."""
    return study.get("budgets") or {"kind": "legacy"}


def read_curve_budgets(source: dict[str, Any]) -> tuple[dict[str, Any] | None, Path | None]:
    """The curves' budgets.json and directory, for budgets chosen from curves; (None, None) otherwise."""
    if source.get("kind") != "curves" or not source.get("file"):
        return None, None
    path = Path(source["file"])
    path = path if path.is_absolute() else REPO / path
    if not path.is_file():
        return None, None
    return json.loads(path.read_text()), path.parent


def whose_teacher(recipe: Recipe) -> str:
    """Which teacher a student distils from, in words."""
    return "its seed's teacher" if recipe.teacher_per_seed else "the shared teacher"


def describe_budgets(source: dict[str, Any], curve_budgets: dict[str, Any] | None, recipe: Recipe) -> str:
    """The budgets and where they came from, in words."""
    kind = source.get("kind")
    if kind == "curves":
        text = (f"chosen from curves (`{source.get('file')}`): teacher {recipe.teacher_iterations}, students "
                f"{recipe.iterations}, self-distillation {recipe.self_iterations} iterations")
        if curve_budgets:
            text += ("; students get the largest of the methods' budgets ("
                     + ", ".join(f"{label(m)} {b}" for m, b in (curve_budgets.get("students_by_method") or {}).items())
                     + ")")
        return text + "; see *Budgets chosen from curves*."
    if kind == "scale":
        return (f"the first study's budgets ({BASE_STUDENT_ITERATIONS} and {BASE_TEACHER_ITERATIONS} "
                f"iterations) times {source.get('scale'):g} (teacher x{source.get('teacher_scale'):g}), "
                "not chosen from curves.")
    if kind == "legacy":
        return "fixed by hand (the first study), not chosen from curves."
    if kind == "quick":
        return "the tiny --quick budgets (a test of the pipeline, not a result)."
    return "the script's defaults, not chosen from curves" + (
        f" (given explicitly: {', '.join(source['explicit'])})" if source.get("explicit") else "") + "."


def caveats(recipe: Recipe, idx: Index, quality: dict[str, dict[str, Any]], source: dict[str, Any],
            curve_budgets: dict[str, Any] | None, facts: dict[str, Any]) -> list[str]:
    """What limits the comparison with the paper: the budget, self-distillation's ratio, a shared
    teacher, the validation split."""
    out = []
    students = quality.get("student")
    still = students and students["runs"] and students["last_val"] / students["runs"] > 0.5
    scratch = (f"every student trains {recipe.iterations} iterations of batch {recipe.batch_size} from scratch (the "
               f"paper: {PAPER_STUDENT_ITERATIONS:,} iterations of batch 128 from ImageNet weights); the teacher trains "
               f"{recipe.teacher_iterations}")
    if source.get("kind") == "quick":
        out.append(f"Short budget: {scratch}; --quick checks the pipeline and its numbers are not results.")
    elif still:
        out.append(f"Short budget: {scratch}. In {students['last_val']} of {students['runs']} student runs the best "
                   "validation Recall@1 is at the last evaluation: the students were still improving, which can favour "
                   "losses that learn fast over losses that learn well.")
    elif source.get("kind") == "curves":
        per_run = (curve_budgets or {}).get("per_run") or {}
        rising = [k for k, p in per_run.items() if not p.get("converged")]
        capped = [k for k, p in per_run.items() if p.get("capped") and p.get("converged")]
        out.append(f"Budget: {scratch}, chosen where the curves stopped improving"
                   + (f"; the curves of {', '.join(rising)} had not plateaued within their length, so those budgets are a "
                      "lower bound" if rising else "")
                   + (f"; the budgets of {', '.join(capped)} were capped at the curves' length, so their first "
                      "learning-rate drop comes before the iteration where their constant-rate curve levelled off"
                      if capped else "")
                   + (f". {students['last_val']} of {students['runs']} student runs have their best validation Recall@1 at "
                      "the last evaluation." if students else "."))
    else:
        out.append(f"Budget: {scratch}; not chosen from curves"
                   + (f" ({students['last_val']} of {students['runs']} student runs have their best validation Recall@1 "
                      "at the last evaluation)." if students else "."))
    if idx.self_methods():
        ratio = None if recipe.self_scale is None else recipe.self_scale
        if ratio is None or ratio < 2:
            out.append(f"The self-distilled student trains {recipe.self_iterations} iterations against its teacher's "
                       f"{recipe.teacher_iterations}; the paper gives it twice the teacher's budget, so this comparison "
                       "favours the teacher.")
        if idx.has("self-long"):
            out.append(f"The variant on the teacher's schedule trains {recipe.teacher_iterations} iterations, half of "
                       "the paper's ratio.")
    if not recipe.teacher_per_seed:
        out.append("One teacher (seed 0) serves every seed: the standard deviations cover the students' initialisation "
                   "and batches, not the teacher's training; and because the validation classes are drawn with each "
                   "run's seed, the shared teacher trained on some of the other seeds' validation classes.")
    counts = facts.get("counts") or {}
    val_classes = (counts.get("val") or {}).get("classes")
    sel = [g for g in quality.values() if g["runs"]]
    if sel:
        runs = sum(g["runs"] for g in sel)
        hits = sum(g["hits"] for g in sel)
        regret = statistics.fmean(x for g in sel for x in g["regret"])
        out.append(f"Model selection uses one validation split of {val_classes or 'the held-out'} classes "
                   f"({recipe.val_fraction:.0%} of the training classes); the val-selected evaluation was the best test "
                   f"evaluation in {hits} of {runs} runs and cost {regret:.1f} test points on average against the "
                   "best-on-test protocol, which is biased upwards by construction.")
    if recipe.val_fraction >= 0.5:
        out.append(f"Holding out {recipe.val_fraction:.0%} of the training classes for validation leaves fewer classes "
                   "to train on than the paper's protocol (which has no validation split), for every method alike.")
    return out
