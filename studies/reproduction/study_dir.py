"""A study directory: its files, the records of finished runs and the study's description.

``records.jsonl`` holds one JSON line per finished run, appended and flushed when the run ends
(the last record of a key wins; a line cut by a crash is ignored), so a study stopped at any
moment continues from its records. ``study.json`` holds the recipe (which must match to resume),
the grid, where the budgets came from, and one entry per session (its command, machine and data).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import platform
from pathlib import Path
from typing import Any, Iterator

from rkd_pml.files.atomic import atomic_write_text
from rkd_pml.files.lock import LOCK_NAME, RunLock, RunLockedError, describe_holder
from rkd_pml.files.records import append_jsonl, latest_by_key

from .recipe import Recipe

RECORDS = "records.jsonl"
STUDY = "study.json"
BUDGETS = "budgets.json"
STUDY_FORMAT = "rkd-pml-reproduce/2"
#: the first study's format (its recipe has ``eval_every`` and ``lr_drop_at``; see :meth:`Recipe.from_dict`)
LEGACY_FORMAT = "rkd-pml-reproduce/1"
#: the report and its figures (in the study directory unless ``--docs DIR`` says otherwise)
REPORT_MD = "RESULTS.md"
REPORT_PNG = "results_recall_vs_dim.png"
REPORT_CURVES_PNG = "results_curves.png"
#: a curves directory's figure and page
CURVES_PNG = "curves.png"
CURVES_MD = "CURVES.md"
#: held (flock) by the command training in a study directory
LOCK = LOCK_NAME


def now() -> str:
    """The local time with its offset, to the second (the records' and the sessions' timestamps)."""
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def read_records(out: Path) -> dict[str, dict[str, Any]]:
    """Recorded runs by key (a line cut by a crash is ignored; the last record of a key wins)."""
    return latest_by_key(Path(out) / RECORDS, skip_damaged=True)  # earlier writers ended cut lines


def append_record(out: Path, record: dict[str, Any]) -> None:
    """Append one line, flushed to disk (a line cut by a crash before it is dropped)."""
    append_jsonl(Path(out) / RECORDS, record, what="the study's records")


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON through a temporary file, so a reader never sees half a file."""
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def machine_info(workers: int, threads: int, device: str = "cpu") -> dict[str, Any]:
    """The machine of a session: CPU, cores, workers and threads, the device its runs train on
    (and the GPU's name), load, and the library versions."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import torch

    info = {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "workers": workers,
        "threads_per_worker": threads,
        "device": device,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }
    if device.startswith("cuda"):
        with contextlib.suppress(Exception):
            info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    with contextlib.suppress(OSError, AttributeError):
        info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    with contextlib.suppress(Exception):
        import timm

        from rkd_pml._pml import pml_version

        info["timm"] = timm.__version__
        info["pytorch_metric_learning"] = pml_version()
    return info


def data_info(recipe: Recipe) -> dict[str, Any]:
    """The data the study reads: data set, location, and the file's size and SHA-256 (a folder: its files)."""
    info: dict[str, Any] = {"dataset": recipe.dataset, "root": recipe.root}
    if recipe.root is None:
        return info
    root = Path(recipe.root)
    info["name"] = root.name
    with contextlib.suppress(OSError):
        if root.is_file():
            info["bytes"] = root.stat().st_size
            if info["bytes"] <= 1 << 30:
                h = hashlib.sha256()
                with open(root, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
                info["sha256"] = h.hexdigest()
        elif root.is_dir():
            files = [p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")]
            info["files"], info["bytes"] = len(files), sum(p.stat().st_size for p in files)
    return info


def open_study(out: Path, recipe: Recipe, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read or create study.json; refuse to mix recipes (or a study and curves) in one directory."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / STUDY
    wanted = recipe.to_dict()
    meta = dict(meta or {})
    mode = meta.get("mode", "study")
    if path.is_file():
        study = json.loads(path.read_text())
        saved = Recipe.from_dict(study.get("recipe", {})).to_dict()
        diffs = [f"{k}: {saved.get(k)!r} -> {wanted.get(k)!r}" for k in sorted(set(saved) | set(wanted))
                 if saved.get(k) != wanted.get(k)]
        if diffs:
            raise SystemExit(
                f"{out} holds a study with another recipe ({'; '.join(diffs)}).\n"
                "Repeat its options to continue it, or choose another --out."
            )
        if study.get("mode", "study") != mode:
            raise SystemExit(f"{out} holds {study.get('mode', 'study')} runs, not {mode}: choose another --out")
        return study
    study = {"format": STUDY_FORMAT, "mode": mode, "recipe": wanted, "created": now(), **meta, "sessions": []}
    write_json_atomic(path, study)
    ignore = out / ".gitignore"
    if not ignore.exists():  # the run directories and logs stay out of version control; records and report do not
        ignore.write_text(f"runs/\nlogs/\n{LOCK}\n")
    return study


@contextlib.contextmanager
def lock_study(out: Path) -> Iterator[None]:
    """Hold the study directory ``out`` for one training command; refuse a second one at once.

    Two commands in one directory would train the same runs side by side and write their records
    twice. The lock is the package's folder lock (:mod:`rkd_pml.files.lock`, the kernel's flock),
    so a command that died leaves nothing to clean up."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        lock = RunLock.acquire(out, what="study directory")
    except RunLockedError as exc:
        raise SystemExit(f"{out} is in use by another study command ({describe_holder(exc.holder)}): wait for it "
                         "to end, stop it (its finished runs stay recorded), or choose another --out") from None
    try:
        yield
    finally:
        lock.release()


def read_study(out: Path) -> dict[str, Any] | None:
    """study.json of ``out``, or None when there is no study there yet."""
    path = Path(out) / STUDY
    return json.loads(path.read_text()) if path.is_file() else None
