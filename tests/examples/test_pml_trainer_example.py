"""examples/pml_trainer.py runs end to end, and PML's tester agrees with rkd_pml's evaluate."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pml_trainer.py"
LINE = re.compile(
    r"^(?P<model>teacher|student): tester precision_at_1 = (?P<tester>[0-9.]+), "
    r"evaluate recall@1 = (?P<evaluate>[0-9.]+)",
    re.MULTILINE,
)

# PML 3 removed the trainers and testers the example is about
pytest.importorskip("pytorch_metric_learning.trainers")


@pytest.mark.timeout(600)
def test_pml_trainer_example_quick(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), "--quick", "--log-dir", str(tmp_path)],
        cwd=EXAMPLE.parents[1],
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert proc.returncode == 0, f"example failed:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    figures = {m["model"]: (float(m["tester"]), float(m["evaluate"])) for m in LINE.finditer(proc.stdout)}
    assert set(figures) == {"teacher", "student"}, proc.stdout
    for model, (tester, evaluate) in figures.items():
        assert 0.0 <= tester <= 1.0, (model, tester)
        # the student is not L2-normalised: equal only because the tester does not normalise
        assert tester == pytest.approx(evaluate, abs=1e-6), (model, proc.stdout)
