"""Time to a valid p99 bracket in virtual time: prediction-first (guided by re-predictions, or the neighbour
rule before them) against the search from the ceiling, over seeds and prediction errors.

A fake model draws the tiny checkpoint's measured single-stream batch-of-one times (the quiet run's
transformers cell); after the cell's probe batches its speed changes by a factor, so the prediction made
from the probe is off the way the measured one was (the machine's speed moved between probe and search).
MLPerf's full p99 rule at confidence 0.99 (459 requests a step), bound 1,000 ms, final runs of the default
length. Run from a tree's root (its ``bench`` is the one searched):

    python virtual.py SAMPLES_JSONL OUT.json [--modes ceiling,predicted] [--seeds 8] [--label NAME]

``--label`` renames the predicted rows (e.g. ``predicted-neighbour`` from the tree of commit 14be79f, the rule
before guided steps); ``--merge A.json B.json ...`` writes the rows of several outputs into OUT.json.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path[:0] = [str(Path.cwd()), str(Path.cwd() / "tests")]

from scenario_fakes import POLICY, scenario_input  # noqa: E402

from bench.scenarios import ServerSettings, get_scenario  # noqa: E402

ERRORS = (-0.25, -0.2, -0.15, -0.1, 0.0, 0.1, 0.15, 0.2, 0.25)  # wanted prediction / capacity - 1
HARNESS = ("fake model drawing the quiet run's transformers single-stream batch times (seeded), service x (1 + "
           "error) after the probe's batches; p99 <= 1000 ms at confidence 0.99, default run lengths; bracket_s "
           "in virtual seconds")
PROBE = POLICY.warmup + max(2, min(POLICY.min_iterations, 5))  # batches before the search: the probe's


def one(times: list[float], error: float, seed: int, start: str) -> dict:
    rng = random.Random(seed)
    speed = 1.0 + error  # service x (1 + error) after the probe: a prediction about (1 + error) x the capacity
    served = [0]

    def service_s(n: int) -> float:
        served[0] += 1
        return rng.choice(times) / 1000.0 * (speed if served[0] > PROBE else 1.0)

    settings = ServerSettings(qps="auto", latency_bound_ms=1000.0, search_start=start, seed=seed)
    m = get_scenario("server").measure(scenario_input(service_s, 1, settings)[0])
    searched, curve = m.extra["capacity_search"], m.server["curve"]
    prediction = (searched.get("prediction") or {}).get("qps")
    return {"error": error, "seed": seed, "start": start, "capacity_qps": m.capacity_qps,
            "prediction_over_capacity": prediction / m.capacity_qps if prediction and m.capacity_qps else None,
            "short_steps": sum(not s["final"] for s in curve), "final_steps": sum(bool(s["final"]) for s in curve),
            "bracket_s": searched["bracket_s"], "search_s": searched["search_s"],
            "rates": [round(s["target_qps"], 3) for s in curve], "valid": [s["valid"] for s in curve]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("samples")
    parser.add_argument("out")
    parser.add_argument("--modes", default="ceiling,predicted")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--label", default="")
    parser.add_argument("--merge", nargs="*", default=[])
    args = parser.parse_args()
    if args.merge:
        parts = [json.loads(Path(m).read_text()) for m in args.merge]
        merged = {"harness": HARNESS, "samples_ms": parts[0]["samples_ms"], "rows": [r for x in parts for r in x["rows"]]}
        Path(args.out).write_text(json.dumps(merged, indent=1))
        return
    samples = next(json.loads(line) for line in Path(args.samples).read_text().splitlines()
                   if '"single-stream"' in line and '"transformers"' in line)["samples_ms"]
    modes = args.modes.split(",")
    rows = [one(samples, e, seed, start) for e in ERRORS for seed in range(args.seeds) for start in modes]
    for row in rows:
        row["start"] = args.label if args.label and row["start"] == "predicted" else row["start"]
    Path(args.out).write_text(json.dumps({"harness": HARNESS, "samples_ms": samples, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
