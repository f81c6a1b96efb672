#!/usr/bin/env python
"""How input-bound a distillation run is: the real ``distill`` loop fed by its real loader,
against the same loop fed by in-memory synthetic batches of the same shapes.

Both runs are ``rkd_pml.training.distill`` itself (the library's loop, step, models, objective,
optimizer, precision, channels-last and compile settings), from the same randomly initialised
teacher (saved once) and the same student settings, for ``--epochs`` epochs of ``--steps``
steps each. The synthetic run differs in one thing: the loop's loader (built by
``rkd_pml.training.loop``'s ``make_loader`` / ``training_loader``) is replaced for its duration
by one that yields, for
every batch the sampler asks for, one fixed batch already on the training device (uniform
images in [0, 1] with the real images' shape, ``m_per_class`` images per class); decoding,
augmentation, collation and the host-to-device copy are then gone.

Images/s of a run = ``steps * batch / train_seconds`` of its last epoch (the loop's own
wall-clock time of the epoch's steps, data waits included; evaluation and checkpoints are
not in it); the first epochs are warm-up (worker start, cuDNN autotuning, compilation).
``ratio = real / synthetic``: 1 means the loader keeps up; 0.5 means the device waits half
the time.

Examples:
  python benchmarks/bench_pipeline.py --device cuda --dataset omniglot --root omniglot.zip \\
      --image-size 64 --num-workers 6 --json pipeline64.json
  python benchmarks/bench_pipeline.py --quick          # digits at 16 px, tiny models, seconds
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.bench_machine import check_device, machine_info  # noqa: E402

QUICK = dict(dataset="digits", root=None, image_size=16, teacher="resnet10t", teacher_dim=16, student="resnet10t",
             student_dim=8, batch=20, m_per_class=5, steps=3, epochs=2, num_workers=0)  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="omniglot")
    p.add_argument("--root", default=None, help="the data set's folder or archive (omniglot: its .zip)")
    p.add_argument("--image-size", type=int, default=64, help="image side in pixels")
    p.add_argument("--teacher", default="resnet18", help="timm name of the (randomly initialised) teacher")
    p.add_argument("--teacher-dim", type=int, default=512)
    p.add_argument("--student", default="resnet10t")
    p.add_argument("--student-dim", type=int, default=64)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--m-per-class", type=int, default=4)
    p.add_argument("--steps", type=int, default=30, help="steps per epoch")
    p.add_argument("--epochs", type=int, default=2, help="epochs per run; the last one is timed")
    p.add_argument("--num-workers", type=int, default=min(6, os.cpu_count() or 1), help="loader processes of the real run")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--input-pipeline", default=None, help="the real run's input pipeline, where the library has "
                   "the setting (fast or pil; default: the library's default)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--quick", action="store_true", help="digits at 16 px, tiny models: a smoke run in seconds")
    args = p.parse_args(argv)
    if args.quick:
        given = {a.lstrip("-").split("=")[0].replace("-", "_") for a in (argv if argv is not None else sys.argv[1:]) if a.startswith("--")}
        for key, value in QUICK.items():
            if key not in given:
                setattr(args, key, value)
    for name in ("image_size", "batch", "steps", "epochs", "m_per_class"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.batch % args.m_per_class:
        p.error(f"--batch ({args.batch}) must be a multiple of --m-per-class ({args.m_per_class})")
    check_device(p, args.device)
    if args.root is not None and not os.path.exists(args.root):
        p.error(f"--root {args.root}: no such file or folder")
    return args


class SyntheticLoader:
    """Stands in for the loop's loader: per epoch, as many batches as the sampler holds, each
    the same ``(images, labels)`` already on ``device``. The images' shape is that of one real
    item of ``data`` (read once); ``count`` says how many batches were served."""

    def __init__(self, data: Any, sampler: Any, device: Any, batch: int, m_per_class: int):
        self.data, self.sampler, self.device = data, sampler, device
        self.batch, self.m_per_class = batch, m_per_class
        self.images = self.labels = None
        self.count = 0

    def _make(self) -> None:
        import torch

        key = next(iter(self.sampler))[0]  # an index, or (index, seed) / (index, epoch)
        try:
            item = self.data[key]
        except (TypeError, IndexError, KeyError, ValueError):  # a plain data set indexed by position
            item = self.data[key[0]]
        g = torch.Generator().manual_seed(0)
        self.images = torch.rand((self.batch, *item[0].shape), generator=g).to(self.device)
        self.labels = (torch.arange(self.batch) // self.m_per_class).to(self.device)

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        for _ in range(len(self.sampler)):
            if self.images is None:
                self._make()
            self.count += 1
            yield self.images, self.labels

    def __len__(self) -> int:
        return len(self.sampler)


#: the names under which the training loop builds its loader (whichever it has)
LOADER_BUILDERS = ("make_loader", "training_loader")


@contextlib.contextmanager
def synthetic_batches(device: Any, batch: int, m_per_class: int) -> Iterator[list[SyntheticLoader]]:
    """While open, the training loop gets a :class:`SyntheticLoader` instead of its loader."""
    from rkd_pml.training import loop

    made: list[SyntheticLoader] = []
    originals = {name: getattr(loop, name) for name in LOADER_BUILDERS if hasattr(loop, name)}

    def fake(data, sampler, *args, **kwargs):
        made.append(SyntheticLoader(data, sampler, device, batch, m_per_class))
        return made[-1]

    for name in originals:
        setattr(loop, name, fake)
    try:
        yield made
    finally:
        for name, original in originals.items():
            setattr(loop, name, original)


def save_teacher(args: argparse.Namespace, folder: Path) -> Path:
    """A randomly initialised L2-normalised teacher, saved as the library saves models."""
    import torch

    from rkd_pml.models import EmbeddingModel

    torch.manual_seed(0)
    EmbeddingModel(args.teacher, args.teacher_dim, l2_normalize=True).save(folder / "teacher")
    return folder / "teacher"


def run_once(args: argparse.Namespace, teacher: Path, out: Path, workers: int) -> dict[str, Any]:
    """One ``distill`` run; its last epoch's images/s and step times."""
    from rkd_pml.files.records import read_jsonl
    from rkd_pml.training import distill

    results = distill(
        teacher=str(teacher), student=args.student, embedding_dim=args.student_dim, dataset=args.dataset,
        root=args.root, image_size=args.image_size, batch_size=args.batch, m_per_class=args.m_per_class,
        epochs=args.epochs, iterations_per_epoch=args.steps, eval_every=args.epochs, val_fraction=0.0,
        lr=1e-4, lr_milestones=(args.epochs + 1,), num_workers=workers, precision=args.precision,
        channels_last=args.channels_last, compile=args.compile, device=args.device, out=str(out),
        progress=False, check_images=False, keep_checkpoints=False, eval_batch_size=max(args.batch, 256),
        **({"input_pipeline": args.input_pipeline} if args.input_pipeline else {}),
    )
    records = [r for r in read_jsonl(Path(results["run_dir"]) / "metrics.jsonl") if "train_seconds" in r]
    so_far = [r["train_seconds"] for r in records]  # metrics.jsonl: the training seconds of all epochs so far
    per_epoch = [b - a for a, b in zip([0.0] + so_far[:-1], so_far)]
    last = records[-1]
    return {"images_per_s": args.steps * args.batch / per_epoch[-1], "epoch_seconds": per_epoch[-1],
            "step_seconds_mean": last["step_seconds"], "epoch_seconds_all": per_epoch, "train_seconds": so_far[-1],
            "num_workers": workers, "loss": last.get("loss")}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from rkd_pml.training import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    report: dict[str, Any] = {"machine": machine_info(args.device), "args": vars(args), "results": []}
    with tempfile.TemporaryDirectory(prefix="bench_pipeline_") as tmp:
        teacher = save_teacher(args, Path(tmp))
        real = run_once(args, teacher, Path(tmp) / "real", args.num_workers)
        report["results"].append({"name": "real", **real})
        with synthetic_batches(resolve_device(args.device), args.batch, args.m_per_class) as made:
            synthetic = run_once(args, teacher, Path(tmp) / "synthetic", 0)
        if not made or made[-1].count != args.steps * args.epochs:
            raise RuntimeError(f"the training loop did not take its batches from rkd_pml.training.loop's {LOADER_BUILDERS} "
                               f"({made[-1].count if made else 0} synthetic batches served); this benchmark needs updating")
        report["results"].append({"name": "synthetic", **synthetic})
    report["ratio_real_to_synthetic"] = real["images_per_s"] / synthetic["images_per_s"]
    report["machine"]["load_average_end"] = os.getloadavg()
    print(f"{'input':<10} {'img/s':>10} {'epoch s':>9} {'step s (mean)':>14}")
    for r in report["results"]:
        print(f"{r['name']:<10} {r['images_per_s']:>10.1f} {r['epoch_seconds']:>9.3f} {r['step_seconds_mean']:>14.4f}")
    print(f"real / synthetic images/s: {report['ratio_real_to_synthetic']:.2f} ({args.dataset} at {args.image_size} px, "
          f"batch {args.batch}, {args.num_workers} workers, {args.precision}, {args.device})")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
