#!/usr/bin/env bash
# One command that checks the package on a CUDA GPU and measures it, in at most 8 minutes on one
# H100/H200; writes OUTDIR/gpu_check.json and OUTDIR/gpu_check.md (plus each step's log and JSON).
#
#   bash benchmarks/gpu_check.sh OUTDIR                # on a machine with a GPU
#   PML_WHEEL=path/to/pytorch_metric_learning-2.9.0-py3-none-any.whl bash benchmarks/gpu_check.sh OUTDIR
#   bash benchmarks/gpu_check.sh --cpu-dry-run OUTDIR  # without a GPU: tiny CPU sizes, cuda tests skipped
#
# Steps, each under a timeout within one overall deadline (GPU_CHECK_SECONDS, default 460 s; 1500 s
# for the dry run):
#   1. pytest -m cuda: the tests marked cuda (every test file that uses the marker);
#   2. bench_losses.py --device cuda (RKD-DA fwd+bwd, time by CUDA events, peak CUDA memory);
#   3. bench_step.py --device cuda at 224 px (one distillation step, fp32 / bf16 channels-last / teacher cache);
#   4. bench_pipeline.py at 64 and 224 px (the distill loop, real loader against synthetic batches);
#   5. bench_input.py, when the repository has it (and bench_pipeline with the PIL input path at 64 px,
#      where the library has that setting).
# Set-up, for a machine without PML or without network: PML_WHEEL=FILE is installed with
# `pip install --no-deps` (so the torch and timm already there stay), then the package itself with
# `pip install --no-deps --no-build-isolation -e .` (not in the dry run); PYTHONPATH holds the
# repository root in any case.
# Data: Omniglot's archive from RKD_PML_OMNIGLOT, else shared/data/omniglot/ inside or beside the
# repository; without it the pipeline benchmark uses digits.
set -uo pipefail
DRY=0
if [ "${1:-}" = "--cpu-dry-run" ]; then DRY=1; shift; fi
if [ $# -ne 1 ] || [ -z "$1" ]; then
  echo "usage: bash benchmarks/gpu_check.sh [--cpu-dry-run] OUTDIR" >&2
  exit 2
fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ -e "$1" ] && [ ! -d "$1" ]; then echo "gpu_check: OUTDIR $1 exists and is not a folder" >&2; exit 2; fi
if [ -n "${PML_WHEEL:-}" ] && [ ! -f "$PML_WHEEL" ]; then echo "gpu_check: PML_WHEEL $PML_WHEEL: no such file" >&2; exit 2; fi
mkdir -p "$1" && OUT=$(cd "$1" && pwd)
PY=${PYTHON:-python}
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PIP_DISABLE_PIP_VERSION_CHECK=1
START=$SECONDS
: > "$OUT/steps.tsv"

if [ "$DRY" = 0 ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check: no CUDA GPU here: running the CPU dry run (tiny sizes; the cuda tests skip)"
  DRY=1
fi
# ---- set-up (the dry run installs nothing but PML_WHEEL: PYTHONPATH is enough)
{
  if [ -n "${PML_WHEEL:-}" ]; then "$PY" -m pip install --no-deps "$PML_WHEEL"; fi
  if [ "$DRY" = 0 ]; then
    "$PY" -m pip install --no-deps --no-build-isolation -e . || echo "editable install failed; PYTHONPATH is used"
  fi
} > "$OUT/setup.log" 2>&1
if ! "$PY" -c "import pytorch_metric_learning, timm, torch, rkd_pml" >> "$OUT/setup.log" 2>&1; then
  echo "gpu_check: cannot import the package and its dependencies (see $OUT/setup.log; PML_WHEEL=FILE installs PML)" >&2
  tail -5 "$OUT/setup.log" >&2
  exit 1
fi
DEVICE=cuda; [ "$DRY" = 1 ] && DEVICE=cpu
DEFAULT_SECONDS=460; [ "$DRY" = 1 ] && DEFAULT_SECONDS=1500  # a shared 2-core CPU is slow to start each process
DEADLINE=$((START + ${GPU_CHECK_SECONDS:-$DEFAULT_SECONDS}))

OMNIGLOT=""
for candidate in "${RKD_PML_OMNIGLOT:-}" "$ROOT/shared/data/omniglot/images_background_small1.zip" \
                 "$ROOT/../shared/data/omniglot/images_background_small1.zip"; do
  if [ -n "$candidate" ] && [ -f "$candidate" ]; then OMNIGLOT=$candidate; break; fi
done
DATA=(--dataset digits)
[ -n "$OMNIGLOT" ] && DATA=(--dataset omniglot --root "$OMNIGLOT")

step() {  # step NAME CAP_SECONDS COMMAND...: run under the smaller of CAP and the time left
  local name=$1 cap=$2 left began rc
  shift 2
  left=$((DEADLINE - SECONDS))
  if [ "$left" -lt 10 ]; then
    printf '%s\tskipped\t0\tno time left\n' "$name" >> "$OUT/steps.tsv"
    echo "== $name: skipped (no time left)"
    return
  fi
  [ "$cap" -gt "$left" ] && cap=$left
  echo "== $name (at most $cap s)"
  began=$SECONDS
  timeout --kill-after=10 "$cap" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  local status=ok
  [ "$rc" -ne 0 ] && status="failed (exit $rc)"
  [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && status="timed out after $cap s"
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - began))" "$*" >> "$OUT/steps.tsv"
  echo "   $status in $((SECONDS - began)) s"
  tail -3 "$OUT/$name.log" | sed 's/^/   | /'
}

mapfile -t CUDA_TESTS < <(grep -rlE "pytest\.mark\.cuda|marks=pytest\.mark\.cuda" tests --include='*.py' | sort)
step pytest_cuda 200 "$PY" -m pytest -m cuda -p no:cacheprovider -rs --junitxml="$OUT/pytest_cuda.xml" "${CUDA_TESTS[@]}"

if [ "$DRY" = 1 ]; then
  step bench_losses 240 "$PY" benchmarks/bench_losses.py --device cpu --n 64 --dt 64 --ds 16 \
    --impls rkd_eager,official --repeats 2 --min-seconds 0 --threads 1 --out "$OUT/bench_losses.json"
  step bench_step 300 "$PY" benchmarks/bench_step.py --quick --threads 1 --json "$OUT/bench_step.json"
  step bench_pipeline_16px 300 "$PY" benchmarks/bench_pipeline.py --quick --threads 1 --json "$OUT/bench_pipeline_16px.json"
else
  step bench_losses 75 "$PY" benchmarks/bench_losses.py --device cuda --n 256,1024,2048,4096 --dt 2048 \
    --impls rkd_compiled,rkd_eager,official --repeats 10 --min-seconds 1 --max-seconds 10 --out "$OUT/bench_losses.json"
  step bench_step 100 "$PY" benchmarks/bench_step.py --device cuda --size 224 --batch 128 --steps 10 --warmup 3 \
    --threads 8 --configs fp32,bf16_channels_last,teacher_cache --json "$OUT/bench_step.json"
  for size in 64 224; do
    step "bench_pipeline_${size}px" 110 "$PY" benchmarks/bench_pipeline.py --device cuda "${DATA[@]}" \
      --image-size "$size" --batch 128 --steps 20 --epochs 2 --num-workers 6 --json "$OUT/bench_pipeline_${size}px.json"
  done
  if "$PY" -c "from rkd_pml.training import DistillConfig as C; C(input_pipeline='pil')" 2>/dev/null; then
    step bench_pipeline_64px_pil 90 "$PY" benchmarks/bench_pipeline.py --device cuda "${DATA[@]}" --input-pipeline pil \
      --image-size 64 --batch 128 --steps 20 --epochs 2 --num-workers 6 --json "$OUT/bench_pipeline_64px_pil.json"
  fi
fi
if [ -f benchmarks/bench_input.py ]; then
  INPUT_ARGS=(--json "$OUT/bench_input.json")
  if [ "$DRY" = 1 ]; then
    "$PY" benchmarks/bench_input.py --help 2>/dev/null | grep -q -- "--quick" && INPUT_ARGS+=(--quick)
  else
    INPUT_ARGS+=(--device cuda --workers 6)
    [ -n "$OMNIGLOT" ] && INPUT_ARGS+=(--root "$OMNIGLOT")
  fi
  step bench_input 90 "$PY" benchmarks/bench_input.py "${INPUT_ARGS[@]}"
fi

"$PY" - "$OUT" "$DEVICE" "$((SECONDS - START))" <<'EOF'
"""Gather the steps' results into gpu_check.json and a markdown table gpu_check.md."""
import json, os, platform, sys
import xml.etree.ElementTree as ET

out, device, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3])

def load(name):
    path = os.path.join(out, name)
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None

import torch
machine = {"device": device, "torch": torch.__version__, "python": platform.python_version(), "cuda": torch.version.cuda}
if device == "cuda":
    machine["gpu"] = torch.cuda.get_device_name(0)
try:
    import timm, pytorch_metric_learning as pml
    machine.update(timm=timm.__version__, pml=pml.__version__)
except Exception:
    pass
steps = []
with open(os.path.join(out, "steps.tsv")) as f:
    for line in f:
        name, status, secs, cmd = (line.rstrip("\n").split("\t") + [""] * 4)[:4]
        steps.append({"name": name, "status": status, "seconds": int(secs), "command": cmd})
summary = {"machine": machine, "total_seconds": seconds, "steps": steps, "results": {}}
md = [f"# GPU check: {machine.get('gpu', 'CPU dry run')}", "",
      f"torch {machine['torch']}, timm {machine.get('timm')}, PML {machine.get('pml')}, Python {machine['python']}; "
      f"device {device}; {seconds} s in all.", "", "| step | status | s |", "|---|---|---|"]
md += [f"| {s['name']} | {s['status']} | {s['seconds']} |" for s in steps]

try:
    suite = ET.parse(os.path.join(out, "pytest_cuda.xml")).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    failed = [f"{c.get('classname')}::{c.get('name')}" for c in suite.iter("testcase")
              if c.find("failure") is not None or c.find("error") is not None]
    summary["results"]["pytest_cuda"] = {**counts, "failed": failed}
    md += ["", f"**pytest -m cuda**: {counts['passed']} passed, {counts['failures'] + counts['errors']} failed, "
               f"{counts['skipped']} skipped" + (": " + ", ".join(failed) if failed else "")]
except Exception as exc:
    summary["results"]["pytest_cuda"] = {"error": str(exc)}

losses = load("bench_losses.json")
if losses:
    rows = [r for r in losses["rows"] if "min_s" in r or "note" in r]
    summary["results"]["bench_losses"] = rows
    md += ["", "**bench_losses** (RKD-DA fwd+bwd)", "", "| impl | N | Dt | median ms | peak MiB | note |", "|---|---|---|---|---|---|"]
    for r in rows:
        med = f"{1000 * r['median_s']:.2f}" if "median_s" in r else "-"
        mem = f"{r['peak_extra_bytes'] / 2**20:.0f}" if "peak_extra_bytes" in r else "-"
        md.append(f"| {r['impl']} | {r['n']} | {r['dt']} | {med} | {mem} | {r.get('note', '')[:60]} |")

step_report = load("bench_step.json")
if step_report:
    a = step_report["args"]
    summary["results"]["bench_step"] = step_report["results"]
    md += ["", f"**bench_step** ({a['teacher']}-{a['teacher_dim']} -> {a['student']}-{a['student_dim']}, "
               f"{a['size']} px, batch {a['batch']})", "", "| config | images/s | median step ms | peak MiB |", "|---|---|---|---|"]
    for r in step_report["results"]:
        if "error" in r:
            md.append(f"| {r['name']} | error: {r['error'][:60]} | - | - |")
            continue
        peak = f"{r['peak_cuda_mem_bytes'] / 2**20:.0f}" if "peak_cuda_mem_bytes" in r else "-"
        md.append(f"| {r['name']} | {r['images_per_s']:.0f} | {1000 * r['step_median_s']:.1f} | {peak} |")

pipes = sorted(n for n in os.listdir(out) if n.startswith("bench_pipeline_") and n.endswith(".json"))
if pipes:
    md += ["", "**bench_pipeline** (the distill loop: real loader against synthetic batches)", "",
           "| data | px | input | batch | workers | real img/s | synthetic img/s | real / synthetic |", "|---|---|---|---|---|---|---|---|"]
    for name in pipes:
        p = load(name)
        if not p:
            continue
        a, res = p["args"], {r["name"]: r for r in p["results"]}
        summary["results"][name[:-5]] = {"args": a, "results": p["results"], "ratio": p["ratio_real_to_synthetic"]}
        md.append(f"| {a['dataset']} | {a['image_size']} | {a.get('input_pipeline') or 'default'} | {a['batch']} | {a['num_workers']} | {res['real']['images_per_s']:.0f} | "
                  f"{res['synthetic']['images_per_s']:.0f} | {p['ratio_real_to_synthetic']:.2f} |")

inp = load("bench_input.json")
if inp:
    summary["results"]["bench_input"] = inp.get("results")
    md += ["", "**bench_input** (the loader alone)", "", "| input | px | images/s |", "|---|---|---|"]
    md += [f"| {r.get('name')} | {r.get('size', '-')} | {r.get('images_per_s', float('nan')):.0f} |" for r in inp.get("results", [])]

with open(os.path.join(out, "gpu_check.json"), "w") as f:
    json.dump(summary, f, indent=1)
with open(os.path.join(out, "gpu_check.md"), "w") as f:
    f.write("\n".join(md) + "\n")
print("\n".join(md))
print(f"\nwrote {os.path.join(out, 'gpu_check.json')} and gpu_check.md")
EOF
rc=0
if grep -qv $'\tok\t' "$OUT/steps.tsv"; then rc=1; fi
echo "== gpu check done in $((SECONDS - START)) s (exit $rc: 1 when a step failed, timed out or was skipped)"
exit $rc
