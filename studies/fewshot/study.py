#!/usr/bin/env python
"""Few-shot study of the RKD paper: prototypical networks on Omniglot, self-distilled with RKD.

Data: ``images_background_small1.zip`` at 28 px, inverted. The first 68 characters train, the
other 68 (unseen) test; 20 training characters validate; the other 48 are used in 4 rotations,
each a class (the ProtoNet protocol). Runs per seed ``s``, all with the same episode size,
iterations and Adam schedule: ``teacher`` conv4-64 ProtoNet (seed s); ``scratch`` the same
again (seed 100+s); ``self`` conv4-64 (seed 200+s), prototypical loss + RKDLoss(0.5, 1.0) to
the frozen teacher of seed s; ``small-scratch`` conv4-32 ProtoNet and ``small`` conv4-32
distilled like ``self`` (both seed 300+s). The checkpoint with the best validation accuracy
(mean of 5/20-way x 1/5-shot) is tested on 1,000 episodes per setting, the same for all.

``--out`` gets ``study.json`` (recipe, sessions), ``records.jsonl`` (a line per finished run;
recorded runs are skipped on a restart) and ``runs/<key>.pt`` (selected weights). Tables go
into ``docs/FEWSHOT.md`` between its markers, curves into ``docs/fewshot_curves.png``::

    nohup python benchmarks/fewshot.py > fewshot.log 2>&1 &
    python benchmarks/fewshot.py --quick --out /tmp/fs   # a smoke test of a few seconds

``--device cuda`` trains on a GPU; the device is not part of the recipe (a study may continue on
another one) and each record names the device it ran on.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
from rkd_pml.data import load_dataset  # noqa: E402
from rkd_pml.data.episodes import EpisodicBatchSampler  # noqa: E402
from rkd_pml.evaluation.few_shot import few_shot_accuracy_from_embeddings  # noqa: E402
from rkd_pml.losses import RKDLoss  # noqa: E402
from rkd_pml.losses.prototypical import PrototypicalLoss  # noqa: E402

if str(REPO / "benchmarks") not in sys.path:
    sys.path.insert(0, str(REPO / "benchmarks"))
from reproduction.device import add_device_option, check_device  # noqa: E402

OMNIGLOT_ZIP = REPO.parent / "shared" / "data" / "omniglot" / "images_background_small1.zip"
#: key -> (label, channels field of the recipe, distilled, seed offset)
MODELS = {
    "teacher": ("Teacher: conv4, ProtoNet", "channels", False, 0),
    "scratch": ("Same architecture, another seed", "channels", False, 100),
    "self": ("Self-distilled: same architecture, +RKD-DA", "channels", True, 200),
    "small-scratch": ("Small conv4, ProtoNet only", "small_channels", False, 300),
    "small": ("Small conv4 distilled, +RKD-DA", "small_channels", True, 300),
}


@dataclass
class Recipe:
    """Everything that decides what a run computes; a study directory holds one recipe."""

    image_size: int = 28
    val_classes: int = 20
    rotations: bool = True
    channels: int = 64
    small_channels: int = 32
    ways: int = 20
    shots: int = 5
    queries: int = 5
    iterations: int = 300
    eval_every: int = 20
    lr: float = 1e-3
    rkd_distance: float = 0.5
    rkd_angle: float = 1.0
    eval_ways: tuple = (5, 20)
    eval_shots: tuple = (1, 5)
    eval_queries: int = 15
    val_episodes: int = 200
    test_episodes: int = 1000
    classes_limit: int = 0  # 0: all; >0: the first classes of each split (quick mode)


QUICK = dict(iterations=4, eval_every=2, ways=3, shots=1, queries=2, channels=8, small_channels=4,
             val_classes=3, eval_ways=(2, 3), val_episodes=10, test_episodes=20, classes_limit=8)


class Conv4(nn.Module):
    """ProtoNet embedding: 4 x [conv3x3(c), BN, ReLU, maxpool 2]; (B, 1, 28, 28) -> (B, c)."""

    def __init__(self, channels: int = 64):
        super().__init__()
        layers = []
        for i in range(4):
            layers += [nn.Conv2d(1 if i == 0 else channels, channels, 3, padding=1),
                       nn.BatchNorm2d(channels), nn.ReLU(), nn.MaxPool2d(2)]
        self.net = nn.Sequential(*layers, nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def load_data(recipe: Recipe, root: Path) -> dict[str, tuple[torch.Tensor, np.ndarray]]:
    """``{"train"|"val"|"test": (images (N, 1, S, S), labels (N,))}`` held in memory."""
    train, test = load_dataset("omniglot", root=root, image_size=recipe.image_size, train_transform="none", in_chans=1)
    if (train.num_classes, test.num_classes) != (68, 68) and not recipe.classes_limit:
        raise SystemExit(f"expected 68 + 68 characters, found {train.num_classes} + {test.num_classes}")
    if recipe.classes_limit:
        train, test = (d.subset(range(recipe.classes_limit)) for d in (train, test))
    val = set(np.random.RandomState(0).permutation(train.num_classes)[: recipe.val_classes].tolist())
    splits = {"train": train.subset([c for c in range(train.num_classes) if c not in val]),
              "val": train.subset(sorted(val)), "test": test}
    data = {}  # images inverted: bright strokes
    for name, ds in splits.items():
        x, y = 1.0 - torch.stack([ds[i][0] for i in range(len(ds))]), ds.labels.copy()
        if name == "train" and recipe.rotations:
            x = torch.cat([torch.rot90(x, k, dims=(2, 3)) for k in range(4)])
            y = np.concatenate([y + k * ds.num_classes for k in range(4)])
        data[name] = (x, y)
    return data


def evaluate(model, split, recipe: Recipe, episodes: int, seed: int, keep: bool = False) -> dict:
    """``{"<W>w<S>s": {"accuracy", "ci95"[, "correct"]}}`` for every evaluation setting."""
    model.eval()
    with torch.inference_mode():
        emb, labels, out = torch.cat([model(chunk) for chunk in split[0].split(512)]), split[1], {}
    model.train()
    for ways in recipe.eval_ways:
        for shots in recipe.eval_shots:
            r = few_shot_accuracy_from_embeddings(emb, labels, ways, shots, recipe.eval_queries, episodes,
                                                  seed, return_episodes=keep)
            cell = {"accuracy": round(r["accuracy"], 6), "ci95": round(r["ci95"], 6)}
            if keep:  # per-episode correct counts, for paired comparisons
                cell["correct"] = (r["episode_accuracies"] * ways * recipe.eval_queries).round().int().tolist()
            out[f"{ways}w{shots}s"] = cell
    return out


def train_run(key: str, recipe: Recipe, data: dict, out: Path, log, device: str = "cpu") -> dict:
    """Train run ``key`` (``<model>-s<seed>``) on ``device`` (where ``data``'s images are); save
    its selected weights; return its record."""
    kind, run_seed = key.rsplit("-s", 1)
    label, width, distilled, offset = MODELS[kind]
    started, seed, teacher_key = time.time(), int(run_seed) + offset, f"teacher-s{run_seed}"
    torch.manual_seed(seed)
    model = Conv4(getattr(recipe, width)).to(device, memory_format=torch.channels_last)  # ~1.5x faster on CPU
    teacher, proto = None, PrototypicalLoss(shots=recipe.shots)
    if distilled:
        path = out / "runs" / f"{teacher_key}.pt"
        if not path.is_file():
            raise SystemExit(f"{path} is missing: remove the teacher's record to train it again")
        teacher = Conv4(recipe.channels)
        teacher.load_state_dict(torch.load(path, map_location="cpu"))
        teacher = teacher.to(device, memory_format=torch.channels_last).eval().requires_grad_(False)
    rkd = RKDLoss(distance_weight=recipe.rkd_distance, angle_weight=recipe.rkd_angle, backend="eager")
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [recipe.iterations // 2, recipe.iterations * 3 // 4], 0.5)
    x, y = data["train"]
    sampler = EpisodicBatchSampler(y, recipe.ways, recipe.shots, recipe.queries, recipe.eval_every, seed)
    curve, best, best_state, sums = [], -1.0, None, [0.0, 0.0]
    for it in range(0, recipe.iterations, recipe.eval_every):
        for batch in sampler:
            images, labels = x[batch], torch.from_numpy(y[batch]).to(device)
            emb = model(images)
            loss = proto(emb, labels)
            sums[0] += loss.item()
            if teacher is not None:
                with torch.no_grad():
                    ref = teacher(images)
                rkd_loss = rkd(emb, labels, None, ref_emb=ref)
                sums[1] += rkd_loss.item()
                loss = loss + rkd_loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        done = it + recipe.eval_every
        val = evaluate(model, data["val"], recipe, recipe.val_episodes, seed=1)
        score = float(np.mean([c["accuracy"] for c in val.values()]))
        curve.append({"iteration": done, "val": round(score, 6), "proto_loss": round(sums[0] / recipe.eval_every, 5),
                      "rkd_loss": round(sums[1] / recipe.eval_every, 5) if distilled else None,
                      "val_settings": {k: c["accuracy"] for k, c in val.items()}})
        sums = [0.0, 0.0]
        if score > best:
            best, best_state, best_it = score, copy.deepcopy(model.state_dict()), done
        log(f"{key} it {done}/{recipe.iterations} proto {curve[-1]['proto_loss']:.4f} val {score:.4f}")
    last = evaluate(model, data["test"], recipe, recipe.test_episodes, seed=0)
    model.load_state_dict(best_state)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    torch.save(best_state, out / "runs" / f"{key}.pt")
    return {"key": key, "model": kind, "label": label, "seed": int(run_seed), "init_seed": seed,
            "channels": getattr(recipe, width), "teacher": teacher_key if distilled else None,
            "iterations": recipe.iterations, "selected_iteration": best_it, "selected_val": round(best, 6),
            "test": evaluate(model, data["test"], recipe, recipe.test_episodes, seed=0, keep=True),
            "test_last": {k: c["accuracy"] for k, c in last.items()}, "curve": curve,
            "wall_seconds": round(time.time() - started, 1), "device": device}


def read_records(out: Path) -> list[dict]:
    path = out / "records.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def open_study(out: Path, recipe: Recipe) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "study.json"
    wanted = json.loads(json.dumps(asdict(recipe)))
    study = json.loads(path.read_text()) if path.is_file() else {"recipe": wanted, "sessions": []}
    if wanted != study["recipe"]:
        raise SystemExit(f"{out} holds a study with another recipe: {study['recipe']}; use another --out")
    return study


def save_study(out: Path, study: dict) -> None:
    (out / "study.json.tmp").write_text(json.dumps(study, indent=1) + "\n")
    os.replace(out / "study.json.tmp", out / "study.json")


def fmt(seconds: float) -> str:
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m{int(seconds % 60):02d}s"


BEGIN, END = "<!-- begin: generated by benchmarks/fewshot.py -->", "<!-- end: generated -->"
COMPARISONS = (("self", "teacher", "self-distilled − teacher"), ("scratch", "teacher", "another seed − teacher"),
               ("small", "small-scratch", "small distilled − small alone"),
               ("small", "teacher", "small distilled − teacher"))


def paired(a: dict, b: dict, setting: str, queries: int) -> tuple[float, float]:
    """(mean, 95 % half-width) of the per-episode accuracy difference a - b (the same episodes)."""
    d = np.subtract(a["test"][setting]["correct"], b["test"][setting]["correct"]) / (int(setting[:-3]) * queries)
    return float(d.mean()), float(1.96 * d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else math.nan


def report_tables(records: list[dict], study: dict, png_name: str) -> list[str]:
    """The generated part of the report: accuracy table, paired margins, selection, wall time."""
    rc, by, pct = study["recipe"], {r["key"]: r for r in records}, lambda v: f"{100 * v:.2f}"
    settings = [f"{w}w{s}s" for w in rc["eval_ways"] for s in rc["eval_shots"]]
    head, bar = " | ".join(f"{s[:-3]}-way {s[-2]}-shot" for s in settings), "---|" * len(settings)
    lines = ["### Test accuracy (%) on the test characters (unseen in training)", "",
             f"Mean over the seeds ± mean 95 % interval over {rc['test_episodes']} episodes (1.96 std / "
             f"sqrt(episodes)); sd: spread over the seeds. {rc['eval_queries']} queries per class; every model "
             "is tested on the same episodes.", "", f"| Model | seeds | {head} | selected iteration |",
             f"|---|---|{bar}---|"]
    for kind, (label, width, _, _) in MODELS.items():
        runs = sorted((r for r in records if r["model"] == kind), key=lambda r: r["seed"])
        cells = []
        for s in settings:
            acc, ci = [r["test"][s]["accuracy"] for r in runs], [r["test"][s]["ci95"] for r in runs]
            sd = f" (sd {pct(np.std(acc, ddof=1))})" if len(acc) > 1 else ""
            cells.append(f"{pct(np.mean(acc))} ± {pct(np.mean(ci))}{sd}" if runs else "–")
        its = ", ".join(str(r["selected_iteration"]) for r in runs) or "–"
        lines.append(f"| {label} ({rc[width]} ch) | {len(runs)} | " + " | ".join(cells) + f" | {its} |")
    lines += ["", "### Paired margins (percentage points)", "",
              "Per seed: the difference on the shared episodes ± its paired 95 % interval (**bold**: it excludes "
              "0). Row *all*: the mean over the seeds, then seeds ahead / seeds significantly ahead / seeds "
              "significantly behind.", "", f"| Comparison | seed | {head} |", f"|---|---|{bar}"]
    for a, b, text in COMPARISONS:
        seeds = [r["seed"] for r in records if r["model"] == a and f"{b}-s{r['seed']}" in by]
        grid = [[paired(by[f"{a}-s{s}"], by[f"{b}-s{s}"], st, rc["eval_queries"]) for st in settings] for s in seeds]
        for seed, row in zip(seeds, grid):
            cells = [f"{100 * m:+.2f} ± {100 * c:.2f}" for m, c in row]
            cells = [f"**{c}**" if abs(m) > ci else c for c, (m, ci) in zip(cells, row)]
            lines.append(f"| {text} | {seed} | " + " | ".join(cells) + " |")
        if grid:
            cols = [[row[i] for row in grid] for i in range(len(settings))]
            lines.append(f"| {text} | all | " + " | ".join(
                f"{100 * np.mean([m for m, _ in v]):+.2f}; {sum(m > 0 for m, _ in v)}/{sum(m > c for m, c in v)}/"
                f"{sum(-m > c for m, c in v)} of {len(v)}" for v in cols) + " |")
    lines += ["", "### Model selection (validation) and the last checkpoint", "",
              "Validation accuracy (%) at the selected checkpoint, at 3/4 of the run and at its end; then the "
              "test accuracy (%) of the last checkpoint.", "",
              f"| run | selected it. | val selected | val at 3/4 | val last | {head} (last) |",
              f"|---|---|---|---|---|{bar}"]
    for r in records:
        quarter = next(c for c in r["curve"] if c["iteration"] >= r["iterations"] * 3 // 4)
        lines.append(f"| {r['key']} | {r['selected_iteration']} | {pct(r['selected_val'])} | {pct(quarter['val'])} | "
                     f"{pct(r['curve'][-1]['val'])} | " + " | ".join(pct(r["test_last"][s]) for s in settings) + " |")
    wall = sum(s.get("wall_seconds") or 0 for s in study["sessions"])
    devices = ", ".join(sorted({r.get("device", "cpu") for r in records})) or "cpu"  # none recorded: the CPU
    return lines + ["", f"![learning curves]({png_name})", "",
                    f"Wall time: {fmt(wall)} in {len(study['sessions'])} session(s) of one process with "
                    f"{study['sessions'][0].get('torch_threads', '?')} torch thread(s) on {devices}; "
                    "per run (s): "
                    + ", ".join(f"{r['key']} {r['wall_seconds']:.0f}" for r in records) + "."]


def render_report(records: list[dict], study: dict, md: Path, png: Path) -> None:
    """Write the tables into ``md`` between the markers (the text around them stays) and the curves to ``png``."""
    import matplotlib.pyplot as plt  # the Agg backend where there is no display

    block = "\n".join([BEGIN, *report_tables(records, study, png.name), END])
    md.parent.mkdir(parents=True, exist_ok=True)
    text = md.read_text() if md.is_file() else f"# Few-shot study (generated)\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{md} has no {BEGIN} ... {END} block to fill")
    md.write_text(text[: text.index(BEGIN)] + block + text[text.index(END) + len(END):])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    colours = dict(zip(MODELS, ("black", "grey", "tab:red", "tab:cyan", "tab:blue")))
    for r in records:
        its, style = [c["iteration"] for c in r["curve"]], dict(color=colours[r["model"]], ls=("-", ":", "--")[r["seed"] % 3])
        axes[0].plot(its, [100 * c["val"] for c in r["curve"]], label=r["key"], lw=1.1, **style)
        axes[0].plot([r["selected_iteration"]], [100 * r["selected_val"]], "o", ms=4, color=style["color"])
        axes[1].plot(its, [c["proto_loss"] for c in r["curve"]], lw=1.1, **style)
    axes[0].set(xlabel="iteration", ylabel="validation accuracy (%), mean of the 4 settings",
                title="Validation characters (dots: selected checkpoints)")
    axes[1].set(xlabel="iteration", ylabel="prototypical loss (training episodes)", yscale="log", title="Training loss")
    late = [100 * c["val"] for r in records for c in r["curve"] if c["iteration"] >= r["iterations"] // 4]
    axes[0].set_ylim(min(late, default=0) - 2, max(late, default=100) + 1)  # the late part, where selection is
    axes[0].legend(fontsize=6, ncol=3)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, help="study directory (default benchmarks/results/fewshot)")
    p.add_argument("--root", type=Path, default=OMNIGLOT_ZIP, help="the Omniglot .zip")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated (default 0,1,2)")
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {','.join(MODELS)}")
    p.add_argument("--quick", action="store_true", help="a tiny study of a few seconds (smoke test)")
    p.add_argument("--report-md", type=Path, help="default docs/FEWSHOT.md (--quick: in --out); "
                   "the figure fewshot_curves.png goes next to it")
    p.add_argument("--report-only", action="store_true")
    add_device_option(p)
    for f in (f for f in fields(Recipe) if f.type in ("int", "float")):
        p.add_argument("--" + f.name.replace("_", "-"), type={"int": int, "float": float}[f.type])
    args = p.parse_args(argv)
    if not args.report_only:  # before any folder is created
        args.device = check_device(args.device)
    torch.set_num_threads(1)
    recipe = Recipe(**(QUICK if args.quick else {}))
    for f in fields(Recipe):
        if getattr(args, f.name, None) is not None:
            setattr(recipe, f.name, getattr(args, f.name))
    if recipe.iterations % recipe.eval_every:
        raise SystemExit(f"--iterations ({recipe.iterations}) must be a multiple of --eval-every")
    out = args.out or (REPO / ("runs/fewshot-quick" if args.quick else "benchmarks/results/fewshot"))
    md = args.report_md or (out / "FEWSHOT.md" if args.quick else REPO / "docs" / "FEWSHOT.md")
    models = [m for m in args.models.split(",") if m]
    if set(models) - set(MODELS):
        raise SystemExit(f"--models: unknown {sorted(set(models) - set(MODELS))}; choose from {list(MODELS)}")
    study = open_study(out, recipe)
    if not args.report_only:
        keys = [f"{m}-s{int(s)}" for s in args.seeds.split(",") for m in MODELS if m in models]
        todo = [k for k in keys if k not in {r["key"] for r in read_records(out)}]
        print(f"{len(keys) - len(todo)} of {len(keys)} runs recorded; {len(todo) or 'nothing'} to train", flush=True)
        session = {"command": " ".join(sys.argv if argv is None else ["fewshot.py", *argv]), "runs": todo,
                   "started": time.strftime("%Y-%m-%d %H:%M:%S"), "torch_threads": torch.get_num_threads(),
                   "device": args.device, "cpus": os.cpu_count(), "wall_seconds": 0.0}
        study["sessions"].append(session)
        save_study(out, study)
        t0 = time.time()
        data = {k: (x.to(args.device), y) for k, (x, y) in (load_data(recipe, args.root) if todo else {}).items()}
        print("data: " + ", ".join(f"{k} {len(y)} images / {len(set(y))} classes" for k, (_, y) in data.items()))
        for i, key in enumerate(todo):
            elapsed = time.time() - t0
            eta = f" | ETA {fmt(elapsed / i * (len(todo) - i))}" if i else ""
            print(f"[{i + 1:3d}/{len(todo)}] {key} | elapsed {fmt(elapsed)}{eta}", flush=True)
            record = train_run(key, recipe, data, out, lambda s: print("    " + s, flush=True), args.device)
            with open(out / "records.jsonl", "a") as fh:
                fh.write(json.dumps(record) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            session["wall_seconds"] = round(time.time() - t0, 1)
            save_study(out, study)
    render_report(read_records(out), study, md, md.with_name("fewshot_curves.png"))
    print(f"report: {md}, {md.with_name('fewshot_curves.png')}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
