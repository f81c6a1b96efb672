"""A teacher cache whose files were edited or damaged is refused on open with one line naming
the file and the key, never a KeyError / TypeError / AttributeError traceback."""

import json
import shutil

import numpy as np
import pytest
import torch

from rkd_pml.data import ImageDataset, build_transforms
from rkd_pml.data.digits import ArrayImageReader
from rkd_pml.data.teacher_cache import TeacherCache, build_teacher_cache
from rkd_pml.models import EmbeddingModel


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    pixels = np.random.RandomState(0).randint(0, 256, (6, 20, 26, 3), dtype=np.uint8)
    train, _ = build_transforms(16, train_transform="random_resized_crop", data_config={"interpolation": "bilinear"})
    dataset = ImageDataset(list(range(6)), np.arange(6) % 3, ["a", "b", "c"], ArrayImageReader(pixels), train, "RGB")
    torch.manual_seed(0)
    teacher = EmbeddingModel("test_resnet", embedding_dim=8).eval()
    return build_teacher_cache(teacher, dataset, 2, tmp_path_factory.mktemp("c") / "cache", progress=False)


@pytest.fixture
def cache(built, tmp_path):
    copy = tmp_path / "cache"
    shutil.copytree(built, copy)
    TeacherCache.open(copy)  # untouched, it opens
    return copy


def _drop(key):
    def edit(data):
        *path, last = key.split(".")
        for part in path:
            data = data[part]
        del data[last]

    return edit


def _set(key, value):
    def edit(data):
        *path, last = key.split(".")
        for part in path:
            data = data[part]
        data[last] = value

    return edit


MANIFEST_EDITS = {
    "missing views": (_drop("views"), 'missing key "views"'),
    "views a string": (_set("views", "2"), 'key "views" must be an integer'),
    "views negative": (_set("views", -2), 'key "views" must be an integer from 1 to'),
    "num_images huge": (_set("num_images", 10**15), 'key "num_images" must be an integer from 1 to'),
    "embedding_dim huge": (_set("embedding_dim", 2**40), 'key "embedding_dim" must be an integer from 1 to'),
    "embedding_dim a float": (_set("embedding_dim", 8.0), 'key "embedding_dim" must be an integer'),
    "teacher a list": (_set("teacher", []), 'key "teacher" must be an object'),
    "no teacher hash": (_drop("teacher.weights_sha256"), 'missing key "teacher.weights_sha256"'),
    "dataset a string": (_set("dataset", "digits"), 'key "dataset" must be an object'),
    "dataset name a number": (_set("dataset.name", 5), 'key "dataset.name" must be a string'),
    "no view size": (_drop("view.size"), 'missing key "view.size"'),
    "view size huge": (_set("view.size", [10**6, 16]), 'key "view.size" must be a list of 2 integers'),
    "view a string": (_set("view", "paper"), 'key "view" must be an object'),
    "view of no kind known": (_set("view.kind", "bogus"), 'key "view"'),
    "view scale a string": (_set("view.scale", "0.08"), 'key "view.scale" must be a list of 2 numbers'),
    "image_size a string": (_set("image_size", "16"), 'key "image_size" must be'),
    "fewer images than listed": (lambda m: (_set("num_images", 5)(m), _set("dataset.num_images", 5)(m)),
                                 'key "samples" lists 6 images, manifest.json says 5'),
    "newer format": (_set("format_version", 99), "format version 99 is newer"),
    "not a cache": (_set("format", "other"), "not a teacher cache manifest"),
}


@pytest.mark.parametrize("case", list(MANIFEST_EDITS))
def test_a_tampered_manifest_is_one_line_naming_file_and_key(cache, case):
    edit, expected = MANIFEST_EDITS[case]
    manifest = json.loads((cache / "manifest.json").read_text())
    edit(manifest)
    (cache / "manifest.json").write_text(json.dumps(manifest))
    file = "samples.json" if "samples" in expected else "manifest.json"
    _refused(cache, file, expected)


SAMPLES_EDITS = {
    "missing classes": (lambda s: s.pop("classes"), 'missing key "classes"'),
    "samples an object": (lambda s: s.update(samples={"0": "a"}), 'key "samples" must be a list of strings'),
    "samples numbers": (lambda s: s.update(samples=list(range(6))), 'key "samples" must be a list of strings'),
    "one class short": (lambda s: s["classes"].pop(), 'key "classes" lists 5 images, manifest.json says 6'),
}


@pytest.mark.parametrize("case", list(SAMPLES_EDITS))
def test_a_tampered_sample_list_is_one_line_naming_file_and_key(cache, case):
    edit, expected = SAMPLES_EDITS[case]
    samples = json.loads((cache / "samples.json").read_text())
    edit(samples)
    (cache / "samples.json").write_text(json.dumps(samples))
    _refused(cache, "samples.json", expected)


@pytest.mark.parametrize("name", ["manifest.json", "samples.json"])
@pytest.mark.parametrize("text, expected", [("{not json", "is not valid JSON"), ("[1, 2]", "expected a JSON object"),
                                            (b"\xff\xfe{}", "not UTF-8")])  # fmt: skip
def test_a_file_that_is_not_a_json_object(cache, name, text, expected):
    (cache / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    _refused(cache, name, expected)


def test_tensors_that_disagree_with_the_manifest(cache):
    manifest = json.loads((cache / "manifest.json").read_text())
    manifest["embedding_dim"] = 4
    (cache / "manifest.json").write_text(json.dumps(manifest))
    _refused(cache, "cache.safetensors", "tensor 'embeddings' is F32 [6, 2, 8], manifest.json says F32 [6, 2, 4]")
    data = (cache / "cache.safetensors").read_bytes()
    (cache / "cache.safetensors").write_bytes(data[: len(data) // 2])  # truncated
    manifest["embedding_dim"] = 8
    (cache / "manifest.json").write_text(json.dumps(manifest))
    _refused(cache, "cache.safetensors", "cannot read (corrupt or truncated?)")


def _refused(cache, file, expected):
    with pytest.raises(ValueError) as info:
        TeacherCache.open(cache)
    text = str(info.value)
    assert text.startswith(f"{cache / file}") and expected in text and "\n" not in text, text
