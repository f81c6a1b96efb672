"""``rkd-pml`` / ``python -m rkd_pml``: a thin command line over :mod:`rkd_pml.training`.

Subcommands: ``demo``, ``train-teacher``, ``train-baseline``, ``distill``, ``evaluate``. The
training commands' flags are generated from the config dataclasses (one per setting, with the
dataclass's default and help); ``--config FILE`` loads settings from JSON (or YAML) and flags
override it. Errors in what the user passed end with one line ``rkd-pml: error: ...`` on
stderr and exit code 2; a data setting that differs from the teacher's prints one warning.

The training commands also run on several processes started by torchrun::

    torchrun --standalone --nproc_per_node=4 -m rkd_pml distill --teacher runs/teacher ...

``--batch-size`` is then the global batch; rank 0 prints, evaluates and writes.
"""

from __future__ import annotations

import argparse
import re
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

from .cli_evaluate import PROG, add_data_flags, run_evaluate
from .cli_flags import LazyParser, add_config_flags, config_for, count as _count
from .cli_signals import Terminated, terminate_on_sigterm

JOBS = ("train-teacher", "train-baseline", "distill")


class _Parser(LazyParser):
    """argparse with one-line errors: ``rkd-pml: error: ... (see 'rkd-pml COMMAND --help')``;
    a command's arguments are added when it is used (see :class:`.cli_flags.LazyParser`)."""

    def error(self, message: str):
        self.exit(2, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


_positive = _count()  # an integer >= 1


def _add_runtime(p: argparse.ArgumentParser, threads_default: Any = None) -> None:
    from .training.config import WORKER_LIMIT, worker_limit

    shown = "torch's" if threads_default is None else threads_default
    p.add_argument("--threads", type=_count(worker_limit(), f" ({WORKER_LIMIT})"), default=threads_default, metavar="N",
                   help=f"CPU threads for torch (default: {shown})")


def _job_classes() -> dict[str, type]:
    from .training.config import BaselineConfig, DistillConfig, TeacherConfig

    return {"train-teacher": TeacherConfig, "train-baseline": BaselineConfig, "distill": DistillConfig}


def build_parser() -> argparse.ArgumentParser:
    """The ``rkd-pml`` parser; each command's arguments are added when that command is parsed
    or its help shown (see :class:`_Parser`), so ``rkd-pml --help`` loads neither torch nor timm."""
    from . import __version__

    parser = _Parser(
        prog=PROG,
        description="Relational Knowledge Distillation (Park et al., CVPR 2019) for metric learning: "
                    "train a teacher, distil a student with RKD, evaluate Recall@K.",
        epilog="Run '%(prog)s COMMAND --help' for the options of a command. Quick start: '%(prog)s demo'.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def command(name: str, add_arguments: Callable[[argparse.ArgumentParser], None], **kwargs: Any) -> None:
        sub.add_parser(name, **kwargs).add_arguments = add_arguments

    command("demo", _demo_arguments,
            help="teacher, triplet baseline and RKD student on the built-in digits; prints Recall@K",
            description="Train a teacher (resnet18), then a triplet baseline and an RKD-DA student (resnet10t) "
                        "for each of --seeds seeds, on digits 0-4 at 32 px; evaluate Recall@1/2/4/8 on the unseen "
                        "digits 5-9, print the table (students: mean and std over seeds) and the RKD-minus-"
                        "baseline difference per seed, and write the runs, results.json and recall.png to --out.")
    cache_help = ("run a teacher once over K augmented views of the training images",
                  "Run a saved teacher once over K augmented views of every training image and store, per view, its "
                  "embedding and the augmentation's parameters (safetensors + a JSON manifest); 'rkd-pml distill "
                  "--teacher-cache DIR' then never runs the teacher and shows the student exactly the view each "
                  "embedding was computed on.")
    settings_commands = {name: ((cls.__doc__ or "").splitlines()[0], cls.__doc__) for name, cls in _job_classes().items()}
    settings_commands["teacher-cache"] = cache_help
    for name, (help_text, description) in settings_commands.items():
        command(name, _settings_arguments, help=help_text, description=description)
    command("evaluate", _evaluate_arguments,
            help="Recall@K of a saved model (or of each model of a demo's runs)",
            description="Embed the test split (classes unseen in training) with a saved model and report "
                        "Recall@K and PML's retrieval metrics. Data settings default to the ones the model "
                        "was trained with. Given a folder of runs, every model in it is evaluated; the runs "
                        "that were skipped (not finished) or could not be evaluated are named at the end "
                        "(exit status 1 when one could not be evaluated). With --gallery-model, also the "
                        "asymmetric (cross-model) metrics: each image's embedding by the model searched in "
                        "another model's embeddings of the other images.")
    command("export", _export_arguments,
            help="write a trained model as a plain timm model (timm's hub layout)",
            description="Write the model of a run (or a saved model directory) as a plain timm model whose "
                        "classifier is the embedding head: model.safetensors + config.json, loadable with "
                        "timm.create_model('local-dir:DIR', pretrained=True) or, uploaded, 'hf-hub:...'.")
    return parser


def _settings_class(command: str) -> type:
    """The config dataclass of a command that has settings (a training job or teacher-cache)."""
    if command == "teacher-cache":
        from .training.cache_job import TeacherCacheConfig

        return TeacherCacheConfig
    return _job_classes()[command]


def _demo_arguments(p: argparse.ArgumentParser) -> None:
    from .cli_flags import bounded
    from .training.config import MAX_BATCH, MAX_STEPS, TrainConfig
    from .training.demo import DEMO_SETTINGS

    p.add_argument("--out", default="runs/demo", metavar="DIR", help="output directory (default: runs/demo)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing demo in --out")
    p.add_argument("--seed", type=bounded(int, TrainConfig.__dataclass_fields__["seed"]), default=0,
                   help="random seed of the teacher and of the first students (default: 0)")
    for name, flags, high in (("epochs", ["--epochs"], MAX_STEPS),
                              ("iterations_per_epoch", ["--iterations-per-epoch", "--iters"], MAX_STEPS),
                              ("batch_size", ["--batch-size"], MAX_BATCH)):
        p.add_argument(*flags, dest=name, type=_count(high), default=None, metavar="N",
                       help=f"{name.replace('_', ' ')} of each run (default: {DEMO_SETTINGS[name]})")
    p.add_argument("--seeds", type=_count(100), default=None, metavar="N",
                   help=f"student seeds: a baseline and an RKD student for each (default: {DEMO_SETTINGS['seeds']})")
    p.add_argument("--device", default="auto", metavar="DEV", help="cpu, cuda, cuda:N or auto (default: auto)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    _add_runtime(p, threads_default=1)


def _settings_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="settings from a JSON (or YAML) file; flags override them")
    add_config_flags(p, _settings_class(p.prog.split()[-1]))
    _add_runtime(p)


def _evaluate_arguments(p: argparse.ArgumentParser) -> None:
    from .training.config import MAX_BATCH

    p.add_argument("model", metavar="MODEL_DIR", help="a run directory, a saved model directory, or a folder of runs")
    add_data_flags(p)
    p.add_argument("--split", default="test", choices=("test", "train"), help="split to evaluate (default: test)")
    p.add_argument("--gallery-model", metavar="RUN", default=None,
                   help="also cross-model retrieval: the model's embeddings as queries searched in RUN's embeddings "
                        "of the other images of the same split (an index built with RUN searched with this model); RUN "
                        "embeds them with its own recorded preprocessing and must have the same embedding width. "
                        "Adds asymmetric_recall@K and the asymmetric PML metrics beside the model's own")
    p.add_argument("--batch-size", type=_count(MAX_BATCH), default=256, metavar="N", help="embedding batch size (default: 256)")
    p.add_argument("--json", dest="json_out", default=None, metavar="FILE",
                   help="also write the metrics to FILE as JSON ('-' prints JSON instead of the table)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    _add_runtime(p)


def _export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="RUN_OR_MODEL", help="a run directory or a saved model directory")
    p.add_argument("--out", required=True, metavar="DIR", help="the folder to write")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an --out folder written by an earlier export (never any other folder, a run "
                        "or a folder in use)")


def _print_results(results: dict[str, Any]) -> None:
    if _torchrun_rank() > 0:
        return
    best, chosen = results["best"].get("test") or {}, results["test_selected"].get("test") or {}
    ks = sorted(int(k.split("@")[1]) for k in best if k.startswith("recall@"))
    line = lambda m: "  ".join(f"R@{k} {100 * m[f'recall@{k}']:.2f}" for k in ks if f"recall@{k}" in m)  # noqa: E731
    print(f"best epoch {results['best_epoch']} (by {results['selection_split']} Recall@1): test {line(best)}")
    if results["selection_split"] == "val":
        print(f"(epoch {results['test_selected']['epoch']} picked on the test split itself, optimistic: {line(chosen)})")
    print(f"model: {results['model_dir']}\nresults: {Path(results['run_dir']) / 'results.json'}")


def _run(args: argparse.Namespace) -> int:
    cfg = None
    if args.command in (*JOBS, "teacher-cache"):  # every setting is checked before torch is even imported
        cfg = config_for(_settings_class(args.command), args)
        if hasattr(cfg, "validate"):
            cfg.validate()
    import torch

    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    if args.command == "demo":
        from .training.demo import demo

        settings = {k: getattr(args, k) for k in ("epochs", "iterations_per_epoch", "batch_size", "seeds") if getattr(args, k) is not None}
        demo(out=args.out, overwrite=args.overwrite, device=args.device, seed=args.seed, progress=args.progress, **settings)
        return 0
    if args.command == "evaluate":
        return run_evaluate(args)
    if args.command == "export":
        from .models.export import export_timm

        print(f"timm model written to {export_timm(args.model, args.out, overwrite=args.overwrite)}")
        return 0
    if args.command == "teacher-cache":
        from .training.cache_job import build_cache

        print(f"teacher cache written to {build_cache(cfg)}")
        return 0
    from .training.jobs import resolve_device, run_job

    _announce(cfg, resolve_device(cfg.device))
    results = run_job(cfg)  # under torchrun: on every process, rank 0 writing; SIGTERM: see cli_signals
    _print_results(results)
    return 0


def _announce(cfg: Any, device: Any) -> None:
    """One line on stdout before a training job starts: its model, budget and device, with a
    warning when the job's full default schedule is about to run on a CPU (hours)."""
    if _torchrun_rank() > 0:
        return
    model = cfg.student if cfg.job == "distill" else cfg.model
    steps = cfg.epochs * cfg.iterations_per_epoch
    default = type(cfg)()
    slow = device.type == "cpu" and (cfg.epochs, cfg.iterations_per_epoch) == (default.epochs, default.iterations_per_epoch)
    print(f"{PROG}: {cfg.job}: {model} ({cfg.embedding_dim}-d), {cfg.epochs} epochs x {cfg.iterations_per_epoch} "
          f"iterations = {steps} steps of {cfg.batch_size} images, on {device}"
          + ("; warning: this is the paper's full schedule, hours on a CPU (for a first try pass smaller --epochs "
             "and --iters, or run 'rkd-pml demo')" if slow else ""), flush=True)


def _loaded_error_classes() -> tuple[type, ...]:
    """The package's own error classes for bad input whose modules are loaded (one not loaded
    cannot have been raised; loading it would import torch)."""
    checkpoint = sys.modules.get("rkd_pml.training.checkpoint")
    return (checkpoint.CheckpointError,) if checkpoint is not None else ()


def _one_line(exc: BaseException, settings: Sequence[str] = ()) -> str:
    """The error on one line; a setting named as the subject of a sentence ("lr must be ...")
    is named by its flag ("--lr must be ...")."""
    from .files import one_line

    text = f"missing key {one_line(exc)}" if isinstance(exc, KeyError) else one_line(exc, limit=2000)
    for name in sorted(settings, key=len, reverse=True):
        text = re.sub(rf"(?<![\w./-]){name}(?= must| \(|=)", "--" + name.replace("_", "-"), text)
    return _rank_prefix() + text


def _torchrun_rank() -> int:
    """This process's rank among several started by torchrun; -1 otherwise."""
    import os

    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return -1  # not under torchrun (without importing torch)
    from .distributed.session import torchrun_environment

    try:
        env = torchrun_environment()
    except ValueError:
        return -1
    return env[0] if env is not None and env[1] > 1 else -1


def _rank_prefix() -> str:
    rank = _torchrun_rank()
    return f"rank {rank}: " if rank >= 0 else ""


def _show_setting_warning(message, category, filename, lineno, file=None, line=None):
    from .training.resolve import SettingWarning

    if issubclass(category, SettingWarning):
        print(f"{PROG}: warning: {message}", file=sys.stderr)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``rkd-pml``; returns the exit status (0 success, 2 usage error)."""
    with terminate_on_sigterm():  # before anything is read: SIGTERM stops every phase
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .training.signals import TrainingInterrupted

    previous = warnings.showwarning
    warnings.showwarning = _show_setting_warning
    try:
        return _run(args)
    except TrainingInterrupted as exc:
        print(f"{PROG}: {_rank_prefix()}{exc}", file=sys.stderr)
        return 143
    except Terminated:
        print(f"{PROG}: {_rank_prefix()}stopped by SIGTERM", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; continue the run with the same command and --resume", file=sys.stderr)
        return 130
    except (ValueError, OSError, FloatingPointError, *_loaded_error_classes()) as exc:
        # FileNotFoundError, FileExistsError and timm's weight errors are OSErrors
        cls = _settings_class(args.command) if args.command in (*JOBS, "teacher-cache") else None
        names = list(getattr(cls, "__dataclass_fields__", {}))
        if hasattr(cls, "option_settings") and "rkd_pml.losses.registry" in sys.modules:  # else no option was read
            names += list(cls.option_settings())
        parser.exit(2, f"{PROG}: error: {_one_line(exc, names)}\n")
    finally:
        warnings.showwarning = previous
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
