"""CUB-200-2011, Cars196 and SOP loaders on small fake trees in the layouts PML reads."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from rkd_pml.data import load_dataset


def write_image(path, mode="RGB", size=(12, 10), seed=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    image.save(path, "JPEG" if path.lower().endswith(".jpg") else "PNG")


def fake_cub(root, classes=(1, 2, 3, 101, 102), per_class=3):
    base = os.path.join(root, "CUB_200_2011")
    images, labels, i = [], [], 0
    for c in classes:
        for j in range(per_class):
            i += 1
            rel = f"{c:03d}.Bird_{c}/Bird_{c}_{j}.jpg"
            write_image(os.path.join(base, "images", rel), mode="L" if j == 0 else "RGB", seed=i)
            images.append(f"{i} {rel}")
            labels.append(f"{i} {c}")
    open(os.path.join(base, "images.txt"), "w").write("\n".join(images) + "\n")
    open(os.path.join(base, "image_class_labels.txt"), "w").write("\n".join(labels) + "\n")
    return root


def fake_cars(root, train=(1, 2, 98), test=(99, 196), per_class=2):
    names = [f"Make{i} Model{i} 2012" for i in range(1, 197)]
    names[1] = "Ram C/V Cargo Van Minivan 2012"  # PML replaces '/' by '-' in folder names
    open(os.path.join(root, "names.csv"), "w").write("\n".join(names) + "\n")
    counter = 0
    for split in ("train", "test"):
        rows = []
        for c in train + test:
            for j in range(per_class):
                counter += 1
                name = f"{counter:05d}.jpg"
                folder = names[c - 1].replace("/", "-")
                write_image(
                    os.path.join(root, "car_data", "car_data", split, folder, name),
                    mode="L" if j else "RGB",
                    seed=counter,
                )
                rows.append(f"{name},1,2,30,40,{c}")
        open(os.path.join(root, f"anno_{split}.csv"), "w").write("\n".join(rows) + "\n")
    return root


def fake_sop(root, train=(1, 2, 3), test=(4, 5), per_class=2):
    base = os.path.join(root, "Stanford_Online_Products")
    image_id = 0
    for split, classes in (("train", train), ("test", test)):
        rows = ["image_id class_id super_class_id path"]
        for c in classes:
            for j in range(per_class):
                image_id += 1
                rel = f"bicycle_final/{c}_{j}.JPG"
                write_image(os.path.join(base, rel), mode="CMYK" if j else "RGB", seed=image_id)
                rows.append(f"{image_id} {c} 1 {rel}")
        open(os.path.join(base, f"Ebay_{split}.txt"), "w").write("\n".join(rows) + "\n")
    return root


def check_items(dataset, channels=3, size=16):
    for i in range(len(dataset)):
        image, label = dataset[i]
        assert image.shape == (channels, size, size) and image.dtype == torch.float32
        assert 0.0 <= image.min() and image.max() <= 1.0
        assert label == dataset.labels[i]


def test_cub200_splits_and_labels(tmp_path):
    train, test = load_dataset("cub200", root=fake_cub(str(tmp_path)), image_size=16)
    assert (len(train), len(test)) == (9, 6)
    assert train.classes == [1, 2, 3] and test.classes == [101, 102]
    assert train.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] and test.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert train.samples[3].endswith(os.path.join("002.Bird_2", "Bird_2_0.jpg"))
    check_items(train)  # grey JPEGs come out as RGB
    check_items(test)


def test_cub200_root_may_be_the_top_folder_itself(tmp_path):
    fake_cub(str(tmp_path))
    train, _ = load_dataset("cub200", root=str(tmp_path / "CUB_200_2011"), image_size=16)
    assert len(train) == 9


def test_cars196_splits_and_labels(tmp_path):
    train, test = load_dataset("cars196", root=fake_cars(str(tmp_path)), image_size=16, in_chans=1)
    # classes 1-98 train, 99-196 test, images from both Kaggle folders
    assert train.classes == [1, 2, 98] and test.classes == [99, 196]
    assert (len(train), len(test)) == (12, 8)
    assert np.bincount(train.labels).tolist() == [4, 4, 4]
    assert any("Ram C-V Cargo Van" in s for s in train.samples)
    check_items(train, channels=1)
    check_items(test, channels=1)


def test_sop_splits_and_labels(tmp_path):
    train, test = load_dataset("sop", root=fake_sop(str(tmp_path)), image_size=16, train_transform="paper")
    assert train.classes == [1, 2, 3] and test.classes == [4, 5]
    assert train.labels.tolist() == [0, 0, 1, 1, 2, 2] and test.labels.tolist() == [0, 0, 1, 1]
    check_items(train)  # CMYK JPEGs come out as RGB
    check_items(test)


def test_missing_root_and_wrong_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="cub200 root not found.*nowhere"):
        load_dataset("cub200", root=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"CUB_200_2011.images\.txt not found"):
        load_dataset("cub200", root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"names\.csv not found"):
        load_dataset("cars196", root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"Ebay_train\.txt not found"):
        load_dataset("sop", root=str(tmp_path))
    with pytest.raises(ValueError, match="needs root="):
        load_dataset("sop")


def test_missing_listed_image(tmp_path):
    root = fake_sop(str(tmp_path))
    os.remove(os.path.join(root, "Stanford_Online_Products", "bicycle_final", "2_1.JPG"))
    with pytest.raises(FileNotFoundError, match=r"1 of 6 images.*2_1\.JPG"):
        load_dataset("sop", root=root)


def test_malformed_annotations(tmp_path):
    root = fake_sop(str(tmp_path))
    with open(os.path.join(root, "Stanford_Online_Products", "Ebay_train.txt"), "a") as f:
        f.write("7 seven 1\n")
    with pytest.raises(ValueError, match="cannot parse the sop annotation files"):
        load_dataset("sop", root=root)


def test_corrupt_image_is_named_when_read(tmp_path):
    root = fake_cub(str(tmp_path))
    bad = os.path.join(root, "CUB_200_2011", "images", "101.Bird_101", "Bird_101_1.jpg")
    with open(bad, "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 truncated")
    _, test = load_dataset("cub200", root=root, image_size=16)
    with pytest.raises(ValueError, match=r"Bird_101_1\.jpg: not a readable image"):
        test[1]


@pytest.mark.parametrize(
    "name, make, pml_class",
    [("cub200", fake_cub, "CUB"), ("cars196", fake_cars, "Cars196"), ("sop", fake_sop, "StanfordOnlineProducts")],
)
def test_same_paths_and_labels_as_pml2_dataset_classes(tmp_path, name, make, pml_class):
    # PML 2's own readers are a second, independent reading of the same layout (PML 3 has none)
    pml_datasets = pytest.importorskip("pytorch_metric_learning.datasets")
    root = make(str(tmp_path))
    ours = load_dataset(name, root=root, image_size=16)
    for split, dataset in zip(("train", "test"), ours):
        theirs = getattr(pml_datasets, pml_class)(root=root, split=split)
        assert [os.path.normpath(p) for p in dataset.samples] == [os.path.normpath(p) for p in theirs.paths]
        assert [dataset.classes[i] for i in dataset.labels] == [int(x) for x in theirs.labels]


def test_package_reads_standard_layouts_without_pml_datasets(tmp_path):
    import subprocess
    import sys

    root = fake_sop(str(tmp_path))
    code = (
        "import sys; sys.modules['pytorch_metric_learning.datasets'] = None\n"
        "from rkd_pml.data import load_dataset\n"
        f"train, test = load_dataset('sop', root={root!r}, image_size=16)\n"
        "print(len(train), len(test))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["6", "4"]
