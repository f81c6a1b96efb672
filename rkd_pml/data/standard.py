"""CUB-200-2011, Cars196 and Stanford Online Products through PML's dataset classes.

PML reads the splits (the standard class-disjoint ones: CUB classes 1-100 / 101-200, Cars196
1-98 / 99-196, SOP ``Ebay_train.txt`` / ``Ebay_test.txt``); this module keeps PML's image
paths and labels, converts images to RGB (or L) and maps PML's 1-based class ids to
``0..C-1`` within each split (``dataset.classes[label]`` is the original id).

On-disk layouts PML expects under ``root``:
- cub200: ``CUB_200_2011/images.txt``, ``CUB_200_2011/image_class_labels.txt``,
  ``CUB_200_2011/images/<class folder>/<image>.jpg``;
- cars196: ``names.csv``, ``anno_train.csv``, ``anno_test.csv`` (``file,x1,y1,x2,y2,class``)
  and ``car_data/car_data/{train,test}/<class name, '/' -> '-'>/<file>``;
- sop: ``Stanford_Online_Products/Ebay_{train,test}.txt`` (a header line, then
  ``image_id class_id super_class_id path``) and the images at
  ``Stanford_Online_Products/<path>``.
"""

from __future__ import annotations

import os

from pytorch_metric_learning import datasets as pml_datasets

from ._common import LoadOptions
from .base import ImageDataset, check_files_exist, read_image_file, remap_labels

DEFAULT_IMAGE_SIZE = 224

#: name -> (PML class, top folder PML expects under root or "", annotation files in it)
LAYOUTS: dict[str, tuple[type, str, tuple[str, ...]]] = {
    "cub200": (pml_datasets.CUB, "CUB_200_2011", ("images.txt", "image_class_labels.txt")),
    "cars196": (pml_datasets.Cars196, "", ("names.csv", "anno_train.csv", "anno_test.csv")),
    "sop": (
        pml_datasets.StanfordOnlineProducts,
        "Stanford_Online_Products",
        ("Ebay_train.txt", "Ebay_test.txt"),
    ),
}


def load_standard(
    name: str, root: str | os.PathLike[str] | None = None, options: LoadOptions = LoadOptions()
) -> tuple[ImageDataset, ImageDataset]:
    """``(train, test)`` of ``name`` in ``LAYOUTS`` (default image size 224); ``download`` goes to PML.

    cub200: classes 1-100 train, 101-200 test (5,864 / 5,924 images); cars196 (Kaggle folder
    layout, as PML reads it): classes 1-98 / 99-196 (8,054 / 8,131 images); sop:
    Ebay_train.txt (11,318 classes) / Ebay_test.txt (11,316 classes).
    """
    cls, top, files = LAYOUTS[name]
    if root is None:
        raise ValueError(f"{name} needs root=: the folder holding {_expected(top, files)}")
    root = _resolve_root(os.fspath(root), top, files, options.download, name)
    train_tf, test_tf, mode = options.transforms(DEFAULT_IMAGE_SIZE)
    datasets = []
    for split, transform in (("train", train_tf), ("test", test_tf)):
        try:
            pml = cls(root=root, split=split, transform=None, download=options.download)
        except (ValueError, IndexError, KeyError) as exc:
            raise ValueError(
                f"{root}: cannot parse the {name} annotation files {_expected(top, files)}: {exc}"
            ) from exc
        if not pml.labels:
            raise ValueError(f"{root}: the {name} annotations list no image of the {split} split")
        check_files_exist(pml.paths, f"the {name} annotations under {root}")
        labels, classes = remap_labels([int(x) for x in pml.labels])
        datasets.append(
            ImageDataset(pml.paths, labels, classes, read_image_file, transform, mode, f"{name}-{split}")
        )
    return datasets[0], datasets[1]


def _resolve_root(root: str, top: str, files: tuple[str, ...], download: bool, name: str) -> str:
    """Check the layout before PML reads it; accept the top folder itself as root."""
    if download:
        return root
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"{name} root not found: {root} "
            f"(expected a folder holding {_expected(top, files)}, or pass download=True)"
        )
    if top and os.path.basename(os.path.normpath(root)) == top and not os.path.isdir(os.path.join(root, top)):
        root = os.path.dirname(os.path.normpath(root))
    missing = [f for f in files if not os.path.isfile(os.path.join(root, top, f))]
    if missing:
        raise FileNotFoundError(
            f"{os.path.join(root, top, missing[0])} not found: "
            f"{name} expects {_expected(top, files)} under {root}"
        )
    return root


def _expected(top: str, files: tuple[str, ...]) -> str:
    prefix = f"{top}/" if top else ""
    return ", ".join(prefix + f for f in files)
