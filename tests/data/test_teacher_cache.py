"""Teacher cache: embeddings of the live teacher, views that torchvision renders the same, refusals."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.transforms import functional as TF

from rkd_pml.data import ImageDataset, build_transforms
from rkd_pml.data.digits import ArrayImageReader
from rkd_pml.data.teacher_cache import (
    CachedViews,
    TeacherCache,
    build_teacher_cache,
    build_teacher_cache_from_saved,
    choose_view,
    expectation,
)
from rkd_pml.models import EmbeddingModel

SIZE = 16


def _dataset(kind="random_resized_crop", n=10, seed=0, size=SIZE, name="toy-train"):
    rng = np.random.RandomState(seed)
    pixels = rng.randint(0, 256, (n, 20, 26, 3), dtype=np.uint8)
    train, _ = build_transforms(size, train_transform=kind, data_config={"interpolation": "bilinear"})
    labels = np.arange(n) % 3
    return ImageDataset(list(range(n)), labels, ["a", "b", "c"], ArrayImageReader(pixels), train, "RGB", name)


def _teacher(seed=0):
    torch.manual_seed(seed)
    return EmbeddingModel("test_resnet", embedding_dim=8, l2_normalize=True).eval()


def _raw(dataset, i):
    return dataset.reader(dataset.samples[i])


@pytest.fixture(scope="module")
def rrc_cache(tmp_path_factory):
    dataset, teacher = _dataset(), _teacher()
    out = build_teacher_cache(teacher, dataset, 3, tmp_path_factory.mktemp("c") / "cache", batch_size=8, progress=False)
    return dataset, teacher, out


def test_one_plain_view_is_the_live_teachers_embedding(tmp_path):
    dataset, teacher = _dataset("none"), _teacher()
    cache = TeacherCache.open(build_teacher_cache(teacher, dataset, 1, tmp_path / "c", batch_size=4, progress=False))
    _, test = build_transforms(SIZE, train_transform="none", data_config={"interpolation": "bilinear"})
    with torch.no_grad():
        live = teacher(torch.stack([test(_raw(dataset, i)) for i in range(len(dataset))]))
    cached = cache.embeddings(range(len(dataset)), [0] * len(dataset))
    assert cached.dtype == torch.float32 and cached.shape == (len(dataset), 8)
    torch.testing.assert_close(cached, live, atol=1e-6, rtol=0)
    assert not cache.params.any()
    image, label, emb = CachedViews(dataset, cache)[3]
    assert torch.equal(image, test(_raw(dataset, 3))) and label == 0 and torch.equal(emb, cached[3])


def test_student_sees_the_view_the_teacher_saw(rrc_cache):
    """The item's image is torchvision's resized crop (+ flip) at the stored box, and the
    stored embedding is the live teacher's embedding of that image."""
    dataset, teacher, out = rrc_cache
    items = CachedViews(dataset, TeacherCache.open(out), seed=1, epoch=4)
    cache = items.cache
    images, embs = [], []
    for i in range(len(dataset)):
        image, label, emb = items[i]
        top, left, h, w, flip = (int(v) for v in cache.params[i, items.view_index(i)])
        expected = TF.resized_crop(_raw(dataset, i), top, left, h, w, [SIZE, SIZE], TF.InterpolationMode.BILINEAR)
        expected = TF.to_tensor(TF.hflip(expected) if flip else expected)
        assert torch.equal(image, expected) and label == int(dataset.labels[i])
        images.append(image)
        embs.append(emb)
    with torch.no_grad():
        live = teacher(torch.stack(images))
    torch.testing.assert_close(torch.stack(embs), live, atol=1e-5, rtol=0)
    assert len({tuple(p) for p in cache.params.reshape(-1, 5).tolist()}) > len(dataset)  # views differ


def test_view_choice_is_seeded_and_balanced(rrc_cache):
    dataset, _, out = rrc_cache
    items = CachedViews(dataset, out, seed=7)
    chosen = []
    for epoch in range(6):
        items.set_epoch(epoch)
        chosen.append([items.view_index(i) for i in range(len(dataset))])
    chosen = np.array(chosen)  # (epochs, images)
    for block in (chosen[:3], chosen[3:]):  # every view once per block of K epochs
        assert (np.sort(block, axis=0) == np.arange(3)[:, None]).all()
    again = CachedViews(dataset, out, seed=7, epoch=4)  # a resumed run
    assert [again.view_index(i) for i in range(len(dataset))] == chosen[4].tolist()
    assert [choose_view(8, 4, i, 3) for i in range(len(dataset))] != chosen[4].tolist()


def test_loader_batches_with_workers(rrc_cache):
    dataset, _, out = rrc_cache
    loader = DataLoader(CachedViews(dataset, out), batch_size=4, num_workers=1)
    images, labels, embs = next(iter(loader))
    assert images.shape == (4, 3, SIZE, SIZE) and labels.tolist() == [0, 1, 2, 0] and embs.shape == (4, 8)


def test_file_is_plain_safetensors_and_reopens_in_a_fresh_process(rrc_cache):
    from safetensors.torch import load_file

    dataset, _, out = rrc_cache
    tensors = load_file(str(out / "cache.safetensors"))
    assert tensors["embeddings"].shape == (10, 3, 8) and tensors["params"].shape == (10, 3, 5)
    code = (
        "import json, sys; from rkd_pml.data.teacher_cache import TeacherCache; "
        "c = TeacherCache.open(sys.argv[1]); "
        "print(json.dumps([c.embedding(r, v).tolist() for r in range(c.num_images) for v in range(c.views)]))"
    )
    run = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    fresh = torch.tensor(json.loads(run.stdout.strip().splitlines()[-1])).reshape(10, 3, 8)
    assert torch.equal(fresh, tensors["embeddings"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["views"] == 3 and manifest["image_size"] == SIZE and manifest["embedding_dtype"] == "float32"
    assert manifest["teacher"]["model_name"] == "test_resnet" and len(manifest["teacher"]["weights_sha256"]) == 64
    assert manifest["dataset"]["num_images"] == 10 and manifest["train_transform"] == "random_resized_crop"


def test_mismatched_cache_is_refused(rrc_cache):
    dataset, teacher, out = rrc_cache
    TeacherCache.open(out, expect=expectation(teacher, dataset))  # the same run: accepted
    with pytest.raises(ValueError, match="cache was built with image_size 16, this run uses 32"):
        TeacherCache.open(out, expect=expectation(dataset=_dataset(size=32)))
    with pytest.raises(ValueError, match="train_transform random_resized_crop, this run uses paper"):
        TeacherCache.open(out, expect=expectation(dataset=_dataset("paper")))
    with pytest.raises(ValueError, match="teacher weights_sha256"):
        TeacherCache.open(out, expect=expectation(teacher=_teacher(seed=1)))
    with pytest.raises(ValueError, match="dataset samples_sha256"):
        TeacherCache.open(out, expect=expectation(dataset=_dataset(n=9)))
    grey, _ = build_transforms(SIZE, train_transform="random_resized_crop", in_chans=1)
    with pytest.raises(ValueError, match="in_chans 3, this run uses 1"):
        TeacherCache.open(out, expect=expectation(view=grey.transforms[0].view))
    other = _dataset(size=24)
    with pytest.raises(ValueError, match="does not match the data set: cache was built with image_size 16"):
        CachedViews(other, out)


def test_subset_of_the_cached_images(rrc_cache):
    dataset, _, out = rrc_cache
    subset = dataset.subset([1, 2])
    items = CachedViews(subset, out)
    assert items.rows.tolist() == [i for i in range(10) if i % 3 in (1, 2)]
    _, label, emb = items[0]
    assert label == 0 and torch.equal(emb, items.cache.embedding(1, items.view_index(0)))
    moved = ImageDataset(list(range(20, 30)), dataset.labels, dataset.classes, dataset.reader, dataset.transform)
    with pytest.raises(ValueError, match="no entry for 10 of 10 images"):
        CachedViews(moved, out)


def test_overwrite_is_refused_unless_asked(rrc_cache, tmp_path):
    dataset, teacher, out = rrc_cache
    with pytest.raises(FileExistsError, match="overwrite=True"):
        build_teacher_cache(teacher, dataset, 3, out, progress=False)
    small = _dataset("none", n=4)
    target = tmp_path / "c"
    build_teacher_cache(teacher, small, 1, target, progress=False)
    build_teacher_cache(teacher, small, 1, target, progress=False, overwrite=True)
    assert TeacherCache.open(target).num_images == 4
    with pytest.raises(ValueError, match="views=1"):
        build_teacher_cache(teacher, small, 2, tmp_path / "d", progress=False)
    with pytest.raises(FileNotFoundError, match="not a teacher cache"):
        TeacherCache.open(tmp_path)


def test_from_saved_teacher_builds_what_distill_will_use(tmp_path):
    from rkd_pml.data import load_dataset

    teacher = _teacher()
    teacher.save(tmp_path / "run" / "model")
    out = build_teacher_cache_from_saved(
        tmp_path / "run", dataset="digits", views=2, out=tmp_path / "cache", image_size=SIZE,
        train_transform="paper", student="test_resnet", device="cpu", progress=False, batch_size=256,
    )  # fmt: skip
    # the run's data and teacher, built as distill builds them
    student = EmbeddingModel("test_resnet", embedding_dim=4)
    data_config = {k: v for k, v in student.data_config.items() if k != "input_size"}
    train, _ = load_dataset("digits", image_size=SIZE, train_transform="paper", in_chans=3, data_config=data_config)
    loaded = EmbeddingModel.load(tmp_path / "run" / "model").eval()
    cache = TeacherCache.open(out, expect=expectation(loaded, train))
    assert cache.num_images == len(train) and cache.manifest["teacher"]["source"].endswith("model")
    image, _, emb = CachedViews(train, cache)[5]
    with torch.no_grad():
        torch.testing.assert_close(emb, loaded(image[None])[0], atol=1e-5, rtol=0)
    with pytest.raises(FileNotFoundError, match="saved model"):
        build_teacher_cache_from_saved(tmp_path / "nothing", dataset="digits", views=1, out=tmp_path / "x")
