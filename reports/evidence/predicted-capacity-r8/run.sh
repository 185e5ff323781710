#!/usr/bin/env bash
# Evidence of round 8 (issue 26 item 4): the time to a valid p99 bracket, the guided prediction-first search
# against the search from the offline ceiling, back to back (B), then the base model's predicted vs measured
# capacity (base-p50). One process, one thread at a time; the load is sampled every 30 s into RUNS/load.log.
# To give the measurement a core as was done (root): echo 0 > /proc/sys/kernel/sched_autogroup_enabled, start
# this script with setsid, run `bash /work/coord/renice-others.sh PGID &` beside it, and echo 1 back after.
# Run from the repository root: bash reports/evidence/predicted-capacity-r8/run.sh RUNS_DIR
set -euo pipefail
here=reports/evidence/predicted-capacity-r8
runs=${1:-/tmp/predicted-capacity-r8}
py=${PYTHON:-python}
mkdir -p "$runs"
[ -d "$runs/tiny" ] || $py -m bench make-tiny-checkpoint "$runs/tiny"
(while sleep 30; do echo "$(date -u +%H:%M:%S) $(cat /proc/loadavg)" >> "$runs/load.log"; done) &
sampler=$!
trap 'kill $sampler' EXIT
tiny=(--model-path "$runs/tiny" --max-new-tokens 4 --threads 1 --quiet --batch-sizes 1 --backends transformers
      --scenarios server --latency-bound-ms 1000 --latency-percentile 0.99)
# B: time to a valid bracket at p99 <= 1000 ms, tiny checkpoint, transformers bs1: from the ceiling, then from the
# prediction (guided steps)
for start in ceiling predicted; do
  $py -m bench run --sweep $here/b-p99-$start.toml "${tiny[@]}" --out "$runs/b-p99-$start" > "$runs/b-p99-$start.log" 2>&1
done
# base model, random weights, bs1 transformers: single-stream and offline (the prediction's batch times), then the
# server's capacity search (measured), p50 <= 20,000 ms
$py -m bench run --sweep $here/base-p50.toml --variants base --weights random --max-new-tokens 4 --threads 1 --quiet \
  --batch-sizes 1 --backends transformers --scenarios single-stream,offline,server --latency-bound-ms 20000 \
  --latency-percentile 0.5 --out "$runs/base-p50" > "$runs/base-p50.log" 2>&1
# virtual time (no model): the searches on a fake drawing measured batch times, over seeds and errors; the rule
# before guided steps from a tree of commit 14be79f (git archive 14be79f | tar -x -C DIR), labelled
samples=reports/evidence/predicted-capacity-quiet/runs/a-p90/results.jsonl
$py $here/virtual.py $samples "$runs/virtual-now.json" --label predicted-guided
if [ -n "${BEFORE_TREE:-}" ]; then
  (cd "$BEFORE_TREE" && $py "$OLDPWD/$here/virtual.py" "$OLDPWD/$samples" "$runs/virtual-before.json" --modes predicted \
    --label predicted-neighbour)
fi
$py $here/virtual.py - "$runs/virtual.json" --merge "$runs"/virtual-*.json
$py reports/evidence/predicted-capacity/summarize.py "$runs" > $here/summary.json
