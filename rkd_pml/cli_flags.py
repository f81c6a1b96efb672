"""Command-line flags generated from the config dataclasses (their field metadata), and the
config a command runs: defaults, then a ``--config`` file (or the saved run on ``--resume``),
then the flags given."""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, Callable, Sequence

from .settings import CHOICES, CLI, FLAGS, HELP, METAVAR, SHOWN, bound_error, check_bounds, check_value, choices_of, field_types


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def count(high: int | None = None, what: str = "") -> Callable[[str], int]:
    """An argparse type: an integer from 1 to ``high`` (``what`` says where ``high`` comes from)."""
    def count(text: str) -> int:
        value = _int(text)
        if value < 1 or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected an integer from 1 to {high}{what}, got {value}" if high is not None
                                             else f"expected an integer >= 1, got {value}")
        return value

    return count


class LazyParser(argparse.ArgumentParser):
    """A parser whose arguments may be added only when it is used: ``add_arguments(parser)`` runs
    before it parses or formats its help, so that ``rkd-pml --help`` imports none of the modules
    that the commands' flags come from (torch, timm, PML)."""

    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    #: arguments added only for a flag the parser does not know yet, or its help (the losses' options)
    add_late_arguments: Callable[[argparse.ArgumentParser], None] | None = None

    def complete(self, args: Sequence[str] | None = None, late: bool = True) -> "LazyParser":
        """This parser with its arguments added (the late ones too when ``late`` or when ``args``
        hold a flag it does not know)."""
        add, self.add_arguments = self.add_arguments, None
        if add is not None:
            add(self)
        known = tuple(self._option_string_actions)
        unknown = any(a.startswith("--") and not any(k.startswith(a.split("=")[0]) for k in known) for a in args or ())
        if self.add_late_arguments is not None and (late or unknown):
            add, self.add_late_arguments = self.add_late_arguments, None
            add(self)
        return self

    def parse_known_args(self, args=None, namespace=None):
        args = list(args) if args is not None else None
        return super(LazyParser, self.complete(args, late=False)).parse_known_args(args, namespace)

    def format_help(self) -> str:
        return super(LazyParser, self.complete()).format_help()

    def format_usage(self) -> str:
        return super(LazyParser, self.complete()).format_usage()


def int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def bounded(parse: Any, f: dataclasses.Field) -> Any:
    """The argparse type ``parse`` that also refuses a value outside the bounds of the setting ``f``."""
    def convert(text: str) -> Any:
        value = parse(text)
        error = bound_error(f, value)
        if error:
            raise argparse.ArgumentTypeError(error)
        return value

    convert.__name__ = parse.__name__
    return convert


def flag_of(cls: type, f: dataclasses.Field) -> list[str]:
    """The flags of field ``f`` in job ``cls``: the job's own name for it, the declared flags, or
    ``--field-name``."""
    own = getattr(cls, "flag_names", {}).get(f.name)
    declared = list(f.metadata.get(FLAGS) or ())
    return [own] if own else (declared or ["--" + f.name.replace("_", "-")])


def _base_type(tp: Any) -> Any:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1 else tp


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(x) for x in value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def add_config_flags(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """One flag per setting of ``cls`` that the CLI has (see :func:`rkd_pml.settings.setting`),
    then one per option its ``option_settings()`` declares (the distillation losses' options, kept
    in the setting ``cls.options_field``), and the ``moved_flags`` it refuses with the flag meant.

    Defaults are not put in the namespace (``argparse.SUPPRESS``): only the flags given reach
    it, so they override a config file or a saved run. ``--help`` shows each default once.
    """
    hints = field_types(cls)
    group = parser.add_argument_group(f"{cls.job} settings (defaults: the {cls.__name__} dataclass)")
    for f in dataclasses.fields(cls):
        if f.metadata.get(CLI, True) and f.name not in skip:
            _add_setting(group, f, hints[f.name], flag_of(cls, f), f.name)
    if hasattr(cls, "option_settings"):  # they come from the losses' registry (torch): only when a flag needs them
        if isinstance(parser, LazyParser):
            parser.add_late_arguments = lambda p: _add_option_flags(p, cls)
        else:
            _add_option_flags(parser, cls)
    for old, new in getattr(cls, "moved_flags", {}).items():
        parser.add_argument(old, action=_Moved, nargs="?", help=argparse.SUPPRESS, new=new, job=cls.job)


def _add_option_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    group = parser.add_argument_group("options of the distillation losses (declared by each loss; a config file "
                                      f"takes them as keys or in {cls.options_field})")
    for name, (f, tp, losses) in cls.option_settings().items():
        _add_setting(group, f, tp, ["--" + name.replace("_", "-")], f"{cls.options_field}.{name}", f" (--loss {losses})")


def _add_setting(group: Any, f: dataclasses.Field, hint: Any, flags: list[str], dest: str, note: str = "") -> None:
    """The flag of one setting: its type (bounds checked as it is parsed), choices, help and default."""
    tp = _base_type(hint)
    shown = f.metadata.get(SHOWN) or (None if f.default is None or f.default is dataclasses.MISSING else _shown(f.default))
    help_text = f.metadata.get(HELP, "") + note + (f" (default: {shown})" if shown is not None else "")
    kwargs: dict[str, Any] = dict(dest=dest, default=argparse.SUPPRESS, help=help_text.replace("%", "%%"))
    if tp is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif f.metadata.get(CHOICES) is not None:
        kwargs["metavar"] = "CHOICE"  # replaced below: argparse would list the choices at once
    else:
        parse = {int: _int, float: _float}.get(tp, int_list if typing.get_origin(tp) is tuple else str)
        kwargs["type"] = parse if parse is str else bounded(parse, f)
        kwargs["metavar"] = f.metadata.get(METAVAR)
    action = group.add_argument(*flags, **kwargs)
    if f.metadata.get(CHOICES) is not None:
        action.metavar, action.choices = None, _Choices(f)


class _Moved(argparse.Action):
    """A flag that means something else in this job: one error line naming the flag to use."""

    def __init__(self, *args: Any, new: str, job: str, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.new, self.job = new, job

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} is not a {self.job} flag: use {self.new}")


class _Choices(Sequence):
    """The choices of a setting, read when first needed (the help, or the flag given): some come
    from registries that import torch (the data sets, the distillation losses)."""

    def __init__(self, f: dataclasses.Field):
        self.field, self._items = f, None

    def _all(self) -> tuple[str, ...]:
        if self._items is None:
            self._items = choices_of(self.field) or ()
        return self._items

    def __getitem__(self, i):
        return self._all()[i]

    def __len__(self) -> int:
        return len(self._all())

    def __contains__(self, value: object) -> bool:
        return value in self._all()


def read_config_file(path: str) -> dict[str, Any]:
    """A ``--config`` file: JSON, or YAML (``.yaml``/``.yml``) when PyYAML is installed, in UTF-8."""
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"--config {path}: no such file")
    try:
        text = file.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"--config {path}: not UTF-8 text (byte {exc.start} is {exc.object[exc.start]:#04x}); "
                         "save the file as UTF-8") from None
    if file.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ValueError(f"--config {path}: YAML needs PyYAML (pip install pyyaml); or write the file as JSON") from None
        try:
            data = yaml.safe_load(text)
        except (yaml.YAMLError, ValueError) as exc:  # ValueError: an integer of more than 4300 digits
            raise ValueError(f"--config {path}: not valid YAML ({' '.join(str(exc).split())[:200]})") from None
    else:
        try:
            data = json.loads(text)
        except ValueError as exc:  # JSONDecodeError, or an integer of more than 4300 digits
            raise ValueError(f"--config {path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: expected an object of settings, got {type(data).__name__}")
    for key in data:
        if not isinstance(key, str):
            raise ValueError(f"--config {path}: setting names are words, got {key!r}")
    return data


def apply_flags(config: Any, given: dict[str, Any]) -> Any:
    """``config`` with the settings given on the command line (type-checked like a file's)."""
    hints = field_types(type(config))
    fields = {f.name: f for f in dataclasses.fields(config)}
    changes = {name: check_value("--" + name.replace("_", "-"), value, hints[name], choices_of(fields[name]))
               for name, value in given.items()}
    return dataclasses.replace(config, **changes)


def config_for(cls: type, args: argparse.Namespace, resume_dir: str | None = None) -> Any:
    """The job's config: defaults; a ``--config`` file; with ``--resume``, the saved run's
    settings instead, the file's values then applied like flags (so a setting that differs from
    the run's is refused, as the same flag is); then the flags given on the command line."""
    names = {f.name for f in dataclasses.fields(cls)}
    given = {k: v for k, v in vars(args).items() if k in names}
    nested = getattr(cls, "options_field", None)
    options = {k.split(".", 1)[1]: v for k, v in vars(args).items() if nested and k.startswith(nested + ".")}
    from_file: dict[str, Any] = {}
    if getattr(args, "config", None):
        data = read_config_file(args.config)
        config = cls.from_dict(data, f"--config {args.config}")
        from_file = {k: getattr(config, k) for k in data if k in names}
    else:
        config = cls()
    if given.get("resume"):
        from .training.config import config_from_dict
        from .runs import RunDir

        out = Path(given.get("out") or config.out or resume_dir or f"runs/{cls.job.split('-')[-1]}")
        run = RunDir(out)
        if not run.config_path.is_file():
            raise ValueError(f"nothing to resume in {out}: no {RunDir.CONFIG} there; start the run without --resume "
                             "or pass the --out of the interrupted run")
        config = config_from_dict(run.read_config(), str(run.config_path))
        if not isinstance(config, cls):
            raise ValueError(f"{out} holds a {config.job!r} run, not a {cls.job!r} run")
        # the file's settings count as flags: a runtime one applies, another that differs is refused
        given = {**from_file, **given, "out": str(out)}
    if options:  # an option's flag changes that option, the others stay as the file or the saved run has them
        given[nested] = {**given.get(nested, getattr(config, nested)), **options}
    config = apply_flags(config, given)
    check_bounds(config)
    return config
