"""A small reproduction study on Omniglot with the Python API.

Trains one teacher, then students of several embedding sizes with RKD-DA and with the triplet
loss alone (the baseline), and prints Recall@1 per student. Every run writes its own directory
under --out (config.json, metrics.jsonl, results.json, recall.png, checkpoints/, model/).

    python examples/distill_omniglot.py /path/to/images_background_small1.zip --out runs/omniglot

Omniglot's layout is <alphabet>/<character>/<image>.png, in a folder or a .zip; the first half
of the characters train, the other half (never seen in training) test.
"""

import argparse
from pathlib import Path

from rkd_pml.training import DistillConfig, distill, train_teacher


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def last_epoch_decay(epochs: int) -> tuple[int, ...]:
    """Learning-rate milestones: decay once, before the last epoch (none for a 1-epoch run)."""
    return (epochs - 1,) if epochs > 1 else ()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="Omniglot folder or .zip")
    parser.add_argument("--out", default="runs/omniglot", help="parent directory of the runs")
    parser.add_argument("--dims", default="8,32", help="student embedding sizes")
    parser.add_argument("--epochs", type=_positive, default=5)
    parser.add_argument("--iters", type=_positive, default=20, help="steps per epoch")
    parser.add_argument("--image-size", type=_positive, default=32, help="image side in pixels")
    parser.add_argument("--batch-size", type=_positive, default=64)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    common = dict(
        dataset="omniglot", root=args.root, image_size=args.image_size, epochs=args.epochs,
        iterations_per_epoch=args.iters, batch_size=args.batch_size, lr=1e-3,
        lr_milestones=last_epoch_decay(args.epochs), overwrite=args.overwrite, progress=False,
    )

    teacher = train_teacher(model="resnet18", embedding_dim=64, out=str(out / "teacher"), **common)
    rows = [("teacher resnet18-64", teacher["best"]["test"]["recall@1"])]

    student = DistillConfig(teacher=str(out / "teacher"), student="resnet10t", **common)
    for dim in (int(d) for d in args.dims.split(",")):
        for loss in ("rkd", "triplet"):
            # "triplet" trains the same student without the teacher; L2 as the teacher had
            cfg = student.replace(embedding_dim=dim, loss=loss, l2_normalize=loss == "triplet",
                                  out=str(out / f"{loss}-{dim}"))
            rows.append((f"{loss} resnet10t-{dim}", distill(cfg)["best"]["test"]["recall@1"]))

    print(f"\n{'model':<24}{'Recall@1':>10}")
    for name, recall in rows:
        print(f"{name:<24}{100 * recall:>10.1f}")


if __name__ == "__main__":
    main()
