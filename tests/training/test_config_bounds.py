"""Every count and rate of a run is bounded (by the data, the machine or a sane maximum) and
checked before any work; values read from files are typed the way a YAML or JSON user means."""

import os

import pytest

from rkd_pml.data.batches import choose_m_per_class
from rkd_pml.training import config as config_module
from rkd_pml.training.cache_job import TeacherCacheConfig
from rkd_pml.training.config import DistillConfig, TeacherConfig
from rkd_pml import settings as settings_module
from rkd_pml.settings import check_bounds, check_value


@pytest.mark.parametrize("changes, named", [
    (dict(batch_size=10**23), "batch_size"), (dict(batch_size=10**7), "batch_size"),
    (dict(iterations_per_epoch=10**9), "iterations_per_epoch"), (dict(epochs=10**23), "epochs"),
    (dict(eval_batch_size=10**20), "eval_batch_size"), (dict(image_size=100_000), "image_size"),
    (dict(num_workers=10**23), "num_workers"), (dict(seed=-1), "seed"), (dict(seed=2**32), "seed"),
    (dict(weight_decay=1e308), "weight_decay"), (dict(lr_gamma=1e308), "lr_gamma"), (dict(lr=1e308), "lr"),
    (dict(checkpoint_every=10**12), "checkpoint_every"), (dict(eval_every=10**12), "eval_every"),
    (dict(embedding_dim=10**9), "embedding_dim"), (dict(lr_milestones=(3, 10**12)), "lr_milestones"),
    (dict(recall_ks=(1, 10**12)), "recall_ks"), (dict(m_per_class=10**23, batch_size=10**23), "batch_size"),
    (dict(loss_options={"angle_weight": 1e308}), "angle_weight"), (dict(margin=1e300), "margin"),
])
def test_a_runaway_value_is_refused_by_name(changes, named):
    with pytest.raises(ValueError, match=rf"^{named} must"):
        DistillConfig(teacher="t", **changes).validate()


def test_the_bounds_themselves_are_accepted():
    DistillConfig(teacher="t", seed=2**32 - 1, image_size=4096, batch_size=2**20, m_per_class=2**20 // 4,
                  eval_batch_size=2**20, iterations_per_epoch=10**7, weight_decay=10.0, lr=10.0, lr_gamma=10.0,
                  lr_milestones=(), num_workers=config_module.worker_limit(), embedding_dim=2**16).validate()
    DistillConfig(teacher="t", seed=0, num_workers=0).validate()


def test_a_factor_above_one_cannot_raise_the_learning_rate_without_bound():
    # MultiStepLR multiplies by gamma at each milestone, a repeated one counting twice
    DistillConfig(teacher="t", lr=1e-3, lr_gamma=10.0, lr_milestones=(1, 2, 3)).validate()  # peaks at 1
    with pytest.raises(ValueError, match="lr_gamma"):
        DistillConfig(teacher="t", lr=1e-3, lr_gamma=10.0, lr_milestones=(1, 1, 2, 3, 4)).validate()  # 100


def test_workers_are_bounded_by_the_cpus(monkeypatch):
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert settings_module.usable_cpus() == usable
    monkeypatch.setattr(settings_module, "usable_cpus", lambda: 16)
    TeacherConfig(num_workers=16).validate()
    with pytest.raises(ValueError, match=r"num_workers must be an integer <= 16 .*got 17"):
        TeacherConfig(num_workers=17).validate()
    monkeypatch.setattr(settings_module, "usable_cpus", lambda: 1)  # a few workers are always allowed
    TeacherConfig(num_workers=4).validate()
    with pytest.raises(ValueError, match="num_workers"):
        TeacherConfig(num_workers=5).validate()


def test_teacher_cache_counts_are_bounded():
    for changes in (dict(views=10**9), dict(batch_size=10**23), dict(num_workers=10**23), dict(seed=-5),
                    dict(image_size=100_000)):
        with pytest.raises(ValueError, match=f"^{next(iter(changes))} must"):
            check_bounds(TeacherCacheConfig(**changes))
    check_bounds(TeacherCacheConfig())


def _smallest_fitting_divisor(num_classes, batch_size, preferred):
    fits = [m for m in range(1, batch_size + 1) if batch_size % m == 0 and m >= preferred and m * num_classes >= batch_size]
    return fits[0] if fits else batch_size


@pytest.mark.parametrize("num_classes", [1, 2, 5, 7, 64])
@pytest.mark.parametrize("preferred", [1, 4, 6])
def test_choose_m_per_class_is_the_smallest_fitting_divisor(num_classes, preferred):
    labels = [c for c in range(num_classes) for _ in range(300)]
    for batch_size in [*range(2, 130), 210, 360, 997, 1024]:
        if batch_size <= len(labels):
            expected = _smallest_fitting_divisor(num_classes, batch_size, preferred)
            assert choose_m_per_class(labels, batch_size, preferred) == expected, batch_size


def test_choose_m_per_class_refuses_a_batch_larger_than_the_data():
    labels = [c for c in range(5) for _ in range(180)]  # 900 images
    assert choose_m_per_class(labels, 900) == 180
    for batch_size in (901, 10**7, 10**23):  # 10**23 looped for ever; SIGTERM could not stop it
        with pytest.raises(ValueError, match=rf"batch_size must be at most the 900 training images, got {batch_size}"):
            choose_m_per_class(labels, batch_size)


def test_numbers_written_as_strings_are_numbers():
    # PyYAML reads 1e-3 as a string (YAML 1.1 floats need a dot)
    assert check_value("lr", "1e-3", float) == 0.001
    assert check_value("lr", " 2.5E+2 ", float) == 250.0
    assert check_value("batch_size", "128", int) == 128
    with pytest.raises(ValueError, match=r'^batch_size must be an integer, got "1e23"$'):
        check_value("batch_size", "1e23", int)
    with pytest.raises(ValueError, match=r'^lr must be a finite number'):
        check_value("lr", "nan", float)
    with pytest.raises(ValueError, match=r'^views must be an integer, got "two"$'):
        check_value("views", "two", int)


def test_a_quoted_boolean_says_what_is_wrong():
    with pytest.raises(ValueError) as info:
        check_value("pretrained", "false", bool)
    assert str(info.value) == 'pretrained must be true or false, a boolean, not the string "false": remove the quotes'
    with pytest.raises(ValueError, match=r"^pretrained must be true or false, got 0$"):
        check_value("pretrained", 0, bool)


def test_a_saved_config_may_lack_only_settings_that_declare_what_absence_means():
    from rkd_pml.training.config import DistillConfig, config_from_dict

    saved = DistillConfig(teacher="t").to_dict()
    del saved["compat_weight"]  # added after runs were saved: absent means 0 (off)
    assert config_from_dict(saved).compat_weight == 0.0
    del saved["distill_weight"]  # no declared meaning for its absence: refused
    with pytest.raises(ValueError, match="lacks the setting 'distill_weight'"):
        config_from_dict(saved)
