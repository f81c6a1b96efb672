"""The demo's comparison over seeds: the summary arithmetic against values worked out by hand,
and a tiny demo whose table is the mean of what each of its runs recorded."""

from __future__ import annotations

import json
import math

import pytest

from rkd_pml.training.demo import compare, demo, mean_std


def test_mean_and_sample_std_by_hand():
    # 0.70, 0.74, 0.78: mean 0.74; deviations -0.04, 0, 0.04; sample variance 0.0032 / 2 = 0.0016
    mean, std = mean_std([0.70, 0.74, 0.78])
    assert mean == pytest.approx(0.74) and std == pytest.approx(0.04)
    mean, std = mean_std([0.5])
    assert mean == 0.5 and math.isnan(std)


@pytest.mark.parametrize(
    "baseline, rkd, gaps, verdict",
    [
        # gaps 0.02, 0.10, 0.01: mean 0.0433, std 0.0493, standard error 0.0285; twice that, 0.0570, exceeds the mean
        ([0.70, 0.60, 0.65], [0.72, 0.70, 0.66], [0.02, 0.10, 0.01], "within what the seeds vary by"),
        # gaps 0.03, 0.04, 0.05: mean 0.04, std 0.01, standard error 0.00577, twice that 0.0115 < 0.04
        ([0.70, 0.60, 0.65], [0.73, 0.64, 0.70], [0.03, 0.04, 0.05], "RKD-DA ahead of the baseline for each of the 3"),
        # gaps -0.02, -0.03: mean -0.025, std 0.00707, standard error 0.005
        ([0.70, 0.60], [0.68, 0.57], [-0.02, -0.03], "the baseline ahead of RKD-DA for each of the 2 seeds"),
        # the demo's seeds 0, 1, 2 on this machine: all negative, but mean -0.0110 within twice the standard error 0.0085
        ([0.728, 0.728, 0.693], [0.724, 0.700, 0.692], [-0.004, -0.028, -0.001],
         "within what the seeds vary by (the mean is within twice its standard error)"),
        ([0.70, 0.60, 0.65], [0.72, 0.58, 0.65], [0.02, -0.02, 0.0], "within what the seeds vary by (the sign changes"),
        ([0.70], [0.80], [0.10], "one seed cannot tell"),
    ],
)
def test_compare_says_only_what_the_seeds_show(baseline, rkd, gaps, verdict):
    result = compare(baseline, rkd)
    assert result["per_seed"] == pytest.approx(gaps)
    mean = sum(gaps) / len(gaps)
    assert result["mean"] == pytest.approx(mean)
    if len(gaps) > 1:
        std = math.sqrt(sum((g - mean) ** 2 for g in gaps) / (len(gaps) - 1))
        assert result["standard_error"] == pytest.approx(std / math.sqrt(len(gaps)))
    assert result["verdict"].startswith(verdict)


def test_tiny_demo_over_two_seeds(tmp_path, capsys):
    out = tmp_path / "demo"
    results = demo(out=str(out), seed=5, progress=False, device="cpu", seeds=2, epochs=1, iterations_per_epoch=2,
                   batch_size=20, image_size=16)
    names = {"teacher", "baseline", "rkd", "baseline-seed6", "rkd-seed6"}
    assert names <= {p.name for p in out.iterdir()}
    recorded = {name: json.loads((out / name / "results.json").read_text()) for name in names}
    seeds = {n: json.loads((out / n / "config.json").read_text())["seed"] for n in names}
    assert seeds == {"teacher": 5, "baseline": 5, "rkd": 5, "baseline-seed6": 6, "rkd-seed6": 6}
    rows = {row["run"]: row for row in results["rows"]}
    for kind in ("baseline", "rkd"):
        r1 = [recorded[n]["best"]["test"]["recall@1"] for n in (kind, f"{kind}-seed6")]
        assert rows[kind]["test"]["recall@1"] == pytest.approx((r1[0] + r1[1]) / 2)
        assert rows[kind]["test_std"]["recall@1"] == pytest.approx(abs(r1[0] - r1[1]) / math.sqrt(2))
    gaps = [recorded[f"rkd{s}"]["best"]["test"]["recall@1"] - recorded[f"baseline{s}"]["best"]["test"]["recall@1"]
            for s in ("", "-seed6")]
    assert results["rkd_minus_baseline_recall@1"]["per_seed"] == pytest.approx(gaps)
    printed = capsys.readouterr().out
    assert "mean ±std over 2 seed(s) 5, 6" in printed and "RKD-DA minus baseline, Recall@1 per seed" in printed
    with pytest.raises(ValueError, match="seeds must be an integer >= 1"):
        demo(out=str(tmp_path / "other"), seeds=0)
