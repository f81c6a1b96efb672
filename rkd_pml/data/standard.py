"""CUB-200-2011, Cars196 and Stanford Online Products from their standard on-disk layouts.

The readers follow the layouts (and splits, and class ids) that PML 2's dataset classes read,
without PML (PML 3 has no ``datasets``). Splits are the standard class-disjoint ones: CUB
classes 1-100 / 101-200, Cars196 1-98 / 99-196, SOP ``Ebay_train.txt`` / ``Ebay_test.txt``.
Images are converted to RGB (or L); the original 1-based class ids are mapped to ``0..C-1``
within each split (``dataset.classes[label]`` is the original id).

On-disk layouts under ``root`` (``root`` may also be the top folder itself):
- cub200: ``CUB_200_2011/images.txt`` (``image_id path``), ``CUB_200_2011/image_class_labels.txt``
  (``image_id class_id``), ``CUB_200_2011/images/<path>``;
- cars196 (the Kaggle "by classes folder" layout): ``names.csv`` (one class name per line, in
  class-id order), ``anno_train.csv`` and ``anno_test.csv`` (``file,x1,y1,x2,y2,class_id``, no
  header), images at ``car_data/car_data/{train,test}/<class name, '/' -> '-'>/<file>``; both
  annotation files are read and the classes decide the split;
- sop: ``Stanford_Online_Products/Ebay_{train,test}.txt`` (a header line, then
  ``image_id class_id super_class_id path``), images at ``Stanford_Online_Products/<path>``.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from .base import ImageDataset, check_files_exist, read_image_file, remap_labels
from .settings import DataSettings


#: ``(paths, original class ids)`` of one split
Listing = tuple[list[str], list[int]]


def _read_rows(path: str, sep: str | None = None, skip: int = 0) -> list[list[str]]:
    with open(path, encoding="utf-8") as f:
        lines = [line.strip() for line in f][skip:]
    return [line.split(sep) for line in lines if line]


def read_cub(base: str, split: str) -> Listing:
    """CUB-200-2011 under ``base`` (= ``root/CUB_200_2011``): classes 1-100 train, 101-200 test."""
    wanted = range(1, 101) if split == "train" else range(101, 201)
    paths = {int(i): p for i, p in _read_rows(os.path.join(base, "images.txt"))}
    out_paths, out_labels = [], []
    for image_id, class_id in _read_rows(os.path.join(base, "image_class_labels.txt")):
        if int(class_id) in wanted:
            out_paths.append(os.path.join(base, "images", paths[int(image_id)]))
            out_labels.append(int(class_id))
    return out_paths, out_labels


def read_cars(base: str, split: str) -> Listing:
    """Cars196 under ``base``: classes 1-98 train, 99-196 test, from both annotation files."""
    wanted = range(1, 99) if split == "train" else range(99, 197)
    with open(os.path.join(base, "names.csv"), encoding="utf-8") as f:
        names = [line.strip() for line in f]
    out_paths, out_labels = [], []
    for folder in ("train", "test"):
        for row in _read_rows(os.path.join(base, f"anno_{folder}.csv"), sep=","):
            class_id = int(row[-1])
            if class_id in wanted:
                name = names[class_id - 1].replace("/", "-")
                out_paths.append(os.path.join(base, "car_data", "car_data", folder, name, row[0]))
                out_labels.append(class_id)
    return out_paths, out_labels


def read_sop(base: str, split: str) -> Listing:
    """Stanford Online Products under ``base`` (= ``root/Stanford_Online_Products``)."""
    rows = _read_rows(os.path.join(base, f"Ebay_{split}.txt"), skip=1)
    return [os.path.join(base, r[3]) for r in rows], [int(r[1]) for r in rows]


#: name -> (reader, top folder under root or "", annotation files in it)
LAYOUTS: dict[str, tuple[Callable[[str, str], Listing], str, tuple[str, ...]]] = {
    "cub200": (read_cub, "CUB_200_2011", ("images.txt", "image_class_labels.txt")),
    "cars196": (read_cars, "", ("names.csv", "anno_train.csv", "anno_test.csv")),
    "sop": (read_sop, "Stanford_Online_Products", ("Ebay_train.txt", "Ebay_test.txt")),
}


def load_standard(settings: DataSettings) -> tuple[ImageDataset, ImageDataset]:
    """``(train, test)`` of ``settings.dataset``, a name in ``LAYOUTS``, under ``settings.root``.

    cub200: 5,864 / 5,924 images; cars196: 8,054 / 8,131; sop: 59,551 images of 11,318
    classes / 60,502 of 11,316.
    """
    name, root = settings.dataset, settings.root
    reader, top, files = LAYOUTS[name]
    if root is None:
        raise ValueError(f"{name} needs root=: the folder holding {_expected(top, files)}")
    base = os.path.join(_resolve_root(os.fspath(root), top, files, name), top)
    datasets = []
    for split in ("train", "test"):
        try:
            paths, original = reader(base, split)
        except (ValueError, IndexError, KeyError) as exc:
            raise ValueError(
                f"{base}: cannot parse the {name} annotation files {_expected(top, files)}: {exc!r}"
            ) from None
        if not paths:
            raise ValueError(f"{base}: the {name} annotations list no image of the {split} split")
        check_files_exist(paths, f"the {name} annotations under {base}")
        labels, classes = remap_labels(original)
        datasets.append(ImageDataset(paths, labels, classes, read_image_file, None, settings.mode, f"{name}-{split}"))
    return datasets[0], datasets[1]


def _resolve_root(root: str, top: str, files: tuple[str, ...], name: str) -> str:
    """Check the layout before reading it; accept the top folder itself as root."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{name} root not found: {root} (expected a folder holding {_expected(top, files)})")
    if top and os.path.basename(os.path.normpath(root)) == top and not os.path.isdir(os.path.join(root, top)):
        root = os.path.dirname(os.path.normpath(root))
    missing = [f for f in files if not os.path.isfile(os.path.join(root, top, f))]
    if missing:
        raise FileNotFoundError(
            f"{os.path.join(root, top, missing[0])} not found: {name} expects {_expected(top, files)} under {root}"
        )
    return root


def _expected(top: str, files: tuple[str, ...]) -> str:
    prefix = f"{top}/" if top else ""
    return ", ".join(prefix + f for f in files)
