"""Run storage: the output directory of a training run and what it holds.

* :class:`RunDir` (:mod:`.folder`): the directory's paths and writers (config.json,
  metrics.jsonl, results.json), created, checked and locked for one run; :func:`is_main_process`.
* :mod:`.contents`: what a run directory may hold (the marker, the files a run writes) and the
  checks that guard what is replaced or removed.
* :mod:`.lock`: the lock that keeps a run directory to one process (:mod:`rkd_pml.files.lock`).
* :mod:`.logs` and :mod:`.plot`: what a run reports per epoch (metrics.jsonl, the console line,
  recall.png, TensorBoard).

The package depends only on :mod:`rkd_pml.files` (and torch.distributed for the rank): it sits
below training, which writes its runs through it.
"""

from .._lazy import lazy_package

# imported on first use: the lock alone needs neither torch nor matplotlib
_EXPORTS = {
    **dict.fromkeys(("RunDir", "is_main_process"), ".folder"),
    **dict.fromkeys(("LOCK_NAME", "RunLock", "RunLockedError", "read_holder"), ".lock"),
    **dict.fromkeys(("MARKER", "recognise_run"), ".contents"),
    **dict.fromkeys(("EpochLog", "log"), ".logs"),
}
lazy_package(__name__, _EXPORTS)

__all__ = [
    "EpochLog", "LOCK_NAME", "MARKER", "RunDir", "RunLock", "RunLockedError", "is_main_process", "log", "read_holder",
    "recognise_run",
]
