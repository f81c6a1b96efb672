"""Fixtures of the training tests: one CPU thread, tiny settings, a tiny trained teacher."""

import pytest
import torch

#: Small enough for a few seconds per run on a loaded 2-core CPU.
TINY = dict(
    dataset="digits",
    image_size=16,
    epochs=1,
    iterations_per_epoch=3,
    batch_size=20,
    m_per_class=5,
    lr=1e-3,
    lr_milestones=(1,),
    eval_batch_size=512,
    progress=False,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: several test processes share two cores."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture
def tiny() -> dict:
    return dict(TINY)


@pytest.fixture(scope="session")
def teacher_dir(tmp_path_factory) -> str:
    """A resnet10t teacher (8-d, L2) trained for 3 steps on digits; its run directory."""
    from rkd_pml.training import train_teacher

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("teacher") / "run"
        train_teacher(model="resnet10t", embedding_dim=8, out=str(out), **TINY)
    finally:
        torch.set_num_threads(saved)
    return str(out)
