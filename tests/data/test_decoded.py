"""Decoded images: the pixels PIL decodes, in memory or memory-mapped from a fingerprinted cache folder."""

import numpy as np
import pytest
from PIL import Image

from rkd_pml.data import load_dataset
from rkd_pml.data.base import ImageDataset
from rkd_pml.data.decoded import DecodedImages


class CountingReader:
    def __init__(self, images):
        self.images, self.calls = images, 0

    def __call__(self, index):
        self.calls += 1
        return Image.fromarray(self.images[index])


def _colour_set(n=5, name="colours"):
    rng = np.random.RandomState(0)
    images = [rng.randint(0, 256, (4 + i, 7 - i, 3), dtype=np.uint8) for i in range(n)]
    reader = CountingReader(images)
    return ImageDataset(list(range(n)), [i % 2 for i in range(n)], ["a", "b"], reader, None, "RGB", name), images


def test_in_memory_store_holds_the_decoded_pixels():
    data, images = _colour_set()
    store = DecodedImages.build(data)
    assert store.channels == 3 and len(store) == 5 and store.nbytes == sum(a.size for a in images)
    for i, a in enumerate(images):
        assert np.array_equal(store[i], a)


def test_grey_rgb_images_keep_one_channel(omniglot_zip):
    train, _ = load_dataset("omniglot", root=omniglot_zip, image_size=32)
    store = train.decoded()
    assert store.channels == 1 and store.mode == "RGB" and train.decoded() is store
    for i in (0, 17, len(train) - 1):
        rgb = np.asarray(train.reader(train.samples[i]).convert("RGB"))
        assert np.array_equal(np.repeat(store[i], 3, axis=2), rgb)


def test_grey_mode_images():
    train, _ = load_dataset("digits", image_size=16, in_chans=1)
    store = train.decoded()
    assert store.channels == 1 and store.mode == "L"
    assert np.array_equal(store[3][..., 0], np.asarray(train.reader(train.samples[3])))


def test_check_images_can_keep_the_pixels():
    data, _ = _colour_set()
    data.check_images(keep=True)
    calls = data.reader.calls
    assert data.decoded() is data.decoded() and data.reader.calls == calls == 5


def test_cache_folder_is_reused_and_refused_on_mismatch(tmp_path):
    data, images = _colour_set()
    folder = tmp_path / "decoded"
    built = DecodedImages.build(data, cache_dir=folder)
    assert isinstance(built.pixels, np.memmap) and data.reader.calls == 5
    again = DecodedImages.build(data, cache_dir=folder)
    assert data.reader.calls == 5  # nothing decoded again
    for i, a in enumerate(images):
        assert np.array_equal(again[i], a)
    other, _ = _colour_set(n=4)
    with pytest.raises(ValueError, match="built from other images"):
        DecodedImages.build(other, cache_dir=folder)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a decoded-image cache folder"):
        DecodedImages.build(data, cache_dir=foreign)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_cache_store_survives_pickling(tmp_path):
    import pickle

    data, images = _colour_set()
    store = DecodedImages.build(data, cache_dir=tmp_path / "c")
    copy = pickle.loads(pickle.dumps(store))
    assert isinstance(copy.pixels, np.memmap) and np.array_equal(copy[4], images[4])
