"""scikit-learn digits: 0-4 train, 5-9 test, 8x8 grey upsampled."""

import numpy as np
import torch
from sklearn.datasets import load_digits as sklearn_digits

from rkd_pml.data import load_dataset


def test_splits_and_labels():
    target = sklearn_digits().target
    train, test = load_dataset("digits")
    assert len(train) == int((target < 5).sum()) and len(test) == int((target >= 5).sum())
    assert train.classes == [0, 1, 2, 3, 4] and test.classes == [5, 6, 7, 8, 9]
    assert np.array_equal(train.labels, target[target < 5])
    assert np.array_equal(test.labels, target[target >= 5] - 5)
    image, label = train[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and label == target[0]


def test_pixels_are_the_digits_scaled_to_unit_range():
    bunch = sklearn_digits()
    _, test = load_dataset("digits", image_size=8, in_chans=1, data_config={"crop_pct": 1.0}, test_transform="timm")
    index = 7
    image, _ = test[index]
    original = bunch.images[bunch.target >= 5][index] / 16.0
    assert image.shape == (1, 8, 8)
    assert torch.allclose(image[0], torch.from_numpy(original).float(), atol=1 / 255)


def test_train_augmentation_is_random_and_test_is_not():
    train, test = load_dataset("digits", image_size=16)
    first = train[3][0]
    assert any(not torch.equal(first, train[3][0]) for _ in range(5))
    assert torch.equal(test[3][0], test[3][0])


def test_subset_keeps_some_classes_with_their_images_and_names():
    from rkd_pml.data import load_dataset

    train, test = load_dataset("digits", image_size=8, train_transform="none")
    part = train.subset([3, 1], transform=test.transform)
    assert part.classes == [1, 3] and part.num_classes == 2
    assert len(part) == int(((train.labels == 1) | (train.labels == 3)).sum())
    assert sorted(set(part.labels.tolist())) == [0, 1]
    assert part.transform is test.transform and part.reader is train.reader
    image, label = part[0]
    first = int(np_index_of_first(train.labels, (1, 3)))
    assert label == {1: 0, 3: 1}[int(train.labels[first])]
    assert (image == test.transform(train.reader(train.samples[first]).convert(train.mode))).all()


def np_index_of_first(labels, classes):
    import numpy as np

    return np.flatnonzero(np.isin(labels, classes))[0]
