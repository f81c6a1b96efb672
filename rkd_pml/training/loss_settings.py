"""The distillation loss's options as settings of ``distill``, declared by the losses themselves.

Each loss declares its options beside its class (:mod:`rkd_pml.losses.registry`); the distill
config holds the given ones in one setting, ``loss_options`` (name -> value), and records them
all, resolved, in each run's ``config.json``. A config file may give an option as a key of its
own (``darkrank_alpha: 2``, as a flag does) or inside ``loss_options``; a ``config.json`` of an
older version, which held every loss's options at its top level, loads as the options of the
loss it trained with.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from ..settings import RECORDED

#: the setting that holds the loss's options
LOSS_OPTIONS = "loss_options"
#: the options an older config.json recorded at its top level, every one for every run
LEGACY_KEYS = frozenset({"distance_weight", "angle_weight", "darkrank_alpha", "darkrank_beta", "darkrank_list_length"})


def option_settings(setting_names: Mapping[str, Any] | None = None) -> dict[str, tuple[dataclasses.Field, Any, str]]:
    """Every declared loss option: name -> (field, type, the losses that take it, as text).
    ValueError if one has the name of a setting in ``setting_names`` (one name, one setting)."""
    from ..losses.registry import loss_options

    out = {}
    for name, option in loss_options().items():
        if setting_names is not None and name in setting_names:
            raise ValueError(f"the option {name!r} of the loss {option.losses[0]!r} has the name of a distill setting")
        out[name] = (option.field, option.type, ", ".join(option.losses))
    return out


def fold_loss_options(data: Any, source: str, complete: bool, setting_names: Mapping[str, Any]) -> Any:
    # setting_names: the config's dataclass fields (the loss's default is read from them)
    """``data`` (a config file or a saved config.json) with the loss options given at its top
    level moved into ``loss_options``. In the older layout (every loss's options at the top level,
    no ``loss_options``) only those of the run's loss are kept: the others never applied to it.
    ValueError naming ``source`` if an option is given twice, or, with ``complete`` (a saved run),
    if the run's loss lacks one of its options."""
    if not isinstance(data, dict) or (not complete and LOSS_OPTIONS not in data and set(data) <= set(setting_names) | RECORDED):
        return data  # nothing to fold (and the losses, which import torch, need not be read)
    from ..losses.registry import options_of

    declared = option_settings()
    top = {k: v for k, v in data.items() if k in declared and k not in setting_names}
    rest = {k: v for k, v in data.items() if k not in top}
    nested = data.get(LOSS_OPTIONS)
    if nested is not None and not isinstance(nested, dict):
        raise ValueError(f"{source}: {LOSS_OPTIONS} must be an object of named values, got {nested!r}")
    loss = data.get("loss", getattr(setting_names.get("loss"), "default", None))
    own = options_of(loss)
    own_names = [f.name for f in dataclasses.fields(own)] if own is not None else []
    if nested is None and top and LEGACY_KEYS <= set(top):
        top = {k: v for k, v in top.items() if k in own_names}
    twice = sorted(set(top) & set(nested or {}))
    if twice:
        raise ValueError(f"{source}: {twice[0]} is given twice, as a key and in {LOSS_OPTIONS}")
    if not top and nested is None and not complete:
        return data
    merged = {**(nested or {}), **top}
    if complete:
        missing = [n for n in own_names if n not in merged]
        if missing:
            raise ValueError(f"{source}: lacks the setting {missing[0]!r} of the loss {loss!r} "
                             "(it was written by another version?)")
    return {**rest, LOSS_OPTIONS: merged}


def check_loss_options(loss: Any, given: Mapping[str, Any]) -> dict[str, Any]:
    """The options of ``loss``, the ``given`` ones checked (type, bounds, that the loss takes
    them) and the defaults for the others, by name. ValueError naming the option otherwise."""
    from ..losses.registry import resolve_loss_options

    return dataclasses.asdict(resolve_loss_options(loss, given))


def recorded_loss_options(loss: Any, given: Mapping[str, Any]) -> dict[str, Any]:
    """What config.json records: every option of ``loss`` resolved (the given ones as given
    where they do not check: :meth:`validate` refuses them before any run)."""
    try:
        return check_loss_options(loss, given)
    except (ValueError, TypeError):
        return dict(given)
