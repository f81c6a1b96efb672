"""The paper's claims, checked on a study's records, and the combinations of RKD-DA with a second loss.

A claim is checked size by size on the paired runs (same seed): it *held* when the mean margin
favours it at every measured size; sizes where the margin is within noise (|mean| at most the
standard deviation of the paired differences) are named in the verdict. Only the claims whose runs are recorded are listed.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from .recipe import Recipe
from .stats import Index, fmt_diff, label, mean_std, paired_diff, self_budget, self_vs_teacher


def _per_size(idx: Index, sizes: Sequence[int], protocol: str, a: tuple[str, bool], b: tuple[str, bool]
              ) -> dict[int, tuple[float, float, int, int] | None]:
    """The paired difference of row ``a`` minus row ``b`` (method, student L2) at each size."""
    return {d: paired_diff(idx.values(*a, d, protocol), idx.values(*b, d, protocol)) for d in sizes}


def _verdict(diffs: dict[int, Any]) -> tuple[str, str]:
    """(verdict, margins) of a claim from its paired differences by size."""
    known = {d: x for d, x in diffs.items() if x is not None}
    if not known:
        return "not measured", ""
    held = [d for d, x in known.items() if x[0] > 0]
    margins = "; ".join(f"d={d}: {fmt_diff(x)}" for d, x in sorted(known.items()))
    if len(held) == len(known):
        verdict = "held" + (f" at all {len(known)} sizes" if len(known) > 1 else "")
    elif not held:
        verdict = "did not hold" + (f" at any of the {len(known)} sizes" if len(known) > 1 else "")
    else:
        verdict = f"did not hold at every size (held at {len(held)} of {len(known)})"
    noise = [d for d, x in sorted(known.items()) if x[3] > 1 and abs(x[0]) <= x[1]]
    if noise:
        verdict += f" (within noise at {', '.join(f'd={d}' for d in noise)})"
    if len(known) < len(diffs):
        verdict += f" [only {len(known)} of {len(diffs)} sizes measured]"
    return verdict, margins


def _sensitivity(idx: Index, protocol: str, lo: int, hi: int, rkd: tuple[str, bool], trip: tuple[str, bool]
                 ) -> tuple[str, str] | None:
    """(verdict, margins): does RKD lose less Recall@1 than ``trip`` from size ``hi`` to ``lo``?

    Each row's loss is taken over the seeds it has at both sizes; None when a row lacks either size.
    """
    drops = []
    for key in (rkd, trip):
        at_hi, at_lo = idx.values(*key, hi, protocol), idx.values(*key, lo, protocol)
        a = mean_std(v for seed, v in at_hi.items() if seed in at_lo)
        b = mean_std(v for seed, v in at_lo.items() if seed in at_hi)
        if a is None or b is None:
            return None
        drops.append((a[0] - b[0], a[0], b[0]))
    r, t = drops
    verdict = "held" if r[0] < t[0] else "did not hold"
    if r[0] < t[0] and t[0] > 0 and r[0] > 0.5 * t[0]:
        verdict = "held, but not by much"
    return verdict, (f"Recall@1 lost from d={hi} to d={lo}: RKD-DA {r[0]:+.1f} pts ({r[1]:.1f} -> {r[2]:.1f}), "
                     f"triplet {t[0]:+.1f} pts ({t[1]:.1f} -> {t[2]:.1f})")


def claims(idx: Index, sizes: Sequence[int], protocol: str, recipe: Recipe) -> list[tuple[str, str, str]]:
    """(claim, verdict, margins) for one protocol; only the claims whose runs are recorded."""
    out = []
    rkd, trip, trip_nol2 = ("rkd-da", False), ("triplet", True), ("triplet", False)
    has_rkd, has_trip = idx.has(*rkd), idx.has(*trip)

    if has_rkd and (has_trip or idx.has(*trip_nol2)):
        main_b = trip if has_trip else trip_nol2
        v, m = _verdict(_per_size(idx, sizes, protocol, rkd, main_b))
        extra = _verdict(_per_size(idx, sizes, protocol, rkd, trip_nol2)) if has_trip and idx.has(*trip_nol2) else None
        out.append((f"RKD (RKD-DA, no student L2, the paper's recipe) beats the triplet-trained student "
                    f"({'with' if main_b[1] else 'without'} L2) of the same size at every embedding size", v,
                    m + (f". Against the triplet student without L2: {extra[0]} ({extra[1]})"
                         if extra and extra[1] else "")))

        if len(sizes) >= 2:
            lo, hi = min(sizes), max(sizes)
            main = _sensitivity(idx, protocol, lo, hi, rkd, main_b)
            if main is not None:
                other = _sensitivity(idx, protocol, lo, hi, rkd, trip_nol2) if main_b == trip else None
                out.append(("RKD is much less sensitive to small embedding sizes than the triplet student", main[0],
                            main[1] + (f". Against the triplet student without L2: {other[0]} ({other[1]})"
                                       if other else "")))

    if has_rkd and idx.has("rkd-da", True):
        v, m = _verdict(_per_size(idx, sizes, protocol, rkd, ("rkd-da", True)))
        others = []
        for name in ("rkd-d", "rkd-a"):
            known = [x for x in _per_size(idx, sizes, protocol, (name, False), (name, True)).values() if x is not None]
            if known:
                others.append(f"{label(name)}: no-L2 better at {sum(x[0] > 0 for x in known)} of {len(known)} sizes")
        out.append(("RKD without student L2 beats RKD with it (RKD-DA)", v,
                    m + (". " + "; ".join(others) if others else "")))

    verdicts, margins = [], []
    for method in idx.self_methods():
        pair = self_vs_teacher(idx, protocol, method)
        if pair is None:
            continue
        s, t, d = pair
        sm, tm = mean_std(s.values()), mean_std(t.values())
        budget = self_budget(method, recipe)
        verdicts.append(f"{'held' if d[0] > 0 else 'did not hold'} {budget}")
        margins.append(f"{budget}: self-distilled {sm[0]:.1f} vs teacher {tm[0]:.1f}, {fmt_diff(d)}")
    if margins:
        ratio = recipe.self_scale
        margins.append("the paper trains the self-distilled student for twice the teacher's budget"
                       + (" (as here)" if ratio is not None and math.isclose(ratio, 2.0) else ""))
        margin = "; ".join(margins)
        out.append(("The self-distilled student beats its teacher", "; ".join(verdicts), margin[:1].upper() + margin[1:]))

    teachers = idx.teacher_values(protocol)
    if has_rkd and teachers:
        diffs = {}
        for d in sizes:
            student = idx.values(*rkd, d, protocol)
            paired = teachers if len(teachers) > 1 else {seed: next(iter(teachers.values())) for seed in student}
            diffs[d] = paired_diff(student, paired) if student else None
        v, m = _verdict(diffs)
        out.append(("The RKD student (RKD-DA, no student L2) beats its own, larger teacher (the paper: ResNet18-128 "
                    "above its ResNet50-512 teacher on Cars196)", v, m))

    if has_rkd and (idx.has("rkd-d", False) or idx.has("rkd-a", False)):
        vd = _per_size(idx, sizes, protocol, rkd, ("rkd-d", False))
        va = _per_size(idx, sizes, protocol, rkd, ("rkd-a", False))
        both = {d: (None if vd[d] is None or va[d] is None else min(vd[d], va[d], key=lambda x: x[0])) for d in sizes}
        v, _ = _verdict(both)
        m = "; ".join(f"d={d}: vs RKD-D {fmt_diff(vd[d])}, vs RKD-A {fmt_diff(va[d])}" for d in sizes
                      if vd[d] is not None or va[d] is not None)
        out.append(("RKD-DA beats RKD-D and RKD-A alone (no student L2)", v, m))

    for base in ("fitnet", "darkrank"):
        if not has_rkd:
            break
        parts, main_l2 = [], None
        for l2 in (True, False):
            known = {d: x for d, x in _per_size(idx, sizes, protocol, rkd, (base, l2)).items() if x is not None}
            if known:
                main_l2 = l2 if main_l2 is None else main_l2
                parts.append(f"vs {label(base)} {'with' if l2 else 'without'} L2: RKD-DA ahead at "
                             f"{sum(x[0] > 0 for x in known.values())} of {len(known)} sizes ("
                             + "; ".join(f"d={d}: {fmt_diff(x)}" for d, x in sorted(known.items())) + ")")
            if has_trip:
                tk = {d: x for d, x in _per_size(idx, sizes, protocol, (base, l2), trip).items() if x is not None}
                if tk:
                    parts.append(f"{label(base)} {'with' if l2 else 'without'} L2 vs triplet: "
                                 + "; ".join(f"d={d}: {fmt_diff(x)}" for d, x in sorted(tk.items())))
        if parts:
            v, _ = _verdict(_per_size(idx, sizes, protocol, rkd, (base, main_l2)))
            out.append((f"RKD-DA beats {label(base)} (the paper's {label(base)} row uses L2)", v, "; ".join(parts)))
    return out


def combinations(idx: Index, sizes: Sequence[int], protocol: str) -> list[str]:
    """RKD-DA with a second loss against its parts (no claim of the paper)."""
    lines = []
    for combo, part in (("rkd-da-triplet", "triplet"), ("rkd-da-fitnet", "fitnet")):
        for l2 in (False, True):
            if not idx.has(combo, l2):
                continue
            parts = []
            for other in (("rkd-da", l2), (part, l2), (part, not l2)):
                if idx.has(*other):
                    v, m = _verdict(_per_size(idx, sizes, protocol, (combo, l2), other))
                    parts.append(f"vs {label(other[0])} {'with' if other[1] else 'without'} L2: {v} ({m})")
            if parts:
                lines.append(f"**{label(combo)} ({'with' if l2 else 'without'} student L2)** " + "; ".join(parts))
    return lines
