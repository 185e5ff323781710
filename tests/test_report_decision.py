"""The report's decision, answer numbers, comparability panel and chart conventions, on two synthetic
machines' runs (an H100 and a 2-core CPU, all three scenarios) whose answers are worked out by hand."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import pytest

from bench.pages.page import LOG_SPAN, Palette, axis_type
from bench.report import answer, report, report_charts, report_table
from bench.report.capacity_options import SERVER_BASIS
from bench.report.decision import decide, recommend
from bench.report.question import Question

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "report"))
from report_factory import (  # noqa: E402
    HOSTILE,
    figures,
    gpu_and_cpu_runs,
    make_record,
    make_server_record,
    server_curve,
    write_run,
)

H100_PER_HOUR = 3.00  # bench/data/prices.toml, "NVIDIA H100 80GB HBM3"
CPU_PER_HOUR = 2 * 0.045  # 2 cores used × the default table's usd_per_vcpu_hour


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return gpu_and_cpu_runs(tmp_path_factory.mktemp("machines"))


@pytest.fixture(scope="module")
def rows(runs):
    return [r for run in report.load_runs(list(runs), report.load_prices()) for r in run.rows]


def _decision(rows, bound):
    (decision,) = decide(rows, bound, answer.answer(rows, Question(bound)))
    gpu, cpu = decision.kinds
    assert gpu.label == "NVIDIA H100 80GB HBM3" and cpu.label == "CPU Synthetic CPU @ 2.0GHz (2 cores used)"
    return decision, gpu, cpu


def _goal(decision, name):
    return next(g for g in decision.goals if g.name == name)


def test_the_server_curve_of_the_factory_is_what_the_hand_calculation_says():
    # p99 = service / (1 - q / qps_max): 30 ms at 60 requests/s of 200 -> 42.9 ms, at 120 -> 75 ms, at 160 -> 150 ms
    curve, capacity = server_curve(30.0, 100.0, 200.0)
    assert [round(s["p99"], 1) for s in curve[:3]] == [42.9, 75.0, 150.0]
    assert capacity == 120.0


def test_decision_per_goal_and_device_kind_by_hand(rows):
    decision, gpu, cpu = _decision(rows, 100.0)
    assert [g.name for g in decision.goals] == [
        "throughput", "latency", "capacity", "cost", "cost_within_bound", "energy"
    ]
    # highest throughput: large fp16 bs32 offline at 1000 / 1.5 ms = 667 images/s, but it is unstable,
    # so the pick carries the flag and names the best stable setting: base bs32 at 1000 / 2.5 = 400 images/s
    pick = decision.pick(_goal(decision, "throughput"), gpu)
    assert pick.row.rec.variant == "large" and pick.row.rec.batch_size == 32
    assert pick.row.flags == ["unstable"] and "667 images/s" in pick.text
    assert "Best stable: h100 base cuda fp16 bs32 offline, 400 images/s" in pick.note
    cpu_pick = decision.pick(_goal(decision, "throughput"), cpu)
    assert cpu_pick.row.rec.batch_size == 4 and cpu_pick.row.ips == pytest.approx(1000 / 700)
    # lowest single-stream p90: base bs1 on each device (an offline or server cell never counts)
    for kind in (gpu, cpu):
        pick = decision.pick(_goal(decision, "latency"), kind)
        assert pick.row.scenario == "single-stream" and pick.row.rec.variant == "base"
    # highest server capacity within 100 ms: base bs8 at 120 requests/s (large reaches only 36);
    # the CPU's capacity search aimed at 5000 ms and no step came under 100 ms
    pick = decision.pick(_goal(decision, "capacity"), gpu)
    assert pick.row.rec.variant == "base" and pick.row.capacity(100.0)[0] == 120.0
    assert "120 requests/s" in pick.text and pick.row.flags == []
    cpu_pick = decision.pick(_goal(decision, "capacity"), cpu)
    assert cpu_pick.row is None and "no valid server run with p99 ≤ 100 ms" in cpu_pick.text
    assert "5000 ms" in cpu_pick.text
    # lowest cost per million images: $3.00/h / 3600 / 666.7 images/s × 1e6 = $1.25 (unstable: flagged)
    pick = decision.pick(_goal(decision, "cost"), gpu)
    assert _goal(decision, "cost").value(pick.row, 100.0) == pytest.approx(H100_PER_HOUR / 3600 / (1000 / 1.5) * 1e6)
    assert "$1.25" in pick.text and "source: example" in pick.text
    cpu_pick = decision.pick(_goal(decision, "cost"), cpu)
    assert _goal(decision, "cost").value(cpu_pick.row, 100.0) == pytest.approx(CPU_PER_HOUR / 3600 / (1000 / 700) * 1e6)
    # the answer's pick: the base server at its capacity, $3.00/h / 3600 / 120 × 1e6 = $6.94 (a single-stream
    # cell's throughput is no capacity under random arrivals; its setting has a server cell); the CPU has none
    pick = decision.pick(_goal(decision, "cost_within_bound"), gpu)
    assert pick.row.scenario == "server" and "$6.94" in pick.text and SERVER_BASIS in pick.text
    cpu_pick = decision.pick(_goal(decision, "cost_within_bound"), cpu)
    assert cpu_pick.row is None and "no valid server run with p99 ≤ 100 ms" in cpu_pick.text
    # lowest energy: 0.09 J × 1.5 ms-per-image = 0.135 J (the unstable large bs32 again, flagged)
    pick = decision.pick(_goal(decision, "energy"), gpu)
    assert pick.row.joules == pytest.approx(0.135) and "7.41 images/J" in pick.text
    assert decision.pick(_goal(decision, "energy"), cpu).text == "not measured"


def test_without_a_bound_capacity_is_the_records_own_and_the_answers_pick_rests_on_it(rows):
    decision, gpu, cpu = _decision(rows, None)
    pick = decision.pick(_goal(decision, "cost_within_bound"), cpu)
    assert pick.row.scenario == "server" and "0.960 requests/s" in pick.text
    assert decision.pick(_goal(decision, "capacity"), cpu).row.capacity(None)[0] == pytest.approx(0.96)


def test_capacity_under_another_bound_comes_from_the_curve(rows):
    server = next(r for r in rows if r.scenario == "server" and r.rec.variant == "base" and r.kind.kind == "gpu")
    assert server.capacity(None) == (120.0, "capacity search, p99 ≤ 100 ms")
    assert server.capacity(100.0)[0] == 120.0
    qps, how = server.capacity(50.0)  # only the 60 requests/s step (42.9 ms) is within 50 ms
    assert qps == 60.0 and "capacity curve" in how
    assert server.capacity(10.0) is None
    offline = next(r for r in rows if r.scenario == "offline")
    assert offline.capacity(None) is None and not offline.meets_bound(1e9)


def test_answer_numbers_by_hand(rows):
    full = {a.kind.kind: a for a in answer.answer(rows, Question(demand_qps=500.0, max_utilisation=1.0))}
    gpu, cpu = full["gpu"], full["cpu"]
    # H100: base bs8 serves 120 requests/s (large only 36): ceil(500 / 120) = 5 devices at 100% utilisation
    assert gpu.option.capacity == 120.0 and gpu.devices == 5 and gpu.option.basis == SERVER_BASIS
    assert gpu.usd_per_month == pytest.approx(5 * H100_PER_HOUR * 730)  # 10,950
    # one cost per setting: the setting's own, the same figure the decision's cost goals use
    assert gpu.usd_per_million == pytest.approx(H100_PER_HOUR / 3600 / 120 * 1e6)  # 6.94
    assert gpu.utilisation == pytest.approx(500 / (5 * 120))
    # the 2-core CPU: 0.96 requests/s -> ceil(500 / 0.96) = 521 machines at 2 × $0.045/h
    assert cpu.option.capacity == pytest.approx(0.96) and cpu.devices == 521
    assert cpu.usd_per_month == pytest.approx(521 * CPU_PER_HOUR * 730)
    assert gpu.overall and not cpu.overall  # $10,950 < $34,230 a month
    # at the default 80%: ceil(500 / 96) = 6 H100s, ceil(500 / 0.768) = 652 CPUs
    headroom = {a.kind.kind: a for a in answer.answer(rows, Question(demand_qps=500.0))}
    assert (headroom["gpu"].devices, headroom["cpu"].devices) == (6, 652)
    assert headroom["gpu"].utilisation == pytest.approx(500 / 720) and headroom["gpu"].utilisation <= 0.8
    # an exact multiple needs no extra device
    assert {a.kind.kind: a.devices for a in answer.answer(rows, Question(demand_qps=192.0))}["gpu"] == 2
    # under a 100 ms bound the CPU has no capacity: no devices, and the reason
    bounded = {a.kind.kind: a for a in answer.answer(rows, Question(100.0, demand_qps=500.0))}
    assert bounded["cpu"].option is None and bounded["cpu"].devices is None and "p99 ≤ 100 ms" in bounded["cpu"].note
    # no demand given: one device of the best option at 80% (the lowest cost per million images: base bs8)
    default = {a.kind.kind: a for a in answer.answer(rows, Question(100.0))}
    assert default["gpu"].demand_qps == pytest.approx(96.0) and default["gpu"].devices == 1


def test_the_page_opens_with_the_decision_then_the_collapsed_environment(runs, tmp_path):
    text = report.build_report(list(runs), tmp_path / "r.html", latency_bound_ms=100, demand_qps=500).read_text()
    main = text[text.index("<main>") :]
    assert main.index('<section id="decision"') == main.index("<section")
    assert main.index('<section id="decision"') < main.index('<section id="environment"') < main.index(
        'class="plotly-graph-div"'
    )
    decision = main[: main.index('<section id="environment"')]
    # every pick says its weights mode and its stability
    assert decision.count("random weights</span>") >= 8
    # every pick shows the interval of its judged figure and its sample count; 203 requests are too few for a p99
    assert "⚠ unstable" in decision and ">valid</span>" in decision
    assert "not enough samples for a p99 interval: n = 203, 368 needed" in decision
    assert "throughput 95% CI" in decision and "(n = 12)" in decision
    # the environment is collapsed under it; what differs between the machines is listed
    env = main[main.index('<section id="environment"') : main.index('<section id="summary"')]
    assert "<details open" not in env.replace('<details id="comparability" open', "")
    panel = env[env.index('id="comparability-table"') :]
    for fact in ("commit", "torch", "GPU", "CPU cores used (torch threads)", "NVIDIA driver"):
        assert re.search(rf'<tr class="differs"><th>{re.escape(fact)}</th>', panel), fact
    assert '<tr class=""><th>transformers</th>' in panel
    assert "These runs differ in commit, torch" in decision


def test_random_weights_agreement_is_labelled_a_stress_test_never_quality(tmp_path):
    texts = {"extra": {"texts": {"1": "a cat", "2": "a dog"}}}
    fp32 = make_record("base", device="cpu", dtype="fp32", weights="random", seed=1)
    bf16 = make_record("base", device="cpu", dtype="bf16", weights="random", seed=1)
    fp32.extra = {**fp32.extra, "texts": texts["extra"]["texts"]}
    bf16.extra = {**bf16.extra, "texts": {"1": "a cat", "2": "noise"}}
    run = write_run(tmp_path / "run", [fp32, bf16], gpu=None)
    text = report.build_report([run], tmp_path / "r.html").read_text()
    table = text[text.index('id="all-cells"') :]
    assert "agreement with fp32 outputs (random weights: a numerical stress test, not quality)" in table
    block = text[text.index('id="all-cells-data">') + len('id="all-cells-data">') :]
    rows = json.loads(block[: block.index("</script>")])["rows"]
    column = 1 + [c.header for c in report_table.COLUMNS].index("fp32 agreement")
    assert "50.0% <small class=\"muted\">(stress test)</small>" in [row[column][0] for row in rows]
    assert "stress test of bf16 precision, never a measure of quality" in text


def _figures(chart) -> tuple[list[dict], dict]:
    """The data and layout plotly will draw, parsed from the embedded div."""
    return figures(str(chart.html))[0]


def test_every_chart_marks_unstable_or_invalid_cells(rows):
    charts = report_charts.build_charts(rows, 100.0, {"<CAPTION>": "coco_caption_cider"}, report.REPORTED_LABEL)
    # every chart of cells (the parameters-vs-reported chart has one point per variant, not per cell)
    flat = [c for section in charts.values() for c in section if c.title != report.REPORTED_LABEL]
    assert len(flat) >= 10
    unstable = next(r for r in rows if r.unstable)
    with_it = 0
    for chart in flat:
        data, _ = _figures(chart)
        drawn = json.dumps(data, ensure_ascii=False)
        if unstable.setting in drawn:
            with_it += 1
            assert "⚠" in drawn, chart.title
        if "server" in chart.title or "QPS" in chart.title:
            assert "invalid step" in drawn  # the capacity search's steps over the bound
    assert with_it >= 9


def test_charts_use_log_axes_distinct_colours_and_lines_across_batch_sizes(rows):
    charts = report_charts.build_charts(rows, 100.0, {"<CAPTION>": "coco_caption_cider"}, report.REPORTED_LABEL)
    # throughput vs request latency spans 1.1 to 667 images/s: both axes log, the bound drawn
    data, layout = _figures(charts["tradeoff"][0])
    assert layout["xaxis"]["type"] == "log" and layout["yaxis"]["type"] == "log"
    bound = next(t for t in data if t["name"].startswith("latency bound"))
    assert bound["x"] == [100.0, 100.0]
    # one line per setting across its offline batch sizes 8 and 32; its single-stream point (batch 1, another
    # scenario) stands alone in the same colour, one legend entry for both
    data, _ = _figures(charts["throughput"][0])
    base = [t for t in data if t["name"] == "h100 base cuda fp16"]
    assert [(t["x"], t["mode"], t.get("showlegend", True)) for t in base] == [
        ([1], "markers", True), ([8, 32], "lines+markers", False)]
    assert base[0]["marker"]["color"] == base[1]["marker"]["color"] and base[0]["marker"]["symbol"].endswith("-open")
    lines = [t for t in data if t["mode"] == "lines+markers"]
    assert len({(t["line"]["color"], t["line"]["dash"]) for t in lines}) == len(lines)
    assert len({t["line"]["color"] for t in lines}) == len(lines)  # one dtype each here: colours alone differ
    # the latency-vs-QPS curve: one line per server setting, the bound as a horizontal line
    data, layout = _figures(charts["server"][0])
    curves = [t for t in data if t["mode"] == "lines+markers"]
    assert len(curves) == 3 and len({t["line"]["color"] for t in curves}) == 3
    bound = next(t for t in data if t["name"].startswith("latency bound"))
    assert bound["y"] == [100.0, 100.0] and layout["yaxis"]["type"] == "log"
    assert any("capacity" in t["name"] for t in data)
    # bars sorted best first with a legend entry per series (not "trace 0")
    energy = charts["energy"][0]
    data, layout = _figures(energy)
    order = layout["yaxis"]["categoryarray"]
    value = {y: x for t in data for y, x in zip(t["y"], t["x"], strict=True)}
    assert [value[y] for y in order] == sorted(value.values())
    assert all(t["name"] and not t["name"].startswith("trace") for t in data)
    per_joule = _figures(charts["energy"][1])
    order = per_joule[1]["yaxis"]["categoryarray"]
    value = {y: x for t in per_joule[0] for y, x in zip(t["y"], t["x"], strict=True)}
    assert [value[y] for y in order] == sorted(value.values(), reverse=True)
    # each device kind's price and its source stand under the cost chart
    cost_note = charts["cost"][0].note
    assert "NVIDIA H100 80GB HBM3: NVIDIA H100 80GB HBM3 at $3.00/h (source: example" in cost_note
    assert "CPU Synthetic CPU @ 2.0GHz (2 cores used): 2 vCPU × $0.045/vCPU-h" in cost_note
    # a card's accuracy is never drawn beside random weights (tests/test_answer.py: only at its own setting)
    assert not any("reported vs cost" in c.title for c in charts["size"])


def test_log_axis_rule_and_palette():
    assert axis_type([14.0, 20_678.0]) == "log"
    assert axis_type([10.0, 10.0 * LOG_SPAN]) == "linear"
    assert axis_type([1.0, 31.0]) == "log"
    assert axis_type([0.0, 5.0, None, math.nan]) == "linear"
    palette = Palette()
    colours = [palette(n) for n in range(60)]
    assert len(set(colours)) == 60 and palette(3) == colours[3]


def test_hostile_strings_in_server_fields_stay_text(tmp_path):
    rec = make_server_record(f"base{HOSTILE}", curve=False)
    rec.server.update(valid=False, invalid_reason=HOSTILE)
    run = write_run(tmp_path / "run", [rec, make_record("base", p50=10.0)])
    text = report.build_report([run], tmp_path / "r.html", latency_bound_ms=50, demand_qps=10).read_text()
    assert "<script>alert(1)" not in text
    invalid = text[text.index('id="invalid-cells"') :]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in invalid[: invalid.index("</table>")]


def test_report_cli_takes_demand_qps_and_refuses_a_bad_one(runs, tmp_path, capsys):
    from bench import cli

    out = tmp_path / "cli.html"
    args = ["report", *map(str, runs), "-o", str(out), "--latency-bound-ms", "100"]
    assert cli.main([*args, "--demand-qps", "240"]) == 0
    page = out.read_text().split('<section id="answer"', 1)[1]
    assert "<strong>3</strong>" in page  # ceil(240 / (120 × 0.8)) H100s
    capsys.readouterr()
    assert cli.main([*args, "--demand-qps", "-3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad demand_qps -3" in err[0] and "--demand-qps" in err[0]


def test_schema_2_fields_of_the_wrong_type_render_as_missing(tmp_path):
    """Records are untrusted: a server, curve, capacity or nested figure of the wrong type is no figure."""
    run = tmp_path / "run"
    run.mkdir()
    records = [
        {"cell_id": "a", "task": "<CAPTION>", "status": "ok", "scenario": "server", "device": "cuda",
         "memory": [1], "energy": 5, "server": "bad", "capacity_qps": "x", "time_per_image_ms": 3,
         "latency_ms": {"p50": 1, "p90": 2, "p99": 3}, "throughput": {"images_per_s": 2}},
        {"cell_id": "b", "task": "<CAPTION>", "status": "ok", "scenario": "server", "device": "cpu",
         "server": {"curve": "nope", "valid": "yes", "latency_bound_ms": "x", "achieved_qps": [1]},
         "latency_ms": {"p50": 1, "p99": "z"}},
        {"cell_id": "c", "task": "<CAPTION>", "status": "ok", "scenario": "server", "device": "cpu",
         "server": {"curve": [{"target_qps": "a", "p99": 1}, {"target_qps": 2, "p99": 3, "valid": True}],
                    "latency_bound_ms": 5}, "capacity_qps": 2, "latency_ms": {"p50": 1, "p90": 2, "p99": 3}},
        {"cell_id": "d", "task": "<OD>", "status": "ok", "scenario": "offline", "device": "cpu", "timing": "t",
         "extra": {"reported": [1]}, "stages_ms": {"preprocess": 1}, "latency_ms": {"p50": 1, "p90": 2, "p99": 3},
         "throughput": {"images_per_s": 2}},
        # tables of the right type holding values of the wrong type: the store keeps these, the report
        # must read them as missing figures
        {"cell_id": "e", "task": "<CAPTION>", "status": "ok", "scenario": "server", "device": "cpu",
         "server": {"curve": "nope", "valid": "yes", "latency_bound_ms": "x"}, "capacity_qps": None,
         "latency_ms": {"p50": 1, "p99": "z"}},
    ]
    (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (run / "env.json").write_text(json.dumps({"cpu": "str", "gpu": [1], "torch": {"num_threads": "x"}}))
    text = report.build_report([run], tmp_path / "r.html", latency_bound_ms=10, demand_qps=5).read_text()
    rows = {r.rec.cell_id: r for run_ in report.load_runs([run], report.load_prices()) for r in run_.rows}
    # a and b have top-level fields of the wrong type: the store skips them (with a warning)
    assert "a" not in rows and "b" not in rows
    assert rows["e"].capacity(None) is None and rows["e"].capacity(10.0) is None
    assert rows["c"].capacity(10.0)[0] == 2.0  # the one well-formed step of its curve
    assert '<section id="answer"' in text


def test_a_run_whose_only_cell_is_an_invalid_server_run_reports_why_without_a_bound(tmp_path):
    """The report `run` writes has no bound of its own: an overloaded server cell is named, not a crash."""
    from report_factory import make_server_record, write_run

    overloaded = make_server_record("base", device="cpu", batch_size=2, curve=False)
    overloaded.server.update(valid=False, invalid_reason="achieved 9.3 QPS, more than 5% below the target 20")
    run = write_run(tmp_path / "run", [overloaded], gpu=None)
    rows = [row for run_ in report.load_runs([run], report.load_prices()) for row in run_.rows]
    for bound in (None, 500.0):
        question = Question(bound)
        rec = recommend(rows, "<CAPTION>", answer.answer(rows, question), question)
        assert rec.best is None and "no valid server run (1 invalid: achieved 9.3 QPS" in rec.verdict
    text = report.build_report([run], tmp_path / "r.html").read_text()
    assert "no valid server run (1 invalid" in text
