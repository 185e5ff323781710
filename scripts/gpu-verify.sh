#!/usr/bin/env bash
# Issue 12's GPU verification in one command, for a lent GPU machine (no network, its own CUDA torch).
#
#   scripts/gpu-verify.sh [OUT_DIR]        run from anywhere; OUT_DIR defaults to $OUT, else runs/gpu-verify-out
#
# Steps, each under `timeout`, all output tee'd into OUT_DIR/gpu-verify.log (exit codes in steps.txt):
#   install  wheels from .whl/ (prepared with shared/offline-wheels.sh) into /tmp/site, if there are any
#   env      GPU, driver and library versions
#   pixels   python -m bench.backends.transformers.preprocess: device pixels vs the reference CLIP processor, host vs device time
#   check    python -m bench.tools.gpucheck RUN --targets: the target cells, then plausibility cells, budgeted
#   perf     python -m bench.tools.perf --device cuda --budget-s 90 --out RUN: the snippet vs the harness
#   targets  python -m bench.tools.targets RUN: every target measured, met or not (targets.json)
#   server   florence2-bench run --sweep scripts/gpu-server.toml: capacity within a p99 bound, if time is left
# RUN (runs/gpu-verify) is packed into OUT_DIR/run.tar.gz; results.jsonl, env.json, perf.json and
# targets.json are also copied out, and the server run's results as server-results.jsonl (8 files in all). Commit RUN's results.jsonl, env.json, perf.json as
# reports/baselines/gpu-<gpu name>/ (the log prints the folder name).
#
# Time: GPU_VERIFY_BUDGET_S (default 420) is split between the steps: the check gets 45% as its cell
# budget, perf its 90 s; with imports, loads and reports the run takes about 7 minutes. GPU_VERIFY_WALL_S
# (default 560) bounds the whole script: every step's timeout is cut to what is left of it, keeping 40 s
# for the targets and the packing, so the files always come back. GPU_VERIFY_DRY_RUN=1 runs the same
# steps on the CPU with a tiny checkpoint in about a minute (a check of this script, not a measurement);
# a dry run has no time budget and no wall-time bound (only a 30-minute hang guard per step), so a busy
# machine slows it down but never cuts a step or skips a cell, and runs every cell in fp32 (a CPU
# without native fp16 would skip the fp16 cells: the dry run's checks must not depend on the CPU).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
OUT_DIR=${1:-${OUT:-runs/gpu-verify-out}}
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
LOG="$OUT_DIR/gpu-verify.log"
: > "$LOG"
: > "$OUT_DIR/steps.txt"
PY=${PYTHON:-python3}
RUN=${GPU_VERIFY_RUN:-runs/gpu-verify}
TOTAL=${GPU_VERIFY_BUDGET_S:-420}
DEADLINE=$(( $(date +%s) + ${GPU_VERIFY_WALL_S:-560} ))
RESERVE=40  # seconds kept for the targets step and the packing
DRY=${GPU_VERIFY_DRY_RUN:-0}
CHECK_BUDGET=$(( TOTAL * 45 / 100 ))
CHECK_LIMIT=$(( CHECK_BUDGET + 50 ))
PERF_BUDGET=90
PERF_LIMIT=$(( PERF_BUDGET + 65 ))
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

step() {  # step NAME LIMIT_S COMMAND...: run, tee, record the exit code; never stops the script
  local name=$1 limit=$2 start rc room
  shift 2
  if [ "$DRY" = "1" ]; then limit=1800; fi  # a dry run: a hang guard only, never a cut for time
  room=$(( DEADLINE - $(date +%s) - RESERVE ))
  if [ "$room" -lt "$limit" ]; then limit=$room; fi
  if [ "$limit" -lt 5 ]; then
    echo "=== $name: not run, the script's wall-time bound is reached" | tee -a "$LOG"
    echo "$name not-run 0" >> "$OUT_DIR/steps.txt"
    return
  fi
  echo "=== $name (limit ${limit} s): $*" | tee -a "$LOG"
  start=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  echo "=== $name: exit $rc after $(( $(date +%s) - start )) s" | tee -a "$LOG"
  echo "$name $rc $(( $(date +%s) - start ))" >> "$OUT_DIR/steps.txt"
}

if [ "$DRY" != "1" ] && compgen -G ".whl/*.whl" > /dev/null; then  # the wheels are for the GPU host's Python
  step install 90 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  if PYTHONPATH="/tmp/site:$PYTHONPATH" "$PY" -c "import transformers" >> "$LOG" 2>&1; then
    export PYTHONPATH="/tmp/site:$PYTHONPATH"
  else
    echo "=== install: transformers from .whl does not import here; using the machine's own packages" | tee -a "$LOG"
  fi
fi

step env 20 "$PY" - <<'PYENV'
import importlib, platform, re, subprocess
print("python", platform.python_version())
for name in ("torch", "torchvision", "transformers", "tokenizers", "pynvml", "jinja2", "pandas"):
    try:
        print(name, getattr(importlib.import_module(name), "__version__", "(no version attribute)"))
    except Exception as exc:
        print(name, "absent:", type(exc).__name__)
import torch
print("cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    name = torch.cuda.get_device_name(0)
    print("gpu", name, f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.1f} GiB")
    print("baseline folder: reports/baselines/gpu-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-"))
    try:
        print(subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit",
                              "--format=csv"], capture_output=True, text=True, timeout=20).stdout)
    except Exception as exc:
        print("nvidia-smi:", exc)
PYENV

if [ "$DRY" = "1" ]; then  # no budget: a loaded CPU must not cut a step or skip a cell for time
  DEADLINE=$(( $(date +%s) + 100000 ))
  PERF_BUDGET=100000
  CHECK_BUDGET_ARGS=()
  DEVICE=cpu
  TINY=/tmp/gpu-verify-tiny
  [ -f "$TINY/config.json" ] || "$PY" -m bench make-tiny-checkpoint "$TINY" > /dev/null 2>&1
  CHECK_ARGS=(--model-path "$TINY" --max-new-tokens 2 --limit 2 --max-batch-size 2 --dtypes fp32 --batch-sizes 1 \
    --dtype fp32)  # every cell in fp32: a CPU without native fp16 would skip the fp16 target cells
  PERF_ARGS=(--model-path "$TINY" --images 2 --rounds 1 --candidates fp32-b2-dev-prefetch,fp32-b1-static-graphs)
  PIXEL_ARGS=(--images 4)
  SERVER_ARGS=(--model-path "$TINY" --variants custom --batch-sizes 2 --max-new-tokens 2 --server-qps 20 \
    --latency-bound-ms 60000 --dtypes fp32)  # fp32: a CPU without native fp16 would skip the cell
else
  CHECK_BUDGET_ARGS=(--budget-s "$CHECK_BUDGET")
  DEVICE=cuda
  CHECK_ARGS=(--dtypes fp32,fp16 --batch-sizes 1)
  PERF_ARGS=(--rounds 3)
  PIXEL_ARGS=()
  SERVER_ARGS=()
fi

step pixels 45 "$PY" -m bench.backends.transformers.preprocess --device "$DEVICE" "${PIXEL_ARGS[@]}"
step check "$CHECK_LIMIT" "$PY" -m bench.tools.gpucheck "$RUN" --device "$DEVICE" --targets "${CHECK_BUDGET_ARGS[@]}" \
  "${CHECK_ARGS[@]}"
step perf "$PERF_LIMIT" "$PY" -m bench.tools.perf --device "$DEVICE" --budget-s "$PERF_BUDGET" --out "$RUN" "${PERF_ARGS[@]}"
RESERVE=5
step targets 30 "$PY" -m bench.tools.targets "$RUN"
# what the buyer asks: requests per second within a p99 bound (scripts/gpu-server.toml), if time is left
SERVER_RUN=${RUN}-server
rm -rf "$SERVER_RUN"
step server 120 "$PY" -m bench run --sweep scripts/gpu-server.toml --devices "$DEVICE" --out "$SERVER_RUN" --quiet \
  "${SERVER_ARGS[@]}"

if [ -d "$RUN" ]; then
  tar -czf "$OUT_DIR/run.tar.gz" -C "$(dirname "$RUN")" "$(basename "$RUN")"
  for f in results.jsonl env.json perf.json targets.json; do
    [ -f "$RUN/$f" ] && cp "$RUN/$f" "$OUT_DIR/"
  done
fi
[ -f "$SERVER_RUN/results.jsonl" ] && cp "$SERVER_RUN/results.jsonl" "$OUT_DIR/server-results.jsonl"
echo "=== done: $(tr '\n' ';' < "$OUT_DIR/steps.txt") files in $OUT_DIR: $(ls "$OUT_DIR" | tr '\n' ' ')" | tee -a "$LOG"
