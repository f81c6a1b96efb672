"""Test-wide settings (no network look-ups for weights, one thread, seeds) and shared fixtures."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Where no NVIDIA GPU is present, Triton kernels run under Triton's CPU interpreter. The variable
# is read when a kernel is decorated, so it is set before anything (torch.compile included)
# imports Triton.
if not os.path.exists("/dev/nvidiactl"):
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

# Test tensors are small: one intra-op thread is faster than several, and leaves the other
# core to the processes that some tests spawn.
torch.set_num_threads(1)

SHARED_OMNIGLOT = os.path.join(
    os.path.dirname(__file__), "..", "..", "shared", "data", "omniglot", "images_background_small1.zip"
)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` (registered in pyproject.toml) skip where no CUDA GPU is available."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (marked cuda)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def load_script():
    """``load_script(path)``: the Python file at ``path`` (a benchmark script, a worker) run as a
    module of its own, ``script_<stem>`` in ``sys.modules`` (so its dataclasses and pickles
    resolve), loaded once per session."""
    import importlib.util
    import sys
    import types
    from pathlib import Path

    def load(path: "str | os.PathLike") -> types.ModuleType:
        path = Path(path).resolve()
        name = f"script_{path.stem}"
        module = sys.modules.get(name)
        if module is not None and Path(module.__file__).resolve() == path:
            return module
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture
def omniglot_zip() -> str:
    """Path of the shared Omniglot archive; tests that need it skip where it is absent."""
    path = os.path.abspath(os.environ.get("RKD_PML_OMNIGLOT", SHARED_OMNIGLOT))
    if not os.path.exists(path):
        pytest.skip(f"Omniglot archive not found at {path}")
    return path


#: Training settings small enough for a few seconds per run on a 2-core CPU.
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


@pytest.fixture
def tiny() -> dict:
    return dict(TINY)


@pytest.fixture(scope="session")
def teacher_dir(tmp_path_factory) -> str:
    """A resnet10t teacher (8-d, L2) trained for 3 steps on digits; its run directory."""
    from rkd_pml.training import train_teacher

    out = tmp_path_factory.mktemp("teacher") / "run"
    train_teacher(model="resnet10t", embedding_dim=8, out=str(out), **TINY)
    return str(out)
