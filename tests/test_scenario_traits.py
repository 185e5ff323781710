"""Scenarios declare how their cells are judged (``ScenarioTraits``), and nothing else branches on a name.

Every reader of records asks a record's traits (``bench.scenarios.traits_of``); a scan of the source
checks that no module outside ``bench/scenarios/`` compares a scenario's name, and a scenario registered
here, under a name no reader has heard of, is judged by its declaration alone.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.regression import gates, values
from bench.regression.history import detect
from bench.report import decision
from bench.report.report_rows import Row
from bench.results import Record
from bench.scenarios import SCENARIOS, ScenarioTraits, takes_load, traits_for, traits_of
from bench.scenarios.traits import UNKNOWN

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "report"))
from report_factory import make_record, make_server_record  # noqa: E402

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _names(node: ast.AST) -> set[str]:
    """The string constants of a literal: a string, or a tuple, list or set of them."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return {v for e in node.elts for v in _names(e)}
    return set()


def _tests_a_name(node: ast.AST, names: set[str]) -> bool:
    if isinstance(node, ast.Compare):
        return any(_names(o) & names for o in (node.left, *node.comparators))
    if isinstance(node, ast.MatchValue):
        return bool(_names(node.value) & names)
    if isinstance(node, ast.Dict):  # a table by scenario: every key a scenario's name (``**spread`` is None)
        keys = [_names(k) if k is not None else set() for k in node.keys]
        return bool(keys) and all(k and k <= names for k in keys)
    return False


def name_tests(source: str, names: set[str]) -> list[int]:
    """Lines that branch on a scenario's name: a comparison or membership test with one as an operand, a
    ``case`` on one, or a table keyed by scenario names only (``{"offline": ..., "server": ...}``).
    A name as a default value, a record key, a help text or a docstring is not a test of it."""
    return sorted(node.lineno for node in ast.walk(ast.parse(source)) if _tests_a_name(node, names))


def test_no_module_outside_the_scenarios_compares_a_scenario_name():
    names = set(SCENARIOS)
    scanned, offenders = 0, []
    for path in sorted(BENCH.rglob("*.py")):
        if (BENCH / "scenarios") in path.parents:
            continue
        scanned += 1
        offenders += [f"{path.relative_to(BENCH.parent)}:{line}" for line in name_tests(path.read_text(), names)]
    assert scanned > 30  # the scan saw the code base
    assert not offenders, "branch on the record's traits (bench.scenarios.traits_of) instead: " + ", ".join(offenders)


def test_the_scan_finds_branches_on_a_name_and_not_its_mentions():
    source = '''
"""Runs single-stream at batch 1, else offline."""
DEFAULT = "single-stream"
SECTIONS = {"repetition": 1, "server": 2}
BASIS = {"offline": "a", "server": "b"}
HELP = dict(help="one of single-stream, offline, server")

def f(r, record, config):
    record["server"] = None
    if r.scenario == "server":
        pass
    if "offline" != r.get("scenario"):
        pass
    if "server" in (config.scenarios or ()):
        pass
    if r.scenario in ("offline", "single-stream"):
        pass
    match r.scenario:
        case "single-stream":
            pass
    return "p99" if r.scenario == "server" else "p90"
'''
    assert name_tests(source, set(SCENARIOS)) == [5, 10, 12, 14, 16, 19, 21]


def test_each_scenario_declares_what_a_buyer_reads():
    single, offline, server = (SCENARIOS[n].traits for n in ("single-stream", "offline", "server"))
    assert (single.reads, single.bound_statistic, single.latency_per, single.closed_loop) == (
        "latency", "p90", "batch", True)
    assert (offline.reads, offline.bound_statistic, offline.latency_per, offline.closed_loop) == (
        "throughput", None, "batch", True)
    assert (server.reads, server.bound_statistic, server.latency_per, server.closed_loop) == (
        "capacity", "p99", "request", False)
    assert single.prefetch is None and "only when the last completed" in single.no_prefetch
    assert offline.prefetch and server.prefetch
    assert takes_load(["single-stream", "server"]) and not takes_load(["offline", "single-stream", "nope"])


def test_a_record_without_a_scenario_is_judged_by_the_default_rule():
    assert traits_for(None, 1) == SCENARIOS["single-stream"].traits
    assert traits_for(None, 8) == SCENARIOS["offline"].traits
    assert traits_for(None, "8") == SCENARIOS["single-stream"].traits  # untrusted input: no crash
    for name in ("multi-stream", 7, ["server"]):
        assert traits_for(name, 1) is UNKNOWN


def _record(**fields: object) -> Record:
    return Record.from_dict({"cell_id": "c", "status": "ok", "batch_size": 4, **fields})


@pytest.mark.parametrize("percentile, statistic", [(0.95, "p95"), (0.999, "p99.9"), (1, "p99"), (95, "p99"),
                                                   (True, "p99"), ("0.95", "p99"), (None, "p99")])
def test_a_server_records_settings_set_its_judged_percentile(percentile, statistic):
    traits = traits_of(_record(scenario="server", server={"latency_percentile": percentile}))
    assert traits.statistic == traits.bound_statistic == statistic
    assert traits_of(_record(scenario="server")).statistic == "p99"
    # a closed-loop scenario takes no percentile from a server table
    assert traits_of(_record(scenario="offline", server={"latency_percentile": 0.95})).statistic == "p90"


def test_traits_refuse_a_declaration_that_says_nothing_of_prefetch_or_reads_nonsense():
    good = dict(reads="latency", statistic="p90", meets_bound=True, latency_per="batch", closed_loop=True)
    with pytest.raises(ValueError, match="prefetch"):
        ScenarioTraits(**good, prefetch=None)
    with pytest.raises(ValueError, match="reads"):
        ScenarioTraits(**{**good, "reads": "speed"}, prefetch="ahead")
    with pytest.raises(ValueError, match="latency_per"):
        ScenarioTraits(**{**good, "latency_per": "image"}, prefetch="ahead")


def _row(record: dict) -> Row:
    return Row(Record.from_dict(record), "run", "NVIDIA H100")


def test_a_capacity_is_judged_on_the_percentile_the_record_names():
    # the factory's curve at 30 ms service, saturating at 200 requests/s: steps at 60, 120, 160... requests/s
    # with p99 42.9, 75, 150 ms and p90 = p99 / 1.5 = 28.6, 50, 100 ms; its search aimed at p99 <= 100 ms
    rec = json.loads(make_server_record(service_ms=30.0, qps_max=200.0, bound_ms=100.0).to_json())
    assert _row(rec).capacity(60.0) == (60.0, "highest valid step of the capacity curve with p99 ≤ 60 ms")
    assert _row(rec).capacity(100.0) == (120.0, "capacity search, p99 ≤ 100 ms")
    rec["server"]["latency_percentile"] = 0.9
    assert _row(rec).capacity(60.0) == (120.0, "highest valid step of the capacity curve with p90 ≤ 60 ms")
    assert _row(rec).capacity(100.0) == (120.0, "capacity search, p90 ≤ 100 ms")
    assert _row(rec).bound_statistic == "p90"


class _MultiStream:
    """A scenario no reader has heard of: a closed loop judged on its p95, under a bound."""

    name = "multi-stream"
    measures = "a fixed number of streams"
    traits = ScenarioTraits(reads="latency", statistic="p95", meets_bound=True, latency_per="batch",
                            closed_loop=True, prefetch="the next batch prepared ahead")


def test_a_new_scenario_is_judged_by_its_declaration_alone(monkeypatch):
    monkeypatch.setitem(SCENARIOS, "multi-stream", _MultiStream())
    rec = json.loads(make_record(batch_size=4, p50=10.0, scenario="multi-stream").to_json())
    rec["latency_ms"]["p95"] = 55.0
    row = _row(rec)
    # the report: its bound judges p95, the latency goal reads p95, it has a throughput and no capacity
    assert row.bound_statistic == "p95" and row.bound_latency == 55.0 and row.meets_bound(60.0)
    goals = {g.name: g for g in decision.GOALS}
    assert goals["latency"].value(row, None) == 55.0 and goals["latency"].show(55.0, row, None) == "55 ms p95"
    assert goals["throughput"].value(row, None) == row.ips and row.capacity(100.0) is None
    # compare and history: a closed loop with one sample per batch, so throughput comes from the samples
    typed = Record.from_dict(rec)
    samples = values.samples_of(typed)
    assert values.point_value(typed, "throughput") == pytest.approx(4 * 1000 / float(np.median(samples)))
    assert detect.sample_se(typed, "throughput") > 0
    open_loop = dataclasses.replace(_MultiStream.traits, closed_loop=False)
    monkeypatch.setattr(_MultiStream, "traits", open_loop)
    assert values.point_value(typed, "throughput") == rec["throughput"]["images_per_s"]
    assert detect.sample_se(typed, "throughput") == 0.0 and goals["throughput"].value(_row(rec), None) is None


def test_a_gate_metrics_standard_error_factor_is_on_its_spec():
    # sqrt(q (1 - q)) / phi(z_q): sqrt(pi / 2) for the median, 1.7094 for p90 (docs/history.md)
    assert gates.METRICS["latency_p50"].se_factor == pytest.approx(math.sqrt(math.pi / 2))
    assert gates.METRICS["throughput"].se_factor == pytest.approx(math.sqrt(math.pi / 2))
    assert gates.METRICS["latency_p90"].se_factor == pytest.approx(1.7094, abs=1e-4)
    assert gates.METRICS["peak_memory"].se_factor is None and gates.metric_spec("accuracy.cider").se_factor is None


def test_history_reads_compare_only_through_public_names():
    private = []
    for path in sorted((BENCH / "history").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "compare"
                    and node.attr.startswith("_")):
                private.append(f"{path.name}:{node.lineno} compare.{node.attr}")
    assert not private, private
