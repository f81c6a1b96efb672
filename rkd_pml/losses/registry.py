"""The registry of distillation losses: name -> factory and options, read by the config and the CLI.

A loss registers itself in its own module, with the options it takes declared beside it as a
dataclass of :func:`rkd_pml.settings.setting` fields (name, type, default, help, bounds)::

    @dataclass
    class MyOptions:
        my_scale: float = setting(1.0, "my loss's scale", metavar="S", above=0, high=MAX_WEIGHT)

    register_distillation_loss("my-loss", lambda opts, s, t: MyLoss(opts.my_scale), "what it does", MyOptions)

and :mod:`rkd_pml.losses` imports the module (one line). Then ``rkd-pml distill --loss my-loss
--my-scale 2`` and a config's ``loss: my-loss`` with ``my_scale: 2`` (or ``loss_options:
{my_scale: 2}``) use it, and each run's ``config.json`` records the options in
``loss_options``. A factory takes ``(options, student_dim, teacher_dim)``, ``options`` an
instance of the declared dataclass (of :class:`NoOptions` for a loss without any), and returns a
loss called as ``loss(student_emb (N, Ds), labels (N,), indices_tuple, ref_emb=teacher_emb (N, Dt))``.

An option's name is its config key and, with dashes, its flag: one name means one setting, so
losses that share an option (``distance_weight`` of ``rkd`` and ``rkd-d``) declare the same field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from torch import nn

from ..settings import check_bounds, field_types, from_mapping

#: factory(options, student_dim, teacher_dim) -> loss
LossFactory = Callable[[Any, int, int], nn.Module]

#: what the config's ``loss`` takes to train the student with its metric loss alone
NO_DISTILLATION = "triplet"


@dataclass
class NoOptions:
    """The options of a loss that declares none."""


@dataclass(frozen=True)
class RegisteredLoss:
    factory: LossFactory
    help: str
    #: the dataclass of the loss's options (its fields: :func:`rkd_pml.settings.setting`)
    options: type = NoOptions


@dataclass(frozen=True)
class LossOption:
    """One declared option: its field, its resolved type and the losses that take it."""

    field: dataclasses.Field
    type: Any
    losses: tuple[str, ...]


DISTILLATION_LOSSES: dict[str, RegisteredLoss] = {}


def register_distillation_loss(name: str, factory: LossFactory, help: str = "", options: type | None = None) -> None:
    """Make ``name`` a choice of ``DistillConfig.loss`` and ``--loss``, its ``options`` dataclass
    settings of ``distill`` (see the module docstring). ValueError if ``name`` is reserved or an
    option has the name of another loss's option with another declaration."""
    key = name.lower()
    if key == NO_DISTILLATION:
        raise ValueError(f"{NO_DISTILLATION!r} is reserved: it means no distillation loss")
    options = NoOptions if options is None else options
    if not dataclasses.is_dataclass(options):
        raise TypeError(f"the options of the loss {name!r} must be a dataclass, got {options!r}")
    field_types(options)  # its annotations resolve (raises otherwise)
    declared = loss_options()
    for f in dataclasses.fields(options):
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ValueError(f"the option {f.name!r} of the loss {name!r} needs a default")
        other = declared.get(f.name)
        if other is not None and set(other.losses) != {key} and not _same(other.field, f):
            raise ValueError(f"the option {f.name!r} of the loss {name!r} is declared otherwise by {', '.join(other.losses)}")
    DISTILLATION_LOSSES[key] = RegisteredLoss(factory, help, options)


def _same(a: dataclasses.Field, b: dataclasses.Field) -> bool:
    return a is b or (a.type, a.default, a.metadata) == (b.type, b.default, b.metadata)


def distillation_loss_names() -> list[str]:
    """The registered names, then ``"triplet"`` (no distillation)."""
    return sorted(DISTILLATION_LOSSES) + [NO_DISTILLATION]


def loss_options() -> dict[str, LossOption]:
    """Every declared option by name, with the losses that take it."""
    out: dict[str, LossOption] = {}
    for loss, entry in sorted(DISTILLATION_LOSSES.items()):
        hints = field_types(entry.options)
        for f in dataclasses.fields(entry.options):
            known = out.get(f.name)
            out[f.name] = LossOption(f, hints[f.name], (known.losses if known else ()) + (loss,))
    return out


def options_of(name: Any) -> type | None:
    """The options dataclass of the registered loss ``name``; None for anything else (``triplet``,
    a loss object, an unknown name)."""
    entry = DISTILLATION_LOSSES.get(name.lower()) if isinstance(name, str) else None
    return entry.options if entry is not None else None


def resolve_loss_options(name: Any, given: Mapping[str, Any] | None = None) -> Any:
    """The options of the loss ``name``: an instance of its options dataclass with the ``given``
    values (type-checked and within their bounds) and the declared defaults for the others.
    ValueError naming the option if one is not an option of this loss or is out of bounds."""
    given = dict(given or {})
    options = options_of(name)
    own = {f.name for f in dataclasses.fields(options)} if options is not None else set()
    for key in given:
        if key not in own:
            owners = loss_options().get(key)
            what = f"an option of {', '.join(owners.losses)}" if owners else "not an option of any registered loss"
            raise ValueError(f"{key} ({what}) does not apply to the loss {name if isinstance(name, str) else type(name).__name__!r}")
    if options is None:
        return NoOptions()
    resolved = from_mapping(options, given, f"loss {name!r}")
    check_bounds(resolved)
    return resolved


def build_distillation_loss(name: str, options: Mapping[str, Any] | None, student_dim: int, teacher_dim: int) -> nn.Module:
    """The registered loss ``name`` for these widths with its ``options`` (given values by name:
    see :func:`resolve_loss_options`); ValueError naming the choices for an unknown name."""
    entry = DISTILLATION_LOSSES.get(str(name).lower())
    if entry is None:
        raise ValueError(f"unknown distillation loss {name!r}; choose one of {', '.join(distillation_loss_names())}")
    return entry.factory(resolve_loss_options(name, options), student_dim, teacher_dim)
