"""Issue 12's targets: each measured from CUDA records of exactly the targets' work, met or not, or
"not measured" with the reason; and the GPU check's plan and budget gate."""

from __future__ import annotations

import dataclasses
import json
from array import array

import pytest

from bench.results import Record, store
from bench.run.sweep import SweepConfig
from bench.tools import gpucheck, targets


def _full(r: dict) -> dict:
    """A synthetic record with every field a store.Record needs."""
    fields = {"checkpoint": "random:" + r["variant"], "weights": "random", "dataset": "synthetic-smoke",
              "n_images": 16, "attn": "sdpa"}
    return {**fields, **r}


def _record(cell_id: str, variant: str = "base", scenario: str = "offline", device: str = "cuda", **fields) -> Record:
    base = {"cell_id": cell_id, "status": "ok", "variant": variant, "task": "<CAPTION>", "num_beams": 3,
            "max_new_tokens": 20, "device": device, "dtype": "fp16", "batch_size": 128 if scenario == "offline" else 1,
            "scenario": scenario, "compile": False, "settings": {"cache": "dynamic", "preprocess": "device",
                                                                  "prefetch": scenario == "offline"},
            "throughput": {"images_per_s": 100.0}, "latency_ms": {"p50": 100.0}, "extra": {},
            "samples_ms": [400.0 + (i % 3) for i in range(12)]}  # steady batches: a tight interval
    return Record.from_dict(_full({**base, **fields}))


RECORDS = [
    _record("a", throughput={"images_per_s": 320.0},
            extra={"roofline": {"fraction": 0.30, "vision_gflops_per_s": 190e3, "matmul_gflops_per_s": 640e3,
                                "matmul_dtype": "fp16", "matmul_n": 8192}}),
    _record("b", throughput={"images_per_s": 250.0}),
    _record("c", scenario="single-stream", latency_ms={"p50": 45.0}, samples_ms=[44.0, 45.0, 46.0] * 4),
    _record("d", scenario="single-stream", latency_ms={"p50": 38.0}, max_new_tokens=10),  # other work: ignored
    _record("e", variant="large", device="cpu", throughput={"images_per_s": 500.0}),  # not a GPU: ignored
    _record("f", variant="large", status="skipped", throughput=None),
]


def _by_key(results):
    return {r.key: r.to_dict() for r in results}


def _evaluate(records, perf, **kwargs):
    """``targets.evaluate`` of records and a parsed perf.json."""
    return targets.evaluate(records, targets.PerfSummary.from_dict(perf), **kwargs)


JUDGED_PERF = {"speedup_interval": {"low": 30.4, "high": 32.0}, "self_check": []}


def test_each_target_is_measured_met_or_not_from_the_right_records():
    perf = {"device": "cuda", "speedup": 31.2, "best": "base fp16 batch 128", "measured": 7, **JUDGED_PERF}
    results = _by_key(_evaluate(RECORDS, perf))
    assert results["base_offline"]["value"] == 320.0 and results["base_offline"]["verdict"] == "met"
    assert "cell a" in results["base_offline"]["source"]
    single = results["base_single_stream_p50"]
    assert single["value"] == 45.0 and single["verdict"] == "NOT met" and single["goal"] == "<= 40 ms"
    large = results["large_offline"]
    assert large["value"] is None and large["verdict"] == "not measured" and "(large: 1 ok record(s) on cpu)" in large["source"]
    assert results["perf_speedup"]["verdict"] == "met" and results["perf_speedup"]["value"] == 31.2
    vision = results["vision_roofline"]
    assert vision["value"] == pytest.approx(0.30) and vision["verdict"] == "NOT met"
    assert "8192² matrix product" in vision["source"]
    assert results["base_offline"]["low"] == pytest.approx(320.0 * 401 / 402)  # the median batch's interval


def test_a_target_is_met_only_when_judged_and_its_interval_clears_it():
    """perf's own self-check travels with its speedup; the records' targets are not judged on a busy host."""
    perf = {"device": "cuda", "speedup": 31.2, "best": "b", "measured": 7, **JUDGED_PERF}
    unsure = _by_key(_evaluate(RECORDS, {**perf, "speedup_interval": {"low": 28.0, "high": 33.0}}))
    assert unsure["perf_speedup"]["verdict"] == "NOT met" and "lower end is 28" in unsure["perf_speedup"]["why"][0]
    noisy = {**perf, "self_check": ["the A/A control read 0.52x, outside 1 ± 0.10"]}
    assert _by_key(_evaluate(RECORDS, noisy))["perf_speedup"]["why"] == noisy["self_check"]
    old = _by_key(_evaluate(RECORDS, {"device": "cuda", "speedup": 31.2}))["perf_speedup"]
    assert old["verdict"] == "not judged" and "no self-check" in old["why"][0]
    busy = {"cores": 16, "start": [12.0, 9.0, 8.0], "end": None}
    results = _by_key(_evaluate(RECORDS, perf, host_load=busy))
    assert results["base_offline"]["verdict"] == "not judged"
    assert results["base_offline"]["why"] == ["the host was busy (1-min load 12.00 at start, on 16 cores (busy at start))"]
    assert results["perf_speedup"]["verdict"] == "met"  # perf read its own load
    assert results["large_offline"]["verdict"] == "not measured"
    few = _by_key(_evaluate([dataclasses.replace(RECORDS[0], samples_ms=array("d", [400.0, 401.0]))],
                            perf))["base_offline"]
    assert few["verdict"] == "not judged" and few["why"] == ["the figure has no interval"]


def test_without_a_gpu_nothing_is_met():
    cpu = [dataclasses.replace(r, device="cpu") for r in RECORDS]
    results = _evaluate(cpu, {"device": "cpu", "speedup": 2.5})
    assert {r.verdict for r in results} == {"not measured"}
    assert "measured on 'cpu', not a CUDA device" in _by_key(results)["perf_speedup"]["source"]
    reason = _by_key(_evaluate(RECORDS, {"device": "cuda", "speedup": None,
                                                "why_no_speedup": "no harness setting was measured: 7 skipped"}))
    assert reason["perf_speedup"]["source"].endswith("no harness setting was measured: 7 skipped")


def test_evaluate_run_writes_targets_json_and_the_command_prints_them(tmp_path, capsys):
    for r in RECORDS:
        store.append(tmp_path, r)
    (tmp_path / targets.PERF_FILE).write_text(json.dumps({"device": "cuda", "speedup": 12.0, "measured": 6,
                                                          "speedup_interval": {"low": 11.5, "high": 12.5},
                                                          "self_check": []}))
    assert targets.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "targets: 1 met, 3 not met, 0 not judged, 1 not measured" in out
    written = json.loads((tmp_path / targets.TARGETS_FILE).read_text())
    assert written["work"]["max_new_tokens"] == 20 and len(written["targets"]) == 5
    records = list(store.latest_by_cell(store.records(tmp_path)).values())  # as gpucheck passes them
    assert [r.to_dict() for r in targets.evaluate_run(tmp_path, records=records)] == written["targets"]
    assert targets.main([str(tmp_path / "nowhere")]) == 2


def test_a_hostile_perf_json_reads_as_no_figure():
    """perf.json is untrusted JSON: a figure that is no number, or a table that is no object, is None."""
    summary = targets.PerfSummary.from_dict({"device": "cuda", "speedup": "fast", "speedup_interval": [1, 2],
                                             "self_check": "ok"})
    assert (summary.speedup, summary.low, summary.high, summary.self_check) == (None, None, None, None)
    assert targets.PerfSummary.from_dict([]) == targets.PerfSummary(None, None)
    measured = _by_key(_evaluate(RECORDS, {"device": "cuda", "speedup": "fast"}))["perf_speedup"]
    assert measured["verdict"] == "not measured" and measured["value"] is None


def test_the_plan_runs_target_cells_first_without_duplicates_and_caps_batches():
    config = SweepConfig(variants=["base", "large"], dtypes=["fp32", "fp16"], batch_sizes=[1], devices=["cuda"],
                         weights="random", limit=2, num_beams=[3])
    cells = gpucheck.plan(config, targets=True, variant_map=None)
    assert len({c.cell_id for c in cells}) == len(cells)
    eager = [c for c in cells if not (c.compile or c.compile_vision)]
    first_compiled = next(i for i, c in enumerate(cells) if c.compile or c.compile_vision)
    assert all(c.prefetch for c in cells[:first_compiled] if c.batch_size > 1)
    assert {(c.variant, c.batch_size) for c in cells[:first_compiled]} >= {("base", 64), ("base", 128),
                                                                          ("large", 64), ("large", 128)}
    assert cells[first_compiled].compile == "graphs" and cells[first_compiled].batch_size == 1
    assert ("large", "fp32", 1) in {(c.variant, c.dtype, c.batch_size) for c in eager}  # plausibility cells too
    dry = dataclasses.replace(config, variants=["custom"])
    capped = gpucheck.plan(dry, targets=True, variant_map={"base": "custom", "large": "custom"}, max_batch_size=2)
    assert max(c.batch_size for c in capped) == 2 and {c.variant for c in capped} == {"custom"}
    assert len({c.cell_id for c in capped}) == len(capped)


def test_the_budget_gate_refuses_what_does_not_fit():
    now = [0.0]
    gate = gpucheck.budget_gate(100.0, eager_s=15.0, compiled_s=90.0, clock=lambda: now[0])
    eager = SimpleCell(compile=False, compile_vision=False)
    compiled = SimpleCell(compile="graphs", compile_vision=False)
    assert gate(eager) is None and gate(compiled) is None
    now[0] = 20.0
    assert gate(eager) is None
    assert "80 s of the GPU check's 100 s budget left, a compiled cell is estimated at 90 s" in gate(compiled)
    now[0] = 95.0
    assert "an eager cell" in gate(eager)
    assert gpucheck.budget_gate(None, 15.0, 90.0)(compiled) is None
    same = gpucheck.budget_gate(10.0, eager_s=15.0, compiled_s=15.0)  # equal estimates: named by the cell
    assert "an eager cell is estimated at 15 s" in same(eager) and "a compiled cell" in same(compiled)


@dataclasses.dataclass
class SimpleCell:
    compile: bool | str
    compile_vision: bool | str
