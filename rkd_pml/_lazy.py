"""Packages whose names are imported on first use, so that ``import rkd_pml`` (and the command
line's ``--help``) does not load torch, timm and PML before they are needed."""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any, Mapping


class _LazyPackage(types.ModuleType):
    """A package whose public name ``n`` is imported from its submodule ``_lazy_exports[n]`` on
    first use; its submodules are found as attributes too. A name it exports keeps meaning the
    export after the submodule of the same name is loaded (``rkd_pml.training.demo`` is the
    function, as an eager ``from .demo import demo`` made it)."""

    def __getattr__(self, name: str) -> Any:
        exports = self.__dict__.get("_lazy_exports", {})
        if name in exports:
            value = getattr(importlib.import_module(exports[name], self.__name__), name)
        elif name.startswith("__"):
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        else:
            try:
                value = importlib.import_module(f".{name}", self.__name__)
            except ModuleNotFoundError as exc:
                if exc.name != f"{self.__name__}.{name}":
                    raise
                raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}") from None
        self.__dict__[name] = value
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        exports = self.__dict__.get("_lazy_exports", {})
        if name in exports and isinstance(value, types.ModuleType) and value.__name__ == f"{self.__name__}.{name}":
            return  # the import system naming the loaded submodule: the export keeps the name
        super().__setattr__(name, value)

    def __dir__(self) -> list[str]:
        return sorted(set(self.__dict__) | set(self.__dict__.get("_lazy_exports", {})))


def lazy_package(name: str, exports: Mapping[str, str]) -> None:
    """Make the package ``name`` (call with ``__name__`` from its ``__init__``) import each
    public name ``n`` from its submodule ``exports[n]`` (relative, e.g. ``".data"``) on first use."""
    package = sys.modules[name]
    package.__class__ = _LazyPackage
    package.__dict__["_lazy_exports"] = dict(exports)
