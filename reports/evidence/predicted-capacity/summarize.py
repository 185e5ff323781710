"""Summarise the predicted-capacity evidence (run.sh) as JSON: predicted vs measured capacity (A), time to a
valid bracket prediction-first vs from the ceiling, measured (B) and in virtual time under MLPerf's full p99
rule (C), and the prediction for the committed H200 baselines (D).

    python reports/evidence/predicted-capacity/summarize.py RUNS_DIR > reports/evidence/predicted-capacity/summary.json
"""

from __future__ import annotations

import json
import math
import os
import random
import statistics
import sys
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from scenario_fakes import scenario_input  # noqa: E402

from bench.results.record import Record  # noqa: E402
from bench.scenarios import ServerSettings, get_scenario  # noqa: E402
from bench.scenarios.predict import (  # noqa: E402
    Prediction,
    batch_times,
    predict_capacity,
    predictions,
    setting_key,
)

A_RUNS = ("a-p90", "a2-p90", "base-p50")  # run directories of part A; each server record states its bound and percentile
H200_BOUND_MS, H200_PERCENTILE, H200_DEMAND = 200.0, 0.99, 100.0


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def typed(recs: list[dict]) -> list[Record]:
    """The records as the prediction reads them (``bench.results.record.Record``)."""
    return [r for r in (Record.from_dict(v) for v in recs) if r is not None]


def search_fields(record: dict) -> dict:
    searched = record["extra"]["capacity_search"]
    return {"capacity_qps": record["capacity_qps"], "bracket": record["server"]["capacity_bracket"],
            "steps": len(record["server"]["curve"]), "search_s": searched.get("search_s"),
            "bracket_s": searched.get("bracket_s"),
            "start": searched.get("start"), "start_qps": searched.get("start_qps"),
            "in_cell_prediction_qps": (searched.get("prediction") or {}).get("qps"), "stop": searched["stop"],
            "step_rates": [round(s["target_qps"], 4) for s in record["server"]["curve"]],
            "step_valid": [s["valid"] for s in record["server"]["curve"]],
            # the machine's speed during each step: its median batch time at its most common batch size
            "step_service_ms": [s.get("service_ms") and round(s["service_ms"], 1) for s in record["server"]["curve"]],
            "step_service_batch_size": [s.get("service_batch_size") for s in record["server"]["curve"]],
            "flags": [f["code"] for f in record.get("flags") or []]}


def part_a(runs: Path, name: str) -> list[dict]:
    """Predicted from the run's offline and single-stream cells (``predictions``, as the report does), at the
    bound and percentile its capacity searches were judged on."""
    recs = records(runs / name / "results.jsonl")
    judged = next(r["server"] for r in recs if r["scenario"] == "server" and r["status"] == "ok")
    bound_ms, percentile = judged["latency_bound_ms"], judged["latency_percentile"]
    predicted = predictions(typed(recs), bound_ms=bound_ms, percentile=percentile)
    rows = []
    for r in recs:
        if r["scenario"] != "server" or r["status"] != "ok":
            continue
        key = setting_key(Record.from_dict(r))
        found = {p.max_batch: p for p in predicted.get(key, [])}.get(r["batch_size"])
        times = batch_times(typed(recs)).get(key, {})
        row = {"run": name, "backend": r["backend"], "batch_size": r["batch_size"], "bound_ms": bound_ms,
               "closed_loop_batch_ms_mean": {size: round(statistics.fmean(v), 1) for size, v in times.items()},
               "percentile": percentile, "confidence": r["server"]["early_stopping"]["confidence"],
               "predicted_qps": found.qps if found else None,
               "predicted_from_batch_sizes": list(found.batch_sizes) if found else None,
               "predicted_note": found.note if found else "no closed-loop cells of this setting",
               **search_fields(r)}
        if found and found.qps and r["capacity_qps"]:
            row["predicted_over_measured"] = found.qps / r["capacity_qps"]
            row["within_20pct"] = abs(row["predicted_over_measured"] - 1) <= 0.20
            row |= at_search_speed(times, r, bound_ms, percentile)
        rows.append(row)
    return rows


def at_search_speed(times: dict[int, list[float]], record: dict, bound_ms: float, percentile: float) -> dict:
    """A diagnostic, not the prediction: the same model with the closed-loop batch times scaled to the speed
    the machine had during the search (the steps' median batch time at a measured size over the closed-loop
    mean at that size), separating the model's error from the machine's drift between the cells."""
    curve = record["server"]["curve"]
    for size in (record["batch_size"], 1):
        seen = [s["service_ms"] for s in curve if s.get("service_batch_size") == size and s.get("service_ms")]
        if seen and size in times:
            scale = statistics.median(seen) / statistics.fmean(times[size])
            p = predict_capacity({k: [t * scale for t in v] for k, v in times.items()}, bound_ms=bound_ms,
                                 percentile=percentile, max_batch=record["batch_size"])
            return {"search_speed_scale": scale, "scaled_from_batch_size": size, "predicted_qps_at_search_speed": p.qps,
                    "at_search_speed_over_measured": p.qps / record["capacity_qps"] if p.qps else None}
    return {}


def progress_bracket_s(run_dir: Path) -> float | None:
    """Seconds from the search's first line ("capacity search from", after the ceiling's probe) to its last
    short step's line in progress.log: the time to a bracket, the final runs that sign it left out, read the
    same way for runs made before ``bracket_s`` was recorded."""
    stamps = {"start": None, "last": None}
    for line in (run_dir / "progress.log").read_text().splitlines():
        stamp, _, text = line.partition(" ")
        if "capacity search from" in text:
            stamps["start"] = datetime.fromisoformat(stamp)
        elif stamps["start"] and " QPS: " in text and "(final run)" not in text:
            stamps["last"] = datetime.fromisoformat(stamp)
    return (stamps["last"] - stamps["start"]).total_seconds() if stamps["last"] else None


def part_b(runs: Path) -> dict:
    found = {}
    for start in ("ceiling", "predicted"):
        server = [r for r in records(runs / f"b-p99-{start}" / "results.jsonl") if r["scenario"] == "server"]
        found[start] = search_fields(server[-1]) | {"confidence": server[-1]["server"]["early_stopping"]["confidence"],
                                                    "progress_bracket_s": progress_bracket_s(runs / f"b-p99-{start}")}
    if found["ceiling"]["search_s"] and found["predicted"]["search_s"]:
        found["ceiling_over_predicted_search_s"] = found["ceiling"]["search_s"] / found["predicted"]["search_s"]
    if found["ceiling"]["progress_bracket_s"] and found["predicted"]["progress_bracket_s"]:
        found["ceiling_over_predicted_bracket_s"] = (found["ceiling"]["progress_bracket_s"]
                                                     / found["predicted"]["progress_bracket_s"])
    return found


def part_c(runs: Path) -> dict:
    """The two searches in virtual time (a fake model whose batch of one takes the tiny checkpoint's measured
    single-stream times in turn), under MLPerf's p99 rule at 0.99 confidence (459 requests a step)."""
    single = next(r for r in records(runs / "a-p90" / "results.jsonl")
                  if r["scenario"] == "single-stream" and r["backend"] == "transformers" and r["status"] == "ok")
    times = single["samples_ms"]
    bound = 3 * statistics.median(times)
    found = {"service_ms_from": "a-p90 transformers single-stream samples_ms, drawn at random (seed 0)", "service_ms": times,
             "bound_ms": bound, "percentile": 0.99, "confidence": 0.99,
             "max_duration_s": "1e5 (virtual time; at under 1 QPS a 459-request run does not fit the default 600 s)"}
    for start in ("ceiling", "predicted"):
        rng = random.Random(0)  # the same draws for both searches
        settings = ServerSettings(qps="auto", latency_bound_ms=bound, search_start=start, max_duration_s=1e5)
        m = get_scenario("server").measure(scenario_input(lambda n, rng=rng: rng.choice(times) / 1000.0, 1, settings)[0])
        searched = m.extra["capacity_search"]
        found[start] = {"capacity_qps": m.capacity_qps, "bracket": m.server["capacity_bracket"],
                        "steps": len(m.server["curve"]), "virtual_search_s": searched["search_s"],
                        "short_steps": sum(not step.get("final") for step in m.server["curve"]),
                        "virtual_bracket_s": searched["bracket_s"],
                        "stop": searched["stop"]}
    found["ceiling_over_predicted_search_s"] = found["ceiling"]["virtual_search_s"] / found["predicted"]["virtual_search_s"]
    found["ceiling_over_predicted_bracket_s"] = (found["ceiling"]["virtual_bracket_s"]
                                                 / found["predicted"]["virtual_bracket_s"])
    return found


def part_c_virtual(runs: Path) -> dict:
    """The searches of ``virtual.json`` (``predicted-capacity-r8/virtual.py``: a fake model drawing measured
    batch times whose speed changes after the probe, seeds x prediction errors): the time to a bracket from
    the ceiling over that prediction-first, per error and overall (geometric mean, median, range)."""
    found = json.loads((runs / "virtual.json").read_text())
    rows = found["rows"]
    modes = sorted({r["start"] for r in rows} - {"ceiling"})
    ceiling = {(r["error"], r["seed"]): r for r in rows if r["start"] == "ceiling"}
    out: dict = {"harness": found.get("harness"), "samples_ms": found["samples_ms"], "modes": {}}
    for mode in modes:
        mine = {(r["error"], r["seed"]): r for r in rows if r["start"] == mode}
        per_error, every = [], []
        for error in sorted({k[0] for k in mine}):
            keys = [k for k in mine if k[0] == error and k in ceiling]
            ratios = [ceiling[k]["bracket_s"] / mine[k]["bracket_s"] for k in keys]
            every += ratios
            per_error.append({
                "speed_error": error, "runs": len(keys),
                "prediction_over_capacity_median": statistics.median(
                    v for k in keys if (v := mine[k]["prediction_over_capacity"]) is not None),
                "short_steps_mean": statistics.fmean(mine[k]["short_steps"] for k in keys),
                "ceiling_short_steps_mean": statistics.fmean(ceiling[k]["short_steps"] for k in keys),
                "ceiling_over_predicted_bracket_s": {"geomean": statistics.geometric_mean(ratios),
                                                     "min": min(ratios), "max": max(ratios)}})
        out["modes"][mode] = {"per_error": per_error, "ceiling_over_predicted_bracket_s": {
            "geomean": statistics.geometric_mean(every), "median": statistics.median(every), "min": min(every),
            "max": max(every), "share_at_least_3x": sum(r >= 3 for r in every) / len(every), "runs": len(every)}}
    return out


def part_d() -> dict:
    """100 img/s at p99 <= 200 ms from the committed H200 baselines: one queue per GPU, devices = ceil(100 / QPS)."""
    recs = [r for d in ("gpu-nvidia-h200", "gpu-nvidia-h200-graphs")
            for r in records(ROOT / "reports" / "baselines" / d / "results.jsonl")]
    rows = []
    for key, preds in predictions(typed(recs), bound_ms=H200_BOUND_MS, percentile=H200_PERCENTILE).items():
        setting = dict(key)
        for p in preds:
            rows.append({"variant": setting["variant"], "dtype": setting["dtype"], "compile": setting["compile"],
                         "compile_vision": setting["settings.compile_vision"], "max_batch": p.max_batch,
                         "batch_sizes": list(p.batch_sizes), "qps_per_gpu": p.qps, "p99_ms": p.p_ms,
                         "gpus_for_100": math.ceil(H200_DEMAND / p.qps) if p.qps else None, "note": p.note})
    # what-if: the graphs baseline's batch 1 (CUDA graphs vision) and batch 128 (compiled vision, prefetch) taken
    # as one setting, sizes 2..127 interpolated between them (no size between was measured)
    graphs = [r for r in records(ROOT / "reports" / "baselines" / "gpu-nvidia-h200-graphs" / "results.jsonl")
              if r["status"] == "ok" and r["dtype"] == "fp16"]
    merged: dict[int, list[float]] = {}
    for sizes in batch_times(typed(graphs)).values():
        merged.update(sizes)
    what_if = []
    for max_batch, instances in ((1, 2), (4, 1), (8, 1), (16, 1)):
        p = predict_capacity(merged, bound_ms=H200_BOUND_MS, percentile=H200_PERCENTILE, max_batch=max_batch,
                             instances=instances)
        what_if.append({"max_batch": max_batch, "instances": instances, "batch_sizes": list(p.batch_sizes),
                        "qps_per_gpu": p.qps, "p99_ms": p.p_ms,
                        "gpus_for_100": math.ceil(H200_DEMAND / p.qps) if p.qps else None, "note": p.note})
    return {"basis": Prediction.BASIS, "bound_ms": H200_BOUND_MS, "percentile": H200_PERCENTILE,
            "demand_qps": H200_DEMAND, "per_setting": rows, "what_if_graphs_bs1_and_bs128_as_one_setting": what_if}


def host(runs: Path) -> dict:
    loads = [float(line.split()[1]) for line in (runs / "load.log").read_text().splitlines() if line.strip()]
    return {"cpus": os.cpu_count(), "load_1min": {"min": min(loads), "median": statistics.median(loads),
                                                  "max": max(loads), "samples": len(loads), "every_s": 30},
            "note": os.environ.get("HOST_NOTE", "shared machine: other engineers' tests and runs on the same 2 cores "
                                                "throughout")}


def main() -> None:
    runs = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/predicted-capacity-runs")
    parts = {"host": host(runs),
             "a_predicted_vs_measured": [row for name in A_RUNS if (runs / name / "results.jsonl").exists()
                                         for row in part_a(runs, name)]}
    part_c_of = part_c_virtual if (runs / "virtual.json").exists() else part_c
    for name, part in (("b_time_to_bracket_measured", part_b), ("c_time_to_bracket_virtual", part_c_of)):
        try:
            parts[name] = part(runs)
        except (FileNotFoundError, StopIteration, IndexError) as e:
            parts[name] = {"missing": f"{type(e).__name__}: {e}"}
    parts["d_h200_baselines"] = part_d()
    print(json.dumps(parts, indent=2, default=float))


if __name__ == "__main__":
    main()
