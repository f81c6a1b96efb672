"""Omniglot from a folder or a zip archive in its own layout, read in place (no extraction).

Layout: ``<alphabet>/<character>/<image>.png``, possibly under a single top folder (as in
``images_background_small1.zip``). Each character is a class; the characters sorted by
(alphabet, character) are split in two: the first ceil(C/2) train, the rest test. Labels are
``0..C-1`` within each split and ``dataset.classes[label]`` is ``"<alphabet>/<character>"``.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from .base import (
    ImageDataset,
    ZipImageReader,
    is_image_name,
    open_zip,
    read_image_file,
    remap_labels,
    split_classes,
)
from .settings import DataSettings

LAYOUT = "<alphabet>/<character>/<image>.png"


def load_omniglot(settings: DataSettings) -> tuple[ImageDataset, ImageDataset]:
    """``(train, test)`` from an Omniglot folder or ``.zip`` at ``settings.root`` (images are
    1-bit PNGs, converted to RGB or L)."""
    root = settings.root
    if root is None:
        raise ValueError(f"omniglot needs root=: a folder or .zip in the layout {LAYOUT}")
    root = os.fspath(root)
    entries, reader, locate = _list_images(root)
    keys = _character_keys(root, entries)
    train_classes, test_classes = split_classes(set(keys))
    datasets = []
    for split, chosen in (("train", set(train_classes)), ("test", set(test_classes))):
        picked = sorted((k, e) for k, e in zip(keys, entries, strict=True) if k in chosen)
        labels, classes = remap_labels([k for k, _ in picked])
        samples = [locate(e) for _, e in picked]
        datasets.append(
            ImageDataset(
                samples, labels, ["/".join(c) for c in classes], reader, None, settings.mode, f"omniglot-{split}"
            )
        )
    return datasets[0], datasets[1]


def _list_images(root: str) -> tuple[list[str], Callable, Callable[[str], str]]:
    """(relative image names with '/' separators, reader, relative name -> sample)."""
    if os.path.isfile(root):
        if not root.lower().endswith(".zip"):
            raise ValueError(f"{root}: expected a folder or a .zip archive in the layout {LAYOUT}")
        with open_zip(root) as archive:
            names = [n for n in archive.namelist() if not n.endswith("/")]
        return [n for n in names if _keep(n)], ZipImageReader(root), lambda name: name
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"omniglot root not found: {root} (expected a folder or .zip in the layout {LAYOUT})"
        )
    names = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__MACOSX"]
        rel = os.path.relpath(folder, root)
        for f in files:
            names.append(f if rel == "." else f"{rel.replace(os.sep, '/')}/{f}")
    return [n for n in names if _keep(n)], read_image_file, lambda name: os.path.join(root, *name.split("/"))


def _keep(name: str) -> bool:
    parts = name.split("/")
    return is_image_name(name) and not any(p.startswith(".") or p == "__MACOSX" for p in parts)


def _character_keys(root: str, entries: list[str]) -> list[tuple[str, str]]:
    """(alphabet, character) of each entry; strips one common top folder; checks the depth."""
    if not entries:
        raise ValueError(f"{root}: no images found (expected the layout {LAYOUT})")
    parts = [e.split("/") for e in entries]
    tops = {p[0] for p in parts}
    if all(len(p) == 4 for p in parts) and len(tops) == 1:
        parts = [p[1:] for p in parts]
    bad = next((e for e, p in zip(entries, parts, strict=True) if len(p) != 3), None)
    if bad is not None:
        raise ValueError(f"{root}: expected images at {LAYOUT}, found {bad!r}")
    return [(p[0], p[1]) for p in parts]
