"""Fields that carry their own help, choices and command-line flag, and typed (de)serialisation.

A config dataclass declares each setting once with :func:`setting`; the command line
(:mod:`rkd_pml.cli`) is generated from those declarations, and :func:`from_mapping` reads a
config file or a saved ``config.json`` with the same types, so a value is checked the same way
wherever it comes from.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from typing import Any, Callable, Sequence

#: keys a run's config.json records beside the settings (facts of the run, not settings):
#: read back without complaint, never applied (``data_settings``: the run's resolved
#: :class:`~rkd_pml.data.settings.DataSettings`, absent from runs of earlier versions)
RECORDED = frozenset({"job", "package", "device_used", "teacher_sha256", "data_settings"})

#: metadata keys of a setting
HELP, CHOICES, FLAGS, METAVAR, RUNTIME, CLI, SHOWN = "help", "choices", "flags", "metavar", "runtime", "cli", "shown"
LOW, HIGH, LIMIT, ABOVE, ABSENT = "low", "high", "limit", "above", "absent"
#: ``setting(absent=...)`` not given: the setting must be in every saved config
_NOT_GIVEN = object()

# Upper bounds of the counts and rates: far above any real run, low enough that a typo (an extra
# zero, 1e23) is one error before any work instead of a run that exhausts the memory or never ends.
#: epochs, steps per epoch, milestones, evaluation and checkpoint intervals
MAX_STEPS = 10**7
#: images per batch (a training batch is also at most the training images: checked on the data)
MAX_BATCH = 2**20
MAX_IMAGE_SIZE = 4096
MAX_EMBEDDING_DIM = 2**16
#: NumPy's RandomState takes seeds below 2**32
MAX_SEED = 2**32 - 1
#: learning rate (also after the milestones), weight decay, learning-rate factor
MAX_RATE = 10.0
#: loss weights, margins and the scales of a loss's options
MAX_WEIGHT = 1e6
MIN_WORKER_LIMIT = 4
WORKER_LIMIT = f"{MIN_WORKER_LIMIT}, or the CPUs this process may use where more"


def usable_cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def worker_limit() -> int:
    """The most data-loading worker processes (or CPU threads) a run may start."""
    return max(MIN_WORKER_LIMIT, usable_cpus())


def setting(
    default: Any,
    help: str,
    *,
    choices: Sequence[str] | Callable[[], Sequence[str]] | None = None,
    flags: Sequence[str] = (),
    metavar: str | None = None,
    runtime: bool = False,
    cli: bool = True,
    shown: str | None = None,
    low: int | float | None = None,
    high: int | float | Callable[[], int] | None = None,
    limit: str | None = None,
    above: int | float | None = None,
    absent: Any = _NOT_GIVEN,
) -> Any:
    """A dataclass field with its help text, choices (a list or a function giving it), extra
    command-line ``flags`` (the first is the main one; default ``--field-name``), ``metavar``,
    whether it may change on ``--resume`` (``runtime``), whether the CLI has it, the text
    ``--help`` shows as its default when the default is resolved later (``shown``), and the
    inclusive bounds ``low``/``high`` of a number (of each item of a list; ``high`` may be a
    function, for a limit of this machine read when checked), with ``limit`` saying where
    ``high`` comes from, and ``above``: a bound the number must exceed (see :func:`bound_error`).
    ``absent``: for a setting added after runs were saved without it, the value such a saved
    config means (a setting without it must be in every saved config).
    A dict default (a setting holding named values) is a fresh empty dict per instance."""
    meta = {HELP: help, CHOICES: choices, FLAGS: tuple(flags), METAVAR: metavar, RUNTIME: runtime, CLI: cli, SHOWN: shown,
            LOW: low, HIGH: high, LIMIT: limit, ABOVE: above, ABSENT: absent}
    if isinstance(default, dict):
        return dataclasses.field(default_factory=lambda: dict(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def bound_error(f: dataclasses.Field, value: Any) -> str | None:
    """``None`` if the number ``value`` (or each number of a list) lies within the bounds of the
    setting ``f``, else what is wrong, without the setting's name: ``"must be an integer from 0
    to 4294967295, got -1"``. Values that are not numbers are left to the type checks."""
    low, high = (b() if callable(b) else b for b in (f.metadata.get(LOW), f.metadata.get(HIGH)))
    above = f.metadata.get(ABOVE)
    if low is None and high is None and above is None:
        return None
    for item in value if isinstance(value, (list, tuple)) else (value,):
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            continue
        if (low is not None and item < low) or (high is not None and item > high) or (above is not None and item <= above):
            kind = "a number" if any(isinstance(b, float) for b in (item, high, low, above)) else "an integer"
            if above is not None:
                where = f"> {above}" + (f" and <= {high}" if high is not None else "")
            else:
                where = f"from {low} to {high}" if low is not None and high is not None else (
                    f"<= {high}" if low is None else f">= {low}")
            note = f" ({f.metadata[LIMIT]})" if f.metadata.get(LIMIT) else ""
            items = " each" if isinstance(value, (list, tuple)) else ""
            return f"must{items} be {kind} {where}{note}, got {item!r}"
    return None


def check_bounds(config: Any) -> None:
    """ValueError naming the first setting of the dataclass ``config`` outside its bounds."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        error = None if value is None else bound_error(f, value)
        if error:
            raise ValueError(f"{f.name} {error}")


def redefault(cls: type, name: str, default: Any) -> Any:
    """The setting ``name`` of ``cls`` with another default (for a subclass)."""
    base = cls.__dataclass_fields__[name]
    return dataclasses.field(default=default, metadata=base.metadata)


def choices_of(f: dataclasses.Field) -> tuple[str, ...] | None:
    choices = f.metadata.get(CHOICES)
    if callable(choices):
        choices = choices()
    return tuple(choices) if choices is not None else None


def field_types(cls: type) -> dict[str, Any]:
    """Resolved type annotations of a dataclass's fields."""
    return typing.get_type_hints(cls)


def _is_optional(tp: Any) -> tuple[bool, Any]:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return True, rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]
    return False, tp


def check_value(name: str, value: Any, tp: Any, choices: Sequence[str] | None = None) -> Any:
    """``value`` as a value of type ``tp`` (lists become tuples); ValueError naming ``name`` and
    what is accepted otherwise.

    A string that spells a number is read as one where a number is expected (PyYAML reads
    ``1e-3`` as a string: YAML 1.1 floats need a dot); a string is never read as a boolean (an
    unquoted true/false is a boolean in YAML and JSON, so a quoted one was meant otherwise)."""
    optional, base = _is_optional(tp)
    if value is None:
        if optional or base is Any:
            return None
        raise ValueError(f"{name} must not be null")
    if base is Any:
        # "<module.Class>": an object (a loss, a miner) recorded by its class; kept for comparison
        recorded_object = isinstance(value, str) and value.startswith("<") and value.endswith(">")
        if isinstance(value, str) and choices is not None and value not in choices and not recorded_object:
            raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
        return value
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            raise ValueError(f"{name} must be true or false, a boolean, not the string {_quoted(value)}: remove the quotes")
        raise ValueError(f"{name} must be true or false, got {value!r}")
    if base is int:
        if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d{1,30}\s*", value):
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValueError(f"{name} must be an integer, got {_quoted(value) if isinstance(value, str) else repr(value)}")
    if base is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ValueError(f"{name} must be a number, got {_quoted(value)}") from None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
            return float(value)
        raise ValueError(f"{name} must be a number, got {value!r}")
    if base is str:
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a string, got {value!r}")
        if choices is not None and value not in choices:
            raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
        return value
    if base is dict or typing.get_origin(base) is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ValueError(f"{name} must be an object of named values, got {value!r}")
        return dict(value)
    if typing.get_origin(base) is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{name} must be a list, got {value!r}")
        (item,) = typing.get_args(base)[:1]
        return tuple(check_value(f"{name}[{i}]", v, item) for i, v in enumerate(value))
    raise TypeError(f"internal: no check for the type {tp} of {name}")


def _quoted(text: str) -> str:
    """``text`` in double quotes, as a YAML or JSON file writes a string."""
    return '"' + text.replace('"', '\\"') + '"'


def from_mapping(cls: type, data: dict[str, Any], source: str, complete: bool = False) -> Any:
    """An instance of the dataclass ``cls`` from ``data`` (a config file or a saved config).

    Unknown keys are an error naming ``source``; so are missing keys when ``complete`` (a
    saved run must hold every setting: none is silently taken from today's defaults).
    """
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a JSON object of settings, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    types_ = field_types(cls)
    unknown = sorted(set(data) - set(fields) - RECORDED)
    if unknown:
        raise ValueError(f"{source}: unknown setting {unknown[0]!r} for {getattr(cls, 'job', cls.__name__)}")
    if complete:
        missing = sorted(k for k in set(fields) - set(data) if fields[k].metadata.get(ABSENT, _NOT_GIVEN) is _NOT_GIVEN)
        if missing:
            raise ValueError(f"{source}: lacks the setting {missing[0]!r} (it was written by another version?)")
    kwargs = {k: f.metadata[ABSENT] for k, f in fields.items()
              if complete and k not in data and f.metadata.get(ABSENT, _NOT_GIVEN) is not _NOT_GIVEN}
    for key, value in data.items():
        if key in fields:
            try:
                kwargs[key] = check_value(key, value, types_[key], choices_of(fields[key]))
            except ValueError as exc:
                raise ValueError(f"{source}: {exc}") from None
    return cls(**kwargs)


def to_mapping(config: Any) -> dict[str, Any]:
    """JSON values of a config dataclass; objects (a loss or miner instance) by class name."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, tuple):
            value = list(value)
        elif value is not None and not isinstance(value, (str, int, float, bool, list, dict)):
            value = f"<{type(value).__module__}.{type(value).__qualname__}>"
        out[f.name] = value
    return out


def runtime_fields(cls: type) -> frozenset[str]:
    """Settings that may differ when a run is resumed."""
    return frozenset(f.name for f in dataclasses.fields(cls) if f.metadata.get(RUNTIME))
