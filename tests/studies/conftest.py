"""Fixtures of the studies' tests: the reproduction study's modules and a tiny Omniglot-layout zip."""

from __future__ import annotations

import importlib
import io
import zipfile
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="module")
def reproduce() -> ModuleType:
    """The reproduction study's entry module (``python -m studies.reproduction``)."""
    return importlib.import_module("studies.reproduction.__main__")


@pytest.fixture(scope="module")
def reproduction_report() -> ModuleType:
    """The reproduction study's report module (``python -m studies.reproduction.report``)."""
    return importlib.import_module("studies.reproduction.report")


@pytest.fixture(scope="module")
def tiny_zip(tmp_path_factory) -> Path:
    """An Omniglot-layout zip: <top>/<alphabet>/<character>/<drawing>.png, 2 x 8 characters x 6 drawings."""
    path = tmp_path_factory.mktemp("data") / "tiny_omniglot.zip"
    rng = np.random.RandomState(0)
    with zipfile.ZipFile(path, "w") as z:
        for a in range(2):
            for c in range(8):
                proto = rng.rand(16, 16) > 0.7
                for d in range(6):
                    img = proto ^ (rng.rand(16, 16) > 0.93)
                    buf = io.BytesIO()
                    Image.fromarray((~img).astype(np.uint8) * 255).convert("1").save(buf, format="PNG")
                    z.writestr(f"tiny_background/Alphabet_{a}/character{c + 1:02d}/{a}{c}_{d:02d}.png", buf.getvalue())
    return path
