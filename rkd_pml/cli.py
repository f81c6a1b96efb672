"""``rkd-pml`` / ``python -m rkd_pml``: a thin command line over :mod:`rkd_pml.training`.

Subcommands: ``demo``, ``train-teacher``, ``train-baseline``, ``distill``, ``evaluate``.
Errors in what the user passed (unknown model, missing data, an existing output directory,
...) end with one line ``rkd-pml: error: ...`` on stderr and exit code 2.

The training commands (``train-teacher``, ``train-baseline``, ``distill``, ``demo``) also run
on several processes started by torchrun, e.g. on 4 GPUs of one machine::

    torchrun --standalone --nproc_per_node=4 -m rkd_pml distill --teacher runs/teacher ...

``--batch-size`` is then the global batch (split evenly across the processes); rank 0 prints,
evaluates and writes the run directory (see :mod:`rkd_pml.training.distributed_setup`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Sequence

PROG = "rkd-pml"
DATASETS = ("digits", "omniglot", "cub200", "cars196", "sop", "folder")


class CLIError(Exception):
    """A usage error found after parsing; reported like argparse's own errors."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``rkd-pml: error: ... (see 'rkd-pml COMMAND --help')``."""

    def error(self, message: str):
        self.exit(2, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


# --------------------------------------------------------------------------- option helpers


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    return values


def _int_at_least(minimum: int):
    """argparse type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _fraction(text: str) -> float:
    value = _float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {value}")
    return value


class _Options:
    """Adds options whose default (shown in --help) is the config class's; only options given
    on the command line reach the namespace (argparse.SUPPRESS), so they can override a
    saved configuration on --resume."""

    def __init__(self, parser: argparse.ArgumentParser, config_cls):
        self.parser = parser
        self.defaults = {f.name: f.default for f in dataclasses.fields(config_cls)} if config_cls else {}

    def add(self, group, *flags: str, dest: str, help: str, **kwargs):
        shown = kwargs.pop("shown_default", None)
        default = self.defaults.get(dest)
        default = shown if default is None else default
        if isinstance(default, tuple):
            default = ",".join(str(x) for x in default)
        if default is not None and kwargs.get("action") not in ("store_true", "store_false"):
            help = f"{help} (default: {default})"
        group.add_argument(*flags, dest=dest, default=argparse.SUPPRESS, help=help, **kwargs)


def _add_data(opts: _Options, parser, with_val: bool = True):
    g = parser.add_argument_group("data")
    opts.add(g, "--dataset", dest="dataset", choices=DATASETS,
             help="data set: digits (built in), omniglot (folder or .zip), cub200, cars196, sop, "
                  "folder (ROOT/<class>/<image>; first half of the classes train, rest test)")
    opts.add(g, "--root", dest="root", metavar="PATH",
             help="where the data set lives (not needed for digits)")
    opts.add(g, "--image-size", dest="image_size", type=_positive_int, metavar="PX",
             help="image side in pixels (default: the data set's, 32 for digits/omniglot, 224 otherwise)")
    if with_val:
        opts.add(g, "--train-transform", dest="train_transform", choices=("paper", "random_resized_crop", "none"),
                 help="training augmentation: paper = resize to S*256/224, random SxS crop, flip")
        opts.add(g, "--val-fraction", dest="val_fraction", type=_fraction, metavar="F",
                 help="hold out this fraction of the training classes as a validation split used "
                      "to pick the best epoch (0: pick by test Recall@1, as the paper)")


def _add_model(opts: _Options, parser, name_flag: str, dest: str, what: str):
    g = parser.add_argument_group("model")
    opts.add(g, name_flag, dest=dest, metavar="NAME|DIR",
             help=f"{what}: a timm model name (e.g. resnet18) or a saved model directory to start from")
    opts.add(g, "--embedding-dim", dest="embedding_dim", type=_positive_int, metavar="D",
             help="width of the embedding (linear head after the pooled features)")
    opts.add(g, "--pretrained", dest="pretrained", action="store_true",
             help="start from timm's ImageNet weights (needs network access or a cached copy)")
    opts.add(g, "--weights", dest="weights", metavar="FILE",
             help="start from a local timm weights file (.safetensors/.pth) instead of downloading")
    opts.add(g, "--l2-normalize", dest="l2_normalize", action=argparse.BooleanOptionalAction,
             help="L2-normalise the embedding (default: on for triplet-trained models, off for RKD students)")


def _add_schedule(opts: _Options, parser):
    g = parser.add_argument_group("optimisation")
    opts.add(g, "--epochs", dest="epochs", type=_positive_int, metavar="N", help="number of epochs")
    opts.add(g, "--iterations-per-epoch", "--iters", dest="iterations_per_epoch", type=_positive_int, metavar="N",
             help="training steps per epoch")
    opts.add(g, "--batch-size", dest="batch_size", type=_positive_int, metavar="N", help="images per batch")
    opts.add(g, "--m-per-class", dest="m_per_class", type=_positive_int, metavar="M",
             shown_default="4, or the smallest divisor of the batch size that the training classes can fill",
             help="images of each class in a batch (batch size / M classes per batch)")
    opts.add(g, "--lr", dest="lr", type=_float, metavar="LR", help="Adam learning rate")
    opts.add(g, "--weight-decay", dest="weight_decay", type=_float, metavar="WD", help="Adam weight decay")
    opts.add(g, "--lr-milestones", dest="lr_milestones", type=_int_list, metavar="E1,E2,...",
             help="epochs after which the learning rate is multiplied by --lr-gamma")
    opts.add(g, "--lr-gamma", dest="lr_gamma", type=_float, metavar="G", help="learning-rate factor at each milestone")


def _add_eval(opts: _Options, parser):
    g = parser.add_argument_group("evaluation")
    opts.add(g, "--recall-ks", dest="recall_ks", type=_int_list, metavar="K1,K2,...", shown_default="1,2,4,8; sop: 1,10,100,1000",
             help="Ks of Recall@K")
    opts.add(g, "--eval-every", dest="eval_every", type=_positive_int, metavar="N",
             help="evaluate every N epochs (and after the last)")
    opts.add(g, "--eval-batch-size", dest="eval_batch_size", type=_positive_int, metavar="N",
             help="batch size when embedding the evaluation images")


def _add_run(opts: _Options, parser, default_out: str):
    g = parser.add_argument_group("run")
    opts.add(g, "--out", dest="out", metavar="DIR", shown_default=default_out,
             help="output directory: config.json, metrics.jsonl, results.json, recall.png, checkpoints/, model/")
    opts.add(g, "--resume", dest="resume", action="store_true",
             help="continue the interrupted run in --out from its last checkpoint (its saved options are reused)")
    opts.add(g, "--overwrite", dest="overwrite", action="store_true",
             help="replace an existing run in --out (without it, an existing run is never touched)")
    opts.add(g, "--checkpoint-every", dest="checkpoint_every", type=_non_negative_int, metavar="N",
             help="also save the resume checkpoint every N steps within an epoch (0: at epoch ends only)")
    opts.add(g, "--seed", dest="seed", type=int, metavar="S", help="random seed (weights, batches, augmentation)")
    opts.add(g, "--sync-bn", dest="sync_bn", action=argparse.BooleanOptionalAction,
             help="under torchrun on GPUs: synchronise BatchNorm across the processes (SyncBatchNorm), so that "
                  "it normalises with the global batch's statistics as one process does (no effect in one process)")
    _add_runtime(opts, g)


def _add_runtime(opts: _Options, g, workers: bool = True):
    opts.add(g, "--device", dest="device", metavar="DEV", shown_default="auto",
             help="cpu, cuda, cuda:N or auto (CUDA when available)")
    if workers:
        opts.add(g, "--num-workers", dest="num_workers", type=_non_negative_int, metavar="N", shown_default=0,
                 help="data-loading worker processes (0 loads in the main process; exact resume needs 0)")
    opts.add(g, "--threads", dest="threads", type=_positive_int, metavar="N", shown_default="torch's",
             help="CPU threads for torch")
    opts.add(g, "--no-progress", dest="no_progress", action="store_true", help="no progress bars")


def _add_triplet(opts: _Options, parser):
    g = parser.add_argument_group("loss")
    opts.add(g, "--margin", dest="margin", type=_float, metavar="M", help="triplet margin")
    opts.add(g, "--miner", dest="miner", choices=("distance_weighted", "none"),
             help="triplet sampling: distance-weighted (Wu et al. 2017) or all triplets")
    opts.add(g, "--triplet-reduction", dest="triplet_reduction", choices=("mean", "avg_nonzero"),
             help="mean over all mined triplets (official RKD code) or over the non-zero ones (PML's default)")


def _add_distill_loss(opts: _Options, parser):
    from .training.objective import distillation_loss_names

    g = parser.add_argument_group("loss")
    opts.add(g, "--loss", dest="loss", choices=distillation_loss_names(),
             help="rkd = RKD-DA (distance + angle), rkd-d / rkd-a = one term, triplet = no teacher")
    opts.add(g, "--distance-weight", dest="distance_weight", type=_float, metavar="W", help="weight of RKD-D")
    opts.add(g, "--angle-weight", dest="angle_weight", type=_float, metavar="W", help="weight of RKD-A")
    opts.add(g, "--distill-weight", dest="distill_weight", type=_float, metavar="W",
             help="multiplier of the whole distillation loss")
    opts.add(g, "--student-triplet-weight", dest="student_triplet_weight", type=_float, metavar="W",
             shown_default=0, help="add W x triplet loss (distance-weighted triplets) on the student")
    opts.add(g, "--margin", dest="margin", type=_float, metavar="M", help="margin of the student triplet loss")
    opts.add(g, "--triplet-reduction", dest="triplet_reduction", choices=("mean", "avg_nonzero"),
             help="reduction of the student triplet loss")


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    from .training.config import BaselineConfig, DistillConfig, TeacherConfig
    from .training.jobs import DEMO_SETTINGS as DEMO_DEFAULTS

    parser = _Parser(
        prog=PROG,
        description="Relational Knowledge Distillation (Park et al., CVPR 2019) for metric learning: "
                    "train a teacher, distil a student with RKD, evaluate Recall@K.",
        epilog="Run '%(prog)s COMMAND --help' for the options of a command. "
               "Quick start: '%(prog)s demo'.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser(
        "demo", help="teacher, triplet baseline and RKD student on the built-in digits; prints Recall@K",
        description="Train a teacher (resnet18), a triplet baseline and an RKD-DA student (resnet10t) on "
                    "digits 0-4 at 32 px, evaluate Recall@1/2/4/8 on the unseen digits 5-9, print the "
                    "table and write the runs, results.json and recall.png to --out. Takes about a "
                    "minute or two on a laptop CPU.",
    )
    p.add_argument("--out", default="runs/demo", metavar="DIR", help="output directory (default: runs/demo)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing demo in --out")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--epochs", type=_positive_int, default=None, metavar="N",
                   help="epochs of each of the three runs (default: %s)" % DEMO_DEFAULTS["epochs"])
    p.add_argument("--iterations-per-epoch", "--iters", dest="iterations_per_epoch", type=_positive_int,
                   default=None, metavar="N",
                   help="steps per epoch (default: %s)" % DEMO_DEFAULTS["iterations_per_epoch"])
    p.add_argument("--batch-size", type=_positive_int, default=None, metavar="N",
                   help="images per batch (default: %s)" % DEMO_DEFAULTS["batch_size"])
    g = p.add_argument_group("runtime")
    g.add_argument("--device", default="auto", metavar="DEV",
                   help="cpu, cuda, cuda:N or auto (CUDA when available) (default: auto)")
    g.add_argument("--threads", type=_positive_int, default=1, metavar="N",
                   help="CPU threads for torch (default: 1: the 32-px models gain little from more threads "
                        "and lose much when the cores are shared)")
    g.add_argument("--no-progress", dest="no_progress", action="store_true", help="no progress bars")
    p.set_defaults(command="demo")

    # ---- train-teacher / train-baseline
    for command, cls, flag, what, helptext in (
        ("train-teacher", TeacherConfig, "--teacher", "the teacher",
         "train a teacher with triplet loss (paper: resnet50, 512-d, L2)"),
        ("train-baseline", BaselineConfig, "--student", "the student",
         "train the student architecture with triplet loss, as a baseline for RKD"),
    ):
        p = sub.add_parser(
            command, help=helptext,
            description=f"{helptext[0].upper()}{helptext[1:]}: triplet margin loss on distance-weighted "
                        "triplets from class-balanced batches, Adam and a step schedule. Defaults are the "
                        "RKD paper's recipe (pretrained weights excepted: see --pretrained/--weights).",
        )
        opts = _Options(p, cls)
        _add_model(opts, p, flag, "model", what)
        _add_data(opts, p)
        _add_triplet(opts, p)
        _add_schedule(opts, p)
        _add_eval(opts, p)
        _add_run(opts, p, f"runs/{command.split('-')[1]}")
        p.set_defaults(command=command)

    # ---- distill
    p = sub.add_parser(
        "distill", help="distil a trained teacher into a student with RKD",
        description="Distil a saved, frozen teacher into a student with RKD (paper: resnet18, 64-d, no L2, "
                    "RKD-DA = 1 x distance + 2 x angle, Adam 1e-4, 80 epochs). Teacher and student see "
                    "the same batch; each applies its own input normalisation.",
    )
    opts = _Options(p, DistillConfig)
    g = p.add_argument_group("models")
    opts.add(g, "--teacher", dest="teacher", metavar="DIR", required=False,
             help="the trained teacher: a run directory of train-teacher or a saved model directory")
    opts.add(g, "--student", dest="student", metavar="NAME|DIR",
             help="the student: a timm model name or a saved model directory to start from")
    opts.add(g, "--embedding-dim", dest="embedding_dim", type=_positive_int, metavar="D", help="student embedding width")
    opts.add(g, "--pretrained", dest="pretrained", action="store_true",
             help="start the student from timm's ImageNet weights (network or cache needed)")
    opts.add(g, "--weights", dest="weights", metavar="FILE", help="start the student from a local timm weights file")
    opts.add(g, "--l2-normalize", dest="l2_normalize", action=argparse.BooleanOptionalAction,
             help="L2-normalise the student's embedding (the paper: off)")
    _add_data(opts, p)
    _add_distill_loss(opts, p)
    _add_schedule(opts, p)
    _add_eval(opts, p)
    _add_run(opts, p, "runs/distill")
    p.set_defaults(command="distill")

    # ---- evaluate
    p = sub.add_parser(
        "evaluate", help="Recall@K of a saved model",
        description="Embed the test split (classes unseen in training) with a saved model and report "
                    "Recall@K and PML's retrieval metrics.",
    )
    p.add_argument("model", metavar="MODEL_DIR", help="a run directory or a saved model directory")
    opts = _Options(p, None)
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default=None, choices=DATASETS,
                   help="data set (default: the run's when MODEL_DIR is a run directory, else digits)")
    g.add_argument("--root", default=None, metavar="PATH",
                   help="where the data set lives (default: the run's; not needed for digits)")
    g.add_argument("--image-size", dest="image_size", type=_positive_int, default=None, metavar="PX",
                   help="image side (default: the run's, else the data set's)")
    g.add_argument("--test-transform", dest="test_transform", default=None, choices=("paper", "timm"),
                   help="paper = resize to S*256/224 and centre crop; timm = timm's eval transform "
                        "(default: the one that goes with the run's training transform, else paper)")
    g.add_argument("--split", default="test", choices=("test", "train"), help="split to evaluate (default: test)")
    g.add_argument("--recall-ks", dest="recall_ks", type=_int_list, default=None, metavar="K1,K2,...",
                   help="Ks of Recall@K (default: the run's, else 1,2,4,8; SOP: 1,10,100,1000)")
    g.add_argument("--batch-size", dest="batch_size", type=_positive_int, default=256, metavar="N",
                   help="embedding batch size (default: 256)")
    g.add_argument("--json", dest="json_out", default=None, metavar="FILE",
                   help="also write the metrics to FILE as JSON ('-' prints JSON instead of the table)")
    g = p.add_argument_group("runtime")
    _add_runtime(opts, g)
    p.set_defaults(command="evaluate")
    return parser


# --------------------------------------------------------------------------- commands


def _config_for(command: str, args: argparse.Namespace):
    """The job's config: its defaults (or, with --resume, the saved run's options) updated
    with the options given on the command line."""
    from .training.config import BaselineConfig, DistillConfig, TeacherConfig, config_from_dict
    from .training.run_dir import RunDir

    cls = {"train-teacher": TeacherConfig, "train-baseline": BaselineConfig, "distill": DistillConfig}[command]
    given = {k: v for k, v in vars(args).items() if k not in ("command", "threads", "no_progress")}
    triplet_weight = given.pop("student_triplet_weight", None)
    if triplet_weight is not None and triplet_weight > 0:
        given["student_metric_loss"] = "triplet"
        given["student_metric_weight"] = triplet_weight
    if getattr(args, "no_progress", False):
        given["progress"] = False
    if given.get("resume"):
        out = Path(given.get("out") or f"runs/{command.split('-')[-1]}")
        run = RunDir(out)
        if not run.config_path.is_file():
            raise CLIError(
                f"nothing to resume in {out}: no {RunDir.CONFIG} there; start the run without --resume "
                "or pass the --out of the interrupted run"
            )
        saved = config_from_dict(run.read_config())
        if not isinstance(saved, cls):
            raise CLIError(f"{out} holds a {saved.job!r} run, not a {cls.job!r} run")
        given["out"] = str(out)
        return saved.replace(**given)
    return cls(**given)


def _print_results(results: dict[str, Any]) -> None:
    if _torchrun_rank() > 0:  # the process group has ended: ask torchrun's variables
        return
    split = results["selection_split"]
    best = results["best"].get("test") or {}
    ks = sorted(int(k.split("@")[1]) for k in best if k.startswith("recall@"))
    recalls = "  ".join(f"R@{k} {100 * best[f'recall@{k}']:.2f}" for k in ks)
    print(
        f"best epoch {results['best_epoch']} (by {split} Recall@1): test {recalls}\n"
        f"model: {results['model_dir']}\nresults: {Path(results['run_dir']) / 'results.json'}"
    )


def _run(args: argparse.Namespace) -> int:
    import torch

    from .training import jobs

    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    progress = not getattr(args, "no_progress", False)
    command = args.command
    if command == "demo":
        settings = {k: getattr(args, k) for k in ("epochs", "iterations_per_epoch", "batch_size")
                    if getattr(args, k) is not None}
        jobs.demo(out=args.out, overwrite=args.overwrite, device=getattr(args, "device", "auto"),
                  seed=args.seed, progress=progress, **settings)  # under torchrun: all processes
        return 0
    if command == "evaluate":
        metrics = jobs.evaluate_saved(
            args.model, dataset=args.dataset, root=args.root, image_size=args.image_size, split=args.split,
            ks=args.recall_ks, batch_size=args.batch_size, device=getattr(args, "device", "auto"), progress=progress,
            num_workers=getattr(args, "num_workers", 0), test_transform=args.test_transform,
        )
        if args.json_out == "-":
            print(json.dumps(metrics, indent=2))
            return 0
        for name, value in metrics.items():
            shown = f"{100 * value:.2f}" if name.startswith("recall@") or name.endswith(("_at_1", "precision", "_at_r")) else f"{value:.4f}"
            print(f"{name:<30} {shown}")
        if args.json_out:
            from .training.checkpoint import atomic_write_text

            atomic_write_text(args.json_out, json.dumps(metrics, indent=2) + "\n")
        return 0
    cfg = _config_for(command, args)
    run = {"train-teacher": jobs.train_teacher, "train-baseline": jobs.train_baseline, "distill": jobs.distill}[command]
    if command == "distill" and not cfg.teacher and not (isinstance(cfg.loss, str) and cfg.loss == "triplet"):
        raise CLIError("distill needs --teacher DIR: a directory written by 'rkd-pml train-teacher --out DIR'")
    from .training.loop import stop_on_signals

    with stop_on_signals():
        results = run(cfg)  # under torchrun: on every process, rank 0 writing
    _print_results(results)
    return 0


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, KeyError):
        text = f"missing key {text}"
    return _rank_prefix() + (text or type(exc).__name__)


def _torchrun_rank() -> int:
    """This process's rank among several started by torchrun; -1 otherwise."""
    from .training.distributed_setup import torchrun_environment

    try:
        env = torchrun_environment()
    except ValueError:
        return -1
    return env[0] if env is not None and env[1] > 1 else -1


def _rank_prefix() -> str:
    """``"rank R: "`` in a process started by torchrun with several processes, else ``""``."""
    rank = _torchrun_rank()
    return f"rank {rank}: " if rank >= 0 else ""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``rkd-pml``; returns the exit status (0 success, 2 usage error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from .training.checkpoint import CheckpointError
    from .training.loop import TrainingInterrupted

    try:
        return _run(args)
    except CLIError as exc:
        parser.exit(2, f"{PROG}: error: {exc}\n")
    except TrainingInterrupted as exc:
        print(f"{PROG}: {_rank_prefix()}{exc}", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; continue the run with the same command and --resume", file=sys.stderr)
        return 130
    except (ValueError, OSError, CheckpointError, FloatingPointError) as exc:
        # FileNotFoundError, FileExistsError and timm's weight errors are OSErrors
        parser.exit(2, f"{PROG}: error: {_one_line(exc)}\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
