"""What a run reports per epoch: metrics.jsonl, the console line, recall.png, TensorBoard."""

from __future__ import annotations

from typing import Any, Sequence

from tqdm.auto import tqdm

from .plot import plot_recall
from .folder import is_main_process

#: keys of a metrics record that are not scalars to chart
NOT_SCALARS = ("epoch",)
#: A record's numbers that are not loss terms.
BOOKKEEPING = ("lr", "step_seconds", "train_seconds", "skipped_steps")


def log(message: str) -> None:
    """One line on stdout, from the main process only (keeps tqdm bars intact)."""
    if is_main_process():
        tqdm.write(message)


def format_metrics(metrics: dict[str, dict[str, float]], ks: Sequence[int]) -> str:
    out = []
    for split, m in metrics.items():
        recalls = " ".join(f"R@{k} {100 * m[f'recall@{k}']:.1f}" for k in ks if f"recall@{k}" in m)
        out.append(f"{split} {recalls}")
    return " | ".join(out)


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The record's numbers by chart name: ``loss/rkd_angle``, ``test/recall@1``, ``lr``, ..."""
    out = {}
    for key, value in record.items():
        if key in NOT_SCALARS:
            continue
        if isinstance(value, dict):
            out.update({f"{key}/{k}": float(v) for k, v in value.items() if isinstance(v, (int, float))})
        elif isinstance(value, (int, float)):
            out[key if key in BOOKKEEPING else f"loss/{key}"] = float(value)
    return out


class EpochLog:
    """Appends each epoch's record to metrics.jsonl (and TensorBoard), redraws recall.png and
    prints one line; ``history`` holds the records so far."""

    def __init__(self, setup: Any, history: list[dict[str, Any]]):
        self.setup = setup
        self.history = list(history)
        self.writer = None
        if setup.cfg.tensorboard and is_main_process():
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(setup.run.path / "tensorboard"))

    def write(self, record: dict[str, Any], improved: bool) -> None:
        setup, cfg = self.setup, self.setup.cfg
        self.history.append(record)
        setup.run.append_metrics(record)
        if self.writer is not None:
            for name, value in scalars(record).items():
                self.writer.add_scalar(name, value, record["epoch"])
            self.writer.flush()
        plot_recall({setup.name: self.history}, setup.run.plot_path, title=f"{setup.name}: Recall@1 per epoch")
        terms = " ".join(f"{k} {v:.4f}" for k, v in record.items() if k not in (*NOT_SCALARS, *BOOKKEEPING) and isinstance(v, float))
        summary = format_metrics({k: record[k] for k in setup.eval_sets if k in record}, cfg.recall_ks)
        log(f"[{setup.name}] epoch {record['epoch']}/{cfg.epochs} {terms} lr {record['lr']:.1e} | "
            f"{summary or 'no evaluation'} | {record['train_seconds']:.1f} s trained{' *' if improved else ''}")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
