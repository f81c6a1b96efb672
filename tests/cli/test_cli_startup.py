"""The command line starts fast (``--help`` and usage errors load neither torch nor timm), says
what a training job is about to do, and SIGTERM stops it in every phase."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from rkd_pml.cli import main

HEAVY = ("torch", "timm", "pytorch_metric_learning", "torchvision")
PROBE = """
import runpy, sys
sys.argv = ["rkd_pml", *sys.argv[1:]]
try:
    runpy.run_module("rkd_pml", run_name="__main__", alter_sys=True)
except SystemExit:
    pass
print("LOADED", sorted({m.split(".")[0] for m in sys.modules} & set(%r)))
""" % (HEAVY,)


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["train-teacher", "--seed", "-1"],
                                  ["distill", "--batch-size", "10000000"], ["nope"]])
def test_help_and_usage_errors_do_not_import_torch(argv):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, env=env, timeout=120)
    assert "LOADED []" in out.stdout, out.stdout + out.stderr


def test_a_json_config_error_does_not_import_torch(tmp_path):
    file = tmp_path / "c.json"
    file.write_text('{"batch_size": 100000000000000000000000}')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", PROBE, "train-teacher", "--config", str(file)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert "--batch-size must be an integer <= 1048576" in out.stderr
    assert "LOADED []" in out.stdout, out.stdout + out.stderr


def test_the_budget_and_device_are_said_before_training(tmp_path, capsys):
    argv = ["train-teacher", "--model", "resnet10t", "--embedding-dim", "4", "--image-size", "16", "--batch-size", "20",
            "--m-per-class", "5", "--lr-milestones", "1", "--device", "cpu", "--no-progress", "--out", str(tmp_path / "t")]
    assert main([*argv, "--epochs", "1", "--iters", "2"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == "rkd-pml: train-teacher: resnet10t (4-d), 1 epochs x 2 iterations = 2 steps of 20 images, on cpu"
    # no budget flags: the paper's 40 x 100 steps; stopped here by a data error right after the line
    with pytest.raises(SystemExit):
        main([*argv[:-1], str(tmp_path / "u"), "--m-per-class", "2"])
    out = capsys.readouterr().out
    assert "40 epochs x 100 iterations = 4000 steps of 20 images, on cpu; warning: this is the paper's full " \
           "schedule, hours on a CPU" in out


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_the_setup_phase_at_once(tmp_path, monkeypatch, capsys, sig, code):
    """SIGTERM used to wait for the training loop (and a setup that never ended never stopped)."""
    import rkd_pml.training.jobs as jobs

    def endless_setup(*args, **kwargs):
        for _ in range(100):  # 10 s: a slow data set, or a loop that does not end
            time.sleep(0.1)
        raise AssertionError("the signal did not stop the setup")

    monkeypatch.setattr(jobs, "load_splits", endless_setup)
    timer = threading.Timer(1.0, os.kill, (os.getpid(), sig))
    started = time.monotonic()
    timer.start()
    try:
        assert main(["train-teacher", "--model", "resnet10t", "--image-size", "16", "--epochs", "1", "--iters", "1",
                     "--device", "cpu", "--no-progress", "--out", str(tmp_path / "t")]) == code
    finally:
        timer.cancel()
    assert time.monotonic() - started < 8
    assert not (tmp_path / "t").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or sig == signal.SIGINT
    from rkd_pml.training.signals import stop_requested

    assert not stop_requested()
