"""The one boundary to pytorch-metric-learning: only ``rkd_pml/_pml.py`` imports it, and the
package works where PML's trainers, testers, datasets and logging presets (gone in PML 3) are
absent."""

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "rkd_pml"
BOUNDARY = PACKAGE / "_pml.py"
#: What PML 3 removed; the package must not need it outside DistillationTrainer.
REMOVED_IN_PML3 = (
    "pytorch_metric_learning.trainers",
    "pytorch_metric_learning.testers",
    "pytorch_metric_learning.datasets",
    "pytorch_metric_learning.utils.logging_presets",
)


def imported_modules(path: Path) -> set[str]:
    """Every module an ``import`` or ``from ... import`` in ``path`` names, at any depth."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) in (
            "import_module",
            "__import__",
        ):
            names.update(a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str))
    return names


def test_only_the_boundary_imports_pml():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == BOUNDARY:
            continue
        pml = sorted(m for m in imported_modules(path) if m.split(".")[0] == "pytorch_metric_learning")
        if pml:
            offenders.append(f"{path.relative_to(PACKAGE.parent)}: {', '.join(pml)}")
    assert not offenders, "import PML through rkd_pml._pml only:\n" + "\n".join(offenders)


def test_the_scan_sees_every_import_form(tmp_path):
    # the check above would catch each of these
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import pytorch_metric_learning\n"
        "def f():\n    from pytorch_metric_learning.losses import TripletMarginLoss\n"
        "import importlib\nimportlib.import_module('pytorch_metric_learning.miners')\n"
    )
    assert imported_modules(sample) >= {
        "pytorch_metric_learning",
        "pytorch_metric_learning.losses",
        "pytorch_metric_learning.miners",
    }


def test_boundary_imports_nothing_pml3_removed_at_module_level():
    # trainer_parts() imports PML 2's trainers on demand; nothing removed in PML 3 at import time
    tree = ast.parse(BOUNDARY.read_text())
    top = {n.module for n in tree.body if isinstance(n, ast.ImportFrom) and n.module}
    top |= {a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in top for removed in REMOVED_IN_PML3 if m.startswith(removed)}
    assert "pytorch_metric_learning.losses" in top  # the scan does read the boundary's imports


#: Runs in a fresh interpreter where the PML 3 removals cannot be imported.
WITHOUT_REMOVED_PARTS = textwrap.dedent(
    """
    import builtins
    removed = {removed!r}
    real_import = builtins.__import__

    def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
        # the package's own imports of what PML 3 removed fail, as they would there (PML 2's
        # internals may still use those modules among themselves)
        caller = (globals or {{}}).get("__name__", "")
        if caller.startswith("rkd_pml") and level == 0 and name.startswith(removed):
            raise ImportError(f"No module named {{name!r}}")
        return real_import(name, globals, locals, fromlist, level)

    builtins.__import__ = guarded_import
    import torch
    torch.set_num_threads(1)
    import rkd_pml
    from rkd_pml import RKDLoss
    from rkd_pml.cli import main

    s, t = torch.randn(12, 4, requires_grad=True), torch.randn(12, 6)
    RKDLoss()(s, ref_emb=t).backward()
    tiny = ["--image-size", "16", "--epochs", "1", "--iters", "2", "--batch-size", "20",
            "--m-per-class", "5", "--no-progress", "--eval-batch-size", "512"]
    assert main(["train-teacher", "--model", "resnet10t", "--embedding-dim", "8",
                 "--out", {teacher!r}, *tiny]) == 0
    assert main(["distill", "--teacher", {teacher!r}, "--student", "resnet10t",
                 "--embedding-dim", "4", "--out", {student!r}, *tiny]) == 0
    assert main(["evaluate", {student!r}, "--no-progress"]) == 0
    try:
        from rkd_pml.training import DistillationTrainer
    except ImportError as exc:
        print("TRAINER:", exc)
    """
)


def test_package_works_without_what_pml3_removed(tmp_path):
    code = WITHOUT_REMOVED_PARTS.format(
        removed=REMOVED_IN_PML3, teacher=str(tmp_path / "t"), student=str(tmp_path / "s")
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "s" / "results.json").is_file()
    message = [line for line in out.stdout.splitlines() if line.startswith("TRAINER:")]
    assert message, out.stdout[-2000:]
    assert "DistillationTrainer needs pytorch-metric-learning's trainers" in message[0]
    assert "<3" in message[0] and "rkd-pml distill" in message[0]


def test_trainer_is_imported_only_on_demand():
    code = "import rkd_pml, rkd_pml.training, sys; print('pytorch_metric_learning.trainers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_pml_version_is_read_from_the_distribution():
    from importlib import metadata

    from rkd_pml import _pml

    assert _pml.pml_version() == metadata.version("pytorch-metric-learning")
    major = int(_pml.pml_version().split(".")[0])
    if major >= 3:
        pytest.fail("the package is capped below PML 3; a PML 3 install needs the port in docs/PML3.md")
