#!/usr/bin/env bash
# Evidence for predicted server capacity (bench/scenarios/predict.py) and the prediction-first capacity search.
# Run from the repository root: bash reports/evidence/predicted-capacity/run.sh RUNS_DIR
# (RUNS_DIR defaults to /tmp/predicted-capacity-runs). The runs go at the same time, so that the two searches
# of the side-by-side comparison (B) see the same host load.
set -euo pipefail
here=reports/evidence/predicted-capacity
runs=${1:-/tmp/predicted-capacity-runs}
py=${PYTHON:-python}
mkdir -p "$runs"
[ -d "$runs/tiny" ] || $py -m bench make-tiny-checkpoint "$runs/tiny"
(while sleep 30; do echo "$(date -u +%H:%M:%S) $(cat /proc/loadavg)" >> "$runs/load.log"; done) &
sampler=$!
common=(--model-path "$runs/tiny" --max-new-tokens 4 --threads 1 --quiet)
# A: predicted (from the offline and single-stream cells) vs measured capacity, 4 settings, p90 <= 6000 ms
$py -m bench run --sweep $here/a-p90.toml "${common[@]}" --batch-sizes 1,4 --backends transformers,openvino \
  --scenarios single-stream,offline,server --latency-bound-ms 6000 --latency-percentile 0.9 --out "$runs/a-p90" \
  > "$runs/a-p90.log" 2>&1 &
# A2: the same, p90 <= 3000 ms, MLPerf's 0.99 confidence and runs of at least 30 s (a2-p90.toml)
$py -m bench run --sweep $here/a2-p90.toml "${common[@]}" --batch-sizes 1,4 --backends transformers,openvino \
  --scenarios single-stream,offline,server --latency-bound-ms 3000 --latency-percentile 0.9 --out "$runs/a2-p90" \
  > "$runs/a2-p90.log" 2>&1 &
# B: time to a valid bracket at p99 <= 8000 ms (service times on the loaded host reach 3 s), prediction-first vs from the offline ceiling (as before)
for start in ceiling predicted; do
  $py -m bench run --sweep $here/b-p99-$start.toml "${common[@]}" --batch-sizes 1 --backends transformers \
    --scenarios server --latency-bound-ms 8000 --latency-percentile 0.99 --out "$runs/b-p99-$start" \
    > "$runs/b-p99-$start.log" 2>&1 &
done
wait $(jobs -p | grep -v "^$sampler$")
kill "$sampler"
$py $here/summarize.py "$runs" > $here/summary.json
