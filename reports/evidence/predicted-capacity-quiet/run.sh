#!/usr/bin/env bash
# Evidence for predicted server capacity on a quiet machine: the runs go one after another (one process, one
# thread), so each has a core to itself; the host load is sampled every 30 s into RUNS/load.log.
# Run from the repository root: bash reports/evidence/predicted-capacity-quiet/run.sh RUNS_DIR
set -euo pipefail
here=reports/evidence/predicted-capacity-quiet
runs=${1:-/tmp/predicted-capacity-quiet}
py=${PYTHON:-python}
mkdir -p "$runs"
[ -d "$runs/tiny" ] || $py -m bench make-tiny-checkpoint "$runs/tiny"
(while sleep 30; do echo "$(date -u +%H:%M:%S) $(cat /proc/loadavg)" >> "$runs/load.log"; done) &
sampler=$!
trap 'kill $sampler' EXIT
common=(--model-path "$runs/tiny" --max-new-tokens 4 --threads 1 --quiet)
# A: predicted vs measured capacity, four settings, p90 <= 1000 ms
$py -m bench run --sweep $here/a-p90.toml "${common[@]}" --batch-sizes 1,4 --backends transformers,openvino \
  --scenarios single-stream,offline,server --latency-bound-ms 1000 --latency-percentile 0.9 --out "$runs/a-p90" \
  > "$runs/a-p90.log" 2>&1
# B: time to a valid bracket at p99 <= 1000 ms, from the ceiling (before) and from the prediction (now)
for start in ceiling predicted; do
  $py -m bench run --sweep $here/b-p99-$start.toml "${common[@]}" --batch-sizes 1 --backends transformers \
    --scenarios server --latency-bound-ms 1000 --latency-percentile 0.99 --out "$runs/b-p99-$start" \
    > "$runs/b-p99-$start.log" 2>&1
done
$py reports/evidence/predicted-capacity/summarize.py "$runs" > $here/summary.json
