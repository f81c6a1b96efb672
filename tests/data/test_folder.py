"""The generic root/<class>/<image> loader."""

import os

import numpy as np
import pytest
from PIL import Image

from rkd_pml.data import load_dataset


def tree(root, classes=("ant", "bee", "cat", "dog", "eel"), per_class=2):
    for c in classes:
        for j in range(per_class):
            sub = os.path.join(root, c, "deeper") if j == 1 else os.path.join(root, c)
            os.makedirs(sub, exist_ok=True)
            Image.new("RGBA", (9, 7), (10 * j, 20, 30, 255)).save(os.path.join(sub, f"{j}.png"))
        open(os.path.join(root, c, "labels.txt"), "w").write("not an image")
    return root


def test_first_half_of_sorted_classes_train(tmp_path):
    train, test = load_dataset("folder", root=tree(str(tmp_path)), image_size=8)
    assert train.classes == ["ant", "bee", "cat"] and test.classes == ["dog", "eel"]
    assert train.labels.tolist() == [0, 0, 1, 1, 2, 2] and test.labels.tolist() == [0, 0, 1, 1]
    image, label = test[3]
    assert image.shape == (3, 8, 8) and label == 1 and 0 <= image.min() <= image.max() <= 1


def test_layout_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="root not found"):
        load_dataset("folder", root=str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="no class folders"):
        load_dataset("folder", root=str(tmp_path))
    tree(str(tmp_path), classes=("a",))
    with pytest.raises(ValueError, match="at least 2 classes"):
        load_dataset("folder", root=str(tmp_path))
    os.makedirs(tmp_path / "b")
    with pytest.raises(ValueError, match=r"b: class folder without images"):
        load_dataset("folder", root=str(tmp_path))


def test_unreadable_image_is_named(tmp_path):
    root = tree(str(tmp_path), classes=("a", "b"))
    with open(os.path.join(root, "b", "0.png"), "wb") as f:
        f.write(b"garbage")
    _, test = load_dataset("folder", root=root)
    with pytest.raises(ValueError, match=r"0\.png: not a readable image"):
        test[0]
    os.remove(os.path.join(root, "b", "0.png"))
    with pytest.raises(FileNotFoundError, match=r"image file not found: .*0\.png"):
        test[0]
    assert np.array_equal(test.labels, [0, 0])
