"""Any ``root/<class>/<image>`` tree (images may sit deeper inside a class folder).

Class folders sorted by name are split in two: the first ceil(C/2) train, the rest test; or,
with a separate test folder (``test_root``), every class under ``root`` trains and every class
under ``test_root`` tests.
Labels are ``0..C-1`` within each split; ``dataset.classes[label]`` is the folder name.
"""

from __future__ import annotations

import os

from .base import ImageDataset, is_image_name, read_image_file, remap_labels, split_classes
from .settings import DataSettings



def load_folder(settings: DataSettings) -> tuple[ImageDataset, ImageDataset]:
    """``(train, test)`` from ``settings.root``: ``root/<class>/<image>`` (and ``settings.test_root``)."""
    root = settings.root
    if root is None:
        raise ValueError("folder needs root=: a directory laid out as root/<class>/<image>")
    root = os.fspath(root)
    by_class = scan_class_folders(root)
    if settings.test_root is None:
        train_classes, test_classes = split_classes(by_class)
        splits = ((by_class, train_classes), (by_class, test_classes))
    else:
        test_by_class = scan_class_folders(os.fspath(settings.test_root))
        for what, classes, where in (("training", by_class, root), ("test", test_by_class, settings.test_root)):
            if len(classes) < 2:
                raise ValueError(f"{where}: the {what} split needs at least 2 class folders, found {len(classes)}")
        splits = ((by_class, sorted(by_class)), (test_by_class, sorted(test_by_class)))
    datasets = []
    for split, (source, chosen) in zip(("train", "test"), splits):
        pairs = [(c, path) for c in chosen for path in source[c]]
        labels, classes = remap_labels([c for c, _ in pairs])
        datasets.append(
            ImageDataset(
                [p for _, p in pairs], labels, classes, read_image_file, None, settings.mode, f"folder-{split}"
            )
        )
    return datasets[0], datasets[1]


def scan_class_folders(root: str) -> dict[str, list[str]]:
    """Class folder name -> sorted image paths under it; clear errors for a wrong layout."""
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"data set root not found: {root} (expected a directory root/<class>/<image>)"
        )
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise ValueError(f"{root}: no class folders (expected the layout root/<class>/<image>)")
    by_class = {}
    for name in classes:
        paths = []
        for folder, dirs, files in os.walk(os.path.join(root, name)):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            paths += [os.path.join(folder, f) for f in files if is_image_name(f)]
        if not paths:
            raise ValueError(
                f"{os.path.join(root, name)}: class folder without images (expected root/<class>/<image>)"
            )
        by_class[name] = sorted(paths)
    return by_class
