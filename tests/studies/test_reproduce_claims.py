"""The reproduction report's claim verdicts on made-up records, against margins worked out by hand.

Each record needs only what the claims read: kind, method, student L2, size, seed and the test
Recall@1 of each protocol. Margins are paired by seed: mean and sample standard deviation of
the per-seed differences, "within noise" when |mean| <= std.
"""

from __future__ import annotations


import pytest

from studies.reproduction.claims import claims
from studies.reproduction.recipe import Recipe
from studies.reproduction.stats import Index


def _rec(method: str, l2: bool | None, dim: int, seed: int, r1: float) -> dict:
    result = {"test": {"recall@1": r1 / 100}}
    kind = "teacher" if method == "teacher" else "student"
    return {"kind": kind, "method": method, "l2": l2, "dim": dim, "seed": seed,
            "selected": result, "best_on_test": result}


@pytest.fixture()
def found() -> dict[str, tuple[str, str]]:
    records = [_rec("teacher", True, 512, s, v) for s, v in enumerate((70.0, 72.0, 74.0))]
    rkd = {16: (75.0, 71.0, 80.0), 64: (80.0, 81.0, 82.0)}
    trip = {16: (60.0, 62.0, 61.0), 64: (74.0, 75.0, 76.0)}
    rkd_l2 = {16: (76.0, 70.0, 79.0), 64: (78.0, 80.0, 85.0)}
    for d in (16, 64):
        for s in range(3):
            records += [_rec("rkd-da", False, d, s, rkd[d][s]), _rec("triplet", True, d, s, trip[d][s]),
                        _rec("rkd-da", True, d, s, rkd_l2[d][s])]
    out = claims(Index(records), [16, 64], "selected", Recipe())
    return {claim: (verdict, margins) for claim, verdict, margins in out}


def _claim(found: dict, start: str) -> tuple[str, str]:
    return next(v for c, v in found.items() if c.startswith(start))


def test_rkd_against_triplet_paired_by_seed(found):
    verdict, margins = _claim(found, "RKD (RKD-DA, no student L2, the paper's recipe) beats the triplet")
    # d=16: 15, 9, 19 -> mean 14.33, sd 5.03; d=64: 6, 6, 6 -> mean 6, sd 0
    assert verdict == "held at all 2 sizes"
    assert margins == "d=16: +14.3 pts, 3/3 seeds; d=64: +6.0 pts, 3/3 seeds"


def test_l2_claim_within_noise(found):
    verdict, margins = _claim(found, "RKD without student L2 beats RKD with it")
    # d=16: -1, 1, 1 -> mean 0.33, sd 1.15 (noise); d=64: 2, 1, -3 -> mean 0, sd 2.65 (noise, not > 0)
    assert verdict == "did not hold at every size (held at 1 of 2) (within noise at d=16, d=64)"
    assert margins == "d=16: +0.3 pts, 2/3 seeds (within noise); d=64: +0.0 pts, 2/3 seeds (within noise)"


def test_sensitivity_to_small_sizes(found):
    verdict, margins = _claim(found, "RKD is much less sensitive")
    # RKD 81 -> 75.33 (loses 5.67), triplet 75 -> 61 (loses 14)
    assert verdict == "held"
    assert margins == ("Recall@1 lost from d=64 to d=16: RKD-DA +5.7 pts (81.0 -> 75.3), "
                       "triplet +14.0 pts (75.0 -> 61.0)")


def test_student_against_its_own_teacher(found):
    verdict, margins = _claim(found, "The RKD student (RKD-DA, no student L2) beats its own, larger teacher")
    # d=16: 5, -1, 6 -> mean 3.33, sd 3.79 (noise); d=64: 10, 9, 8 -> mean 9, sd 1
    assert verdict == "held at all 2 sizes (within noise at d=16)"
    assert margins == "d=16: +3.3 pts, 2/3 seeds (within noise); d=64: +9.0 pts, 3/3 seeds"


def test_claims_without_their_runs_are_not_listed(found):
    assert not any(c.startswith("RKD-DA beats RKD-D") or "FitNet" in c or "self-distilled" in c for c in found)


def test_sensitivity_compares_the_seeds_measured_at_both_sizes():
    records = [_rec("rkd-da", False, 64, s, v) for s, v in enumerate((80.0, 90.0, 100.0))]
    records += [_rec("triplet", True, 64, s, v) for s, v in enumerate((70.0, 60.0, 50.0))]
    records += [_rec("rkd-da", False, 16, 0, 78.0), _rec("triplet", True, 16, 0, 60.0)]
    found = {c: (v, m) for c, v, m in claims(Index(records), [16, 64], "selected", Recipe())}
    verdict, margins = _claim(found, "RKD is much less sensitive")
    # seed 0 only: RKD 80 -> 78, triplet 70 -> 60 (all seeds at d=64 would give RKD 90 -> 78, triplet 60 -> 60)
    assert margins == ("Recall@1 lost from d=64 to d=16: RKD-DA +2.0 pts (80.0 -> 78.0), "
                       "triplet +10.0 pts (70.0 -> 60.0)")
    assert verdict == "held"


def test_rkd_against_fitnet_gives_paired_margins():
    records = []
    for s, (r, f, t) in enumerate(((80.0, 70.0, 72.0), (81.0, 74.0, 73.0), (79.0, 80.0, 74.0))):
        records += [_rec("rkd-da", False, 64, s, r), _rec("fitnet", True, 64, s, f), _rec("triplet", True, 64, s, t)]
    found = {c: (v, m) for c, v, m in claims(Index(records), [64], "selected", Recipe())}
    verdict, margins = _claim(found, "RKD-DA beats FitNet")
    # RKD - FitNet: 10, 7, -1 -> mean 5.33, sd 5.69 (noise); FitNet - triplet: -2, 1, 6 -> mean 1.67, sd 4.04
    assert verdict == "held (within noise at d=64)"
    assert margins == ("vs FitNet with L2: RKD-DA ahead at 1 of 1 sizes (d=64: +5.3 pts, 2/3 seeds (within noise)); "
                       "FitNet with L2 vs triplet: d=64: +1.7 pts, 2/3 seeds (within noise)")


def test_sensitivity_names_the_triplet_student_without_l2_too():
    records = []
    for s, (r64, r16, t64, t16, n64, n16) in enumerate(((80.0, 78.0, 74.0, 68.0, 73.0, 72.0),
                                                      (82.0, 79.0, 75.0, 70.0, 71.0, 70.0))):
        records += [_rec("rkd-da", False, 64, s, r64), _rec("rkd-da", False, 16, s, r16),
                    _rec("triplet", True, 64, s, t64), _rec("triplet", True, 16, s, t16),
                    _rec("triplet", False, 64, s, n64), _rec("triplet", False, 16, s, n16)]
    found = {c: (v, m) for c, v, m in claims(Index(records), [16, 64], "selected", Recipe())}
    verdict, margins = _claim(found, "RKD is much less sensitive")
    # RKD 81 -> 78.5 (loses 2.5); triplet with L2 74.5 -> 69 (5.5); without L2 72 -> 71 (1.0)
    assert verdict == "held"
    assert margins == ("Recall@1 lost from d=64 to d=16: RKD-DA +2.5 pts (81.0 -> 78.5), "
                       "triplet +5.5 pts (74.5 -> 69.0). Against the triplet student without L2: did not hold "
                       "(Recall@1 lost from d=64 to d=16: RKD-DA +2.5 pts (81.0 -> 78.5), triplet +1.0 pts (72.0 -> 71.0))")
