"""The output directory of a run, and the one check that guards side effects.

Layout::

    OUT/
      config.json        the full configuration of the run
      metrics.jsonl      one JSON record per epoch (loss, learning rate, Recall@K per split)
      results.json       the summary returned by the job (best epoch, its metrics, ...)
      recall.png         Recall@1 per epoch
      checkpoints/last.pt   everything needed to resume (written atomically)
      checkpoints/best.pt   weights of the best epoch so far (written atomically)
      model/             the best model, saved with EmbeddingModel.save (loadable by
                         EmbeddingModel.load, usable as a teacher)

Only the main process writes (:func:`is_main_process`), so a distributed launch can share
the code unchanged.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any, Iterable

import torch.distributed as dist

from .checkpoint import atomic_write_text
from .distributed_setup import barrier


def is_main_process() -> bool:
    """True unless this is a non-zero rank of an initialised process group."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _json_default(value: Any):
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, tuple)):
        return list(value)
    return repr(value)


def to_json(data: Any) -> str:
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(data), indent=2, sort_keys=False, default=_json_default) + "\n"


class RunDir:
    """Paths and writers of one run directory. Writers do nothing on non-main ranks."""

    CONFIG = "config.json"

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.enabled = is_main_process()

    # ------------------------------------------------------------------ creation rules
    @classmethod
    def create(cls, path: str | os.PathLike, *, overwrite: bool = False, resume: bool = False) -> "RunDir":
        """Prepare ``path`` for a run.

        * a new or empty directory is used as is;
        * an existing run is continued with ``resume=True`` and replaced with
          ``overwrite=True``; otherwise FileExistsError says which option to pass;
        * a non-empty directory that is not a run directory is never deleted.
        """
        run = cls(path)
        p = run.path
        if p.exists() and not p.is_dir():
            raise FileExistsError(f"output path {p} exists and is not a directory; choose another --out")
        has_content = p.is_dir() and any(p.iterdir())
        if resume:
            if not has_content:
                raise FileNotFoundError(
                    f"nothing to resume in {p}: the directory does not exist or is empty; "
                    "start the run without --resume"
                )
            if not (p / cls.CONFIG).is_file():
                raise FileNotFoundError(f"{p} is not an rkd-pml run directory (no {cls.CONFIG}); cannot resume it")
            return run
        if has_content:
            if not overwrite:
                raise FileExistsError(
                    f"output directory {p} already exists: pass --overwrite to replace it, "
                    "--resume to continue it, or choose another --out"
                )
            if not (p / cls.CONFIG).is_file():
                raise FileExistsError(
                    f"refusing to overwrite {p}: it is not an rkd-pml run directory (no {cls.CONFIG}); "
                    "choose another --out"
                )
        # with several processes: every rank has checked the directory before the main process
        # changes it (a no-op in a single process)
        barrier()
        if has_content and run.enabled:
            shutil.rmtree(p)
        if run.enabled:
            p.mkdir(parents=True, exist_ok=True)
        return run

    # ------------------------------------------------------------------ paths
    @property
    def config_path(self) -> Path:
        return self.path / self.CONFIG

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def results_path(self) -> Path:
        return self.path / "results.json"

    @property
    def plot_path(self) -> Path:
        return self.path / "recall.png"

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoint_dir / "last.pt"

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoint_dir / "best.pt"

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    # ------------------------------------------------------------------ writers / readers
    def write_json(self, path: Path, data: Any) -> None:
        if self.enabled:
            atomic_write_text(path, to_json(data))

    def write_config(self, config: dict[str, Any]) -> None:
        self.write_json(self.config_path, config)

    def read_config(self) -> dict[str, Any]:
        try:
            return json.loads(self.config_path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{self.config_path} is not valid JSON ({exc})") from None

    def write_results(self, results: dict[str, Any]) -> None:
        self.write_json(self.results_path, results)

    def append_metrics(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        line = json.dumps(json.loads(to_json(record))) + "\n"
        with open(self.metrics_path, "a") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.is_file():
            return []
        records = []
        for line in self.metrics_path.read_text().splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut by a crash: everything before it is valid
        return records

    def keep_metrics(self, records: Iterable[dict[str, Any]]) -> None:
        """Rewrite metrics.jsonl with ``records`` only (used when resuming)."""
        text = "".join(json.dumps(r) + "\n" for r in records)
        if self.enabled:
            atomic_write_text(self.metrics_path, text)
