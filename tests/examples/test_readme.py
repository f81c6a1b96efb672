"""What the documentation says about running things: the DDP loop of docs/multi-gpu.md runs as
written on two CPU processes (gloo) under torchrun; the README's set-up names the variable that
locates the Omniglot archive."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
MULTI_GPU = README.parent / "docs" / "multi-gpu.md"


def _snippet() -> str:
    text = MULTI_GPU.read_text()
    match = re.search(r"In your own loop[^\n]*\n(?:[^\n]+\n)*?\n(?:<!--[^\n]*-->\n)?```python\n(.*?)```", text, re.S)
    assert match, "the DDP loop of docs/multi-gpu.md is not where this test looks for it"
    return match.group(1)


@pytest.mark.timeout(300)
def test_readme_ddp_loop_runs_on_cpu(tmp_path):
    script = tmp_path / "loop.py"
    # what the loop did is printed by the lines appended here: rank, world size and the loss
    script.write_text(_snippet().replace(
        "dist.destroy_process_group()",
        "print('rank', dist.get_rank(), 'of', dist.get_world_size(), 'loss', float(loss), flush=True)\n"
        "dist.destroy_process_group()",
    ))
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)],
        env=env, capture_output=True, text=True, timeout=280, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    losses = {int(r): float(v) for r, v in re.findall(r"rank (\d) of 2 loss ([0-9.e+-]+)", proc.stdout)}
    assert set(losses) == {0, 1}
    # the wrapped loss is world size x the global-batch loss, the same on every rank
    assert losses[0] == pytest.approx(losses[1], rel=1e-6) and losses[0] > 0


def test_readme_names_the_omniglot_variable_the_tests_read():
    conftest = (README.parent / "tests" / "conftest.py").read_text()
    variables = set(re.findall(r"os\.environ\.get\(\s*\"(RKD_PML_\w+)\"", conftest))
    assert variables, "tests/conftest.py reads no RKD_PML_ variable any more: update this test"
    setup = README.read_text().split("## RKD in a PML training step")[0]  # the set-up section, with the test command
    for name in variables:
        assert f"`{name}`" in setup, f"{name} locates test data but the README's set-up does not name it"
