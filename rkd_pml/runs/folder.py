"""The output directory of a run, and the checks that guard what it replaces.

Layout::

    OUT/
      .rkd-pml-run       marker: this directory is a run of rkd-pml (written at creation)
      .rkd-pml-lock      lock held by the process running it (see :mod:`.lock`); removed
                         when that process lets go cleanly
      config.json        the full configuration of the run
      metrics.jsonl      one JSON record per epoch (loss, learning rate, Recall@K per split)
      results.json       the summary returned by the job (best epoch, its metrics, ...)
      recall.png         Recall@1 per epoch
      checkpoints/last.pt   everything needed to resume (written atomically)
      checkpoints/best.pt   weights of the best epoch so far (written atomically)
      model/             the best model, saved with EmbeddingModel.save (loadable by
                         EmbeddingModel.load, usable as a teacher)

A demo directory holds, besides its own files, one run directory per job (``teacher/``...).

Only the main process creates, locks and writes (:func:`is_main_process`), so a distributed
launch can share the code unchanged.
"""

from __future__ import annotations

import json
import os
import pickle
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import torch.distributed as dist

from ..files import (
    WriteError,
    append_jsonl,
    atomic_write_text,
    read_json_object,
    read_jsonl,
    to_json,
)
from . import contents as run_contents
from .contents import MARKER, check_inputs, recognise_run
from .lock import LOCK_NAME, RunLock, RunLockedError


def is_main_process() -> bool:
    """True unless this is a non-zero rank of an initialised process group."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


class RunDir:
    """Paths and writers of one run directory. Writers do nothing on non-main ranks.

    ``RunDir(path)`` only names the directory (to read a finished run). :meth:`create` checks,
    prepares and locks it for a run; :meth:`close` (or leaving a ``with`` block) unlocks it.
    """

    CONFIG = "config.json"
    MARKER = MARKER
    LOCK = LOCK_NAME

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.enabled = is_main_process()
        self._lock: RunLock | None = None

    # ------------------------------------------------------------------ creation rules
    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        *,
        overwrite: bool = False,
        resume: bool = False,
        inputs: Iterable[str | os.PathLike | None] = (),
    ) -> "RunDir":
        """Prepare ``path`` for a run and lock it; returns the locked :class:`RunDir`.

        * a new or empty directory is used as is;
        * an existing run is continued with ``resume=True`` (temporary files that a killed
          process left are removed) and replaced with ``overwrite=True``; otherwise
          FileExistsError says which option to pass;
        * only a directory marked as a run of this package (``.rkd-pml-run``) is replaced, and
          only when it holds nothing but the files of a run: anything else is named and the
          directory is left alone; a saved model or any other folder is never deleted;
        * ``inputs`` are the paths the run reads (the teacher, a weights file, the data):
          ``path`` may not be, contain or lie inside any of them (ValueError); those that do
          not exist (a timm model name) are ignored;
        * a directory that another process is running is refused with
          :class:`~.lock.RunLockedError` naming it (pid and host).

        Under ``torchrun`` every rank calls it: rank 0 checks, prepares and locks, the others
        raise the same error when it fails.
        """
        run = cls(path)
        inputs = [x for x in inputs if x is not None]
        error: BaseException | None = None
        if run.enabled:
            try:
                run._prepare(overwrite=overwrite, resume=resume, inputs=inputs)
            except (OSError, ValueError) as exc:
                error = exc
        shared = _broadcast(_portable(error))
        if error is not None:
            raise error
        if shared is not None:  # rank 0 refused: so does this rank
            raise shared
        return run

    def _prepare(self, *, overwrite: bool, resume: bool, inputs: list) -> None:
        p = self.path
        if p.exists() and not p.is_dir():
            raise FileExistsError(f"output path {p} exists and is not a directory; choose another --out")
        check_inputs(p, inputs)
        if resume:
            self._check_resumable()  # before the lock: a foreign folder gets no lock file
            self._lock = RunLock.acquire(p, remove=True)
            try:
                self._check_resumable()
                run_contents.remove_orphans(p)
                if not (p / MARKER).is_file():  # a run written before the marker existed
                    self._write_marker()
            except BaseException:
                self.close()
                raise
            return
        self._check_replaceable(overwrite)
        p.mkdir(parents=True, exist_ok=True)
        self._lock = RunLock.acquire(p, remove=True)
        try:
            if self._check_replaceable(overwrite):
                run_contents.clear_run(p)
            self._write_marker()
        except BaseException:
            self.close()
            raise

    def _check_resumable(self) -> None:
        p = self.path
        if not (p.is_dir() and run_contents.entries(p)):
            raise FileNotFoundError(
                f"nothing to resume in {p}: the directory does not exist or is empty; "
                "start the run without --resume"
            )
        is_run, reason = recognise_run(p)
        if not is_run:
            raise FileNotFoundError(f"{p} is not an rkd-pml run directory ({reason}); cannot resume it")
        if not self.config_path.is_file():
            raise FileNotFoundError(
                f"nothing to resume in {p}: no {self.CONFIG} (the run stopped before it began); "
                "start the run without --resume"
            )

    def _check_replaceable(self, overwrite: bool) -> bool:
        """True when ``path`` holds a run to replace; raises when it holds anything else."""
        p = self.path
        if not (p.is_dir() and run_contents.entries(p)):
            return False
        if not overwrite:
            raise FileExistsError(
                f"output directory {p} already exists: pass --overwrite to replace it, "
                "--resume to continue it, or choose another --out"
            )
        is_run, reason = recognise_run(p)
        if not is_run:
            raise FileExistsError(
                f"refusing to overwrite {p}: it is not an rkd-pml run directory ({reason}); "
                "choose another --out"
            )
        run_contents.removal_plan(p)  # raises naming anything that is not a run's file
        return True

    def _write_marker(self) -> None:
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        marker = {"format": "rkd-pml-run", "version": 1, "created": created}
        atomic_write_text(self.path / MARKER, json.dumps(marker) + "\n")

    # ------------------------------------------------------------------ lock
    @property
    def locked(self) -> bool:
        """True while this object holds the run's lock (rank 0 between create and close)."""
        return self._lock is not None and self._lock.held

    def close(self) -> None:
        """Release the run's lock (nothing to do on other ranks, or when called again)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "RunDir":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

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
        """Write ``data`` as JSON to ``path`` atomically (main process only)."""
        if self.enabled:
            atomic_write_text(path, to_json(data))

    def write_config(self, config: dict[str, Any]) -> None:
        self.write_json(self.config_path, config)

    def read_config(self) -> dict[str, Any]:
        """The saved configuration: a JSON object. ValueError naming config.json (and the line)
        when it is unreadable, not JSON or not an object; FileNotFoundError when missing.
        Its fields are checked by the configuration classes."""
        return read_json_object(self.config_path, what=f"configuration of the run in {self.path}")

    def write_results(self, results: dict[str, Any]) -> None:
        self.write_json(self.results_path, results)

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Append one epoch's record to metrics.jsonl, flushed to disk (main process only)."""
        if self.enabled:
            append_jsonl(self.metrics_path, record)

    def read_metrics(self) -> list[dict[str, Any]]:
        """The records of metrics.jsonl (``[]`` when there is none); a last line cut by a crash
        is dropped, a damaged line before it is a ValueError naming the file and the line."""
        if not self.metrics_path.is_file():
            return []
        return read_jsonl(self.metrics_path)

    def keep_metrics(self, records: Iterable[dict[str, Any]]) -> None:
        """Rewrite metrics.jsonl with ``records`` only (used when resuming)."""
        text = "".join(to_json(r, indent=None) for r in records)
        if self.enabled:
            atomic_write_text(self.metrics_path, text)


def _broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (the identity in a single process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    return obj


def _portable(error: BaseException | None) -> BaseException | None:
    """``error`` as an object that can travel to the other ranks."""
    if error is None:
        return None
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        base = FileExistsError if isinstance(error, FileExistsError) else (
            OSError if isinstance(error, OSError) else ValueError
        )
        return base(str(error))


__all__ = ["RunDir", "RunLockedError", "WriteError", "is_main_process", "to_json"]
