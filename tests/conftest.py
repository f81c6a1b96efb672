"""Test-wide settings: no network look-ups for weights, deterministic seeds."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

# Test tensors are small: one intra-op thread is faster than several, and leaves the other
# core to the processes that some tests spawn.
torch.set_num_threads(1)

SHARED_OMNIGLOT = os.path.join(
    os.path.dirname(__file__), "..", "..", "shared", "data", "omniglot", "images_background_small1.zip"
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def omniglot_zip() -> str:
    """Path of the shared Omniglot archive; tests that need it skip where it is absent."""
    path = os.path.abspath(os.environ.get("RKD_PML_OMNIGLOT", SHARED_OMNIGLOT))
    if not os.path.exists(path):
        pytest.skip(f"Omniglot archive not found at {path}")
    return path
