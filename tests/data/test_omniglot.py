"""Omniglot loader on the shared archive (read in place) and on small folder/zip copies."""

import io
import pickle
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from rkd_pml.data import load_dataset

IDENTITY = {"crop_pct": 1.0}  # test transform at 105 px: resize 105, crop 105 = the image


def characters(zip_path):
    with zipfile.ZipFile(zip_path) as z:
        names = [n for n in z.namelist() if n.endswith(".png")]
    return sorted({tuple(n.split("/")[1:3]) for n in names}), names


def test_shared_archive_splits(omniglot_zip):
    train, test = load_dataset("omniglot", root=omniglot_zip, in_chans=1)
    chars, names = characters(omniglot_zip)
    assert len(chars) == 136
    assert (train.num_classes, test.num_classes) == (68, 68)
    assert (len(train), len(test)) == (1360, 1360)
    assert train.classes == ["/".join(c) for c in chars[:68]]
    assert test.classes == ["/".join(c) for c in chars[68:]]
    assert np.bincount(train.labels).tolist() == [20] * 68 and np.bincount(test.labels).tolist() == [20] * 68
    for dataset in (train, test):
        for i in (0, len(dataset) - 1):
            member = dataset.samples[i]
            assert "/".join(member.split("/")[1:3]) == dataset.classes[dataset.labels[i]]
    image, label = test[0]
    assert image.shape == (1, 32, 32) and image.dtype == torch.float32 and label == 0
    assert 0.0 <= image.min() < image.max() <= 1.0


def test_images_are_the_decoded_pngs(omniglot_zip):
    _, test = load_dataset("omniglot", root=omniglot_zip, image_size=105, data_config=IDENTITY, test_transform="timm")
    index = 25
    with zipfile.ZipFile(omniglot_zip) as z:
        raw = Image.open(io.BytesIO(z.read(test.samples[index])))
        assert raw.mode == "1"
        expected = torch.from_numpy(np.asarray(raw.convert("L"), dtype=np.float32) / 255)
    image, _ = test[index]
    assert image.shape == (3, 105, 105)
    for channel in image:
        assert torch.allclose(channel, expected)


def copy_subset(omniglot_zip, tmp_path, per_alphabet=3):
    """The first characters of two alphabets, as a folder (with top folder) and as a zip."""
    chars, names = characters(omniglot_zip)
    alphabets = sorted({a for a, _ in chars})[:2]
    keep = {c for c in chars if c[0] in alphabets and c[1] <= f"character{per_alphabet:02d}"}
    folder, archive = tmp_path / "folder", tmp_path / "small.zip"
    with zipfile.ZipFile(omniglot_zip) as z, zipfile.ZipFile(archive, "w") as out:
        for name in names:
            if tuple(name.split("/")[1:3]) in keep:
                data = z.read(name)
                target = folder / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
                out.writestr(name.split("/", 1)[1], data)  # no top folder in this one
    return folder, archive, len(keep)


def test_folder_and_zip_copies_agree(omniglot_zip, tmp_path):
    folder, archive, n = copy_subset(omniglot_zip, tmp_path)
    assert n == 6
    from_folder = load_dataset("omniglot", root=folder, train_transform="none")
    from_zip = load_dataset("omniglot", root=str(archive), train_transform="none")
    for a, b in zip(from_folder, from_zip, strict=True):
        assert a.classes == b.classes and len(a.classes) == 3
        assert a.labels.tolist() == b.labels.tolist() and len(a) == 60
        for i in (0, 21, 59):
            assert torch.equal(a[i][0], b[i][0])


def test_layout_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="omniglot root not found"):
        load_dataset("omniglot", root=tmp_path / "nowhere")
    flat = tmp_path / "flat.zip"
    with zipfile.ZipFile(flat, "w") as z:
        z.writestr("a/b/c/d/e.png", b"")
    with pytest.raises(ValueError, match=r"<alphabet>/<character>/<image>.*a/b/c/d/e\.png"):
        load_dataset("omniglot", root=str(flat))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="folder or a .zip"):
        load_dataset("omniglot", root=tmp_path / "notes.txt")
    (tmp_path / "broken.zip").write_bytes(b"PK not really")
    with pytest.raises(ValueError, match=r"broken\.zip: not a readable zip"):
        load_dataset("omniglot", root=tmp_path / "broken.zip")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images found"):
        load_dataset("omniglot", root=tmp_path / "empty")


def test_corrupt_member_is_named(tmp_path):
    archive = tmp_path / "o.zip"
    good = io.BytesIO()
    Image.new("1", (8, 8), 1).save(good, "PNG")
    with zipfile.ZipFile(archive, "w") as z:
        for alphabet in ("A", "B"):
            z.writestr(f"{alphabet}/character01/1.png", good.getvalue())
            z.writestr(f"{alphabet}/character01/2.png", b"\x89PNG broken")
    train, test = load_dataset("omniglot", root=str(archive))
    assert train[0][0].shape == (3, 32, 32)
    with pytest.raises(ValueError, match=r"o\.zip:B/character01/2\.png: not a readable image"):
        test[1]


def test_datasets_pickle_for_worker_processes(omniglot_zip):
    train, _ = load_dataset("omniglot", root=omniglot_zip, train_transform="none")
    first = train[0][0]  # opens the archive in this process
    copy = pickle.loads(pickle.dumps(train))
    assert copy.reader._zip is None and torch.equal(copy[0][0], first)
