"""The answer section and ``report --answer``: first after the header, the same numbers as the JSON, and
both as a hand computation from the records and the price table says (devices = ceil(demand / (capacity ×
max utilisation)), USD per month = devices × price per hour × 730, USD per million images = price ÷ (3600 ×
capacity) × 10⁶). Each row of issue 26's table is a test here: the percentile is part of the question, every
option carries validity and quality stamps, one pick serves every section, and a setting without a server cell
is predicted, never called measured."""

from __future__ import annotations

import html
import json
import math
import re
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.core.stats import percentile_ci
from bench.pages import page
from bench.report import answer, report, report_table
from bench.report.capacity_options import PREDICTED_BASIS, SERVER_BASIS, samples_latency
from bench.report.decision import decide
from bench.report.prices import load_prices
from bench.report.question import Question
from bench.report.uncertainty import (
    NO_SAMPLES,
    STABLE,
    TOO_FEW,
    UNSTABLE,
    judge,
    percentile_figure,
    samples_needed,
)
from bench.results import Record, store

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "report"))
from report_factory import (  # noqa: E402
    GPU,
    environment,
    figures,
    gpu_and_cpu_runs,
    make_record,
    make_server_record,
    write_run,
)

BASELINES = Path(__file__).resolve().parents[1] / "reports" / "baselines"
REQUIRED = {"task", "device", "variant", "backend", "dtype", "quant", "threads", "batch_size", "scenario", "devices",
            "usd_per_month", "usd_per_million_images", "percentile", "latency_ms", "latency_ci95_ms", "basis",
            "validity", "flags", "quality", "cell_id", "top_options", "other_options"}


def _render(runs, tmp_path, **kwargs):
    out = tmp_path / "answer.json"
    text = report.build_report(list(runs), tmp_path / "r.html", answer=out, **kwargs).read_text()
    return text, json.loads(out.read_text())


def _answer_section(text: str) -> str:
    """The answer section, checked to be the first section after the header (before the contents)."""
    after = text[text.index("</header>"):]
    assert after.index('<section id="answer"') == after.index("<section"), "the answer is not first"
    assert after.index('<section id="answer"') < after.index('<nav id="toc"')
    return after[after.index('<section id="answer"'): after.index("</section>")]


def _page_rows(section: str) -> dict[str, dict[str, str]]:
    rows = {}
    for tag in re.findall(r"<tr [^>]*data-devices=[^>]*>", section):
        attrs = dict(re.findall(r'data-([\w-]+)="([^"]*)"', tag))
        rows[attrs["cell"]] = attrs
    return rows


def _records(run_dirs) -> dict[str, Record]:
    return {cid: rec for d in run_dirs for cid, rec in store.latest_by_cell(store.records(d)).items()}


def _interval_holds(option: dict) -> None:
    """Any interval printed is the interval of the statistic beside it and contains it; else it says why."""
    if option["latency_ci95_ms"] is not None:
        low, high = option["latency_ci95_ms"]
        assert low <= option["latency_ms"] <= high
    else:
        assert option["latency_note"]


def _check_against_page_and_records(text, data, run_dirs, demand, utilisation=0.8):
    """Every answer of the JSON is a row of the page with the same numbers, and both are the hand
    computation from its record and the price table."""
    section = _answer_section(text)
    page = _page_rows(section)
    prices = load_prices()
    records = _records(run_dirs)
    assert data["answers"], "no answer"
    for a in data["answers"]:
        assert set(a) >= REQUIRED
        rec = records[a["cell_id"]]
        row = page[a["cell_id"]]
        assert int(row["devices"]) == a["devices"]
        assert (float(row["usd-month"]) if row["usd-month"] else None) == pytest.approx(a["usd_per_month"])
        assert (float(row["usd-million"]) if row["usd-million"] else None) == pytest.approx(
            a["usd_per_million_images"])
        # by hand, from the record (a prediction's capacity is the model's: checked in its own tests)
        if a["basis"] == SERVER_BASIS:  # the capacity search's, else a fixed-rate run's achieved rate
            capacity = rec.capacity_qps or rec.server.achieved_qps
            samples = sorted(rec.samples_ms)
            assert a["latency_ms"] == pytest.approx(float(np.percentile(samples, 99)))
        else:
            assert a["basis"] == PREDICTED_BASIS and a["predicted_from_batch_sizes"]
            capacity = a["capacity_qps"]
        d = demand if demand is not None else a["demand_qps"]
        assert a["devices"] == math.ceil(d / (capacity * utilisation) - 1e-9)
        assert a["utilisation"] <= utilisation + 1e-9
        price = prices.gpu_price(a["device"]) if rec.device.startswith("cuda") else None
        if price is not None:
            assert a["usd_per_month"] == pytest.approx(a["devices"] * price.usd_per_hour * 730)
            assert a["usd_per_million_images"] == pytest.approx(price.usd_per_hour / 3600 / capacity * 1e6)
            assert f"${html.escape(report.format_number(a['usd_per_month']))}" in section
        assert (a["variant"], a["dtype"], a["batch_size"], a["scenario"]) == (
            rec.variant, rec.dtype, rec.batch_size, rec.scenario)
        assert html.escape(a["basis"]) in section and a["percentile"] == "p99"
        assert a["validity"]["stamp"] in ("VALID", "PREDICTED") and a["quality"]["basis"]
        _interval_holds(a)
        for x in a["top_options"] + a["other_options"]:
            _interval_holds(x)
    assert sum(a["overall"] for a in data["answers"]) == len({a["task"] for a in data["answers"]})


def _picks(text: str) -> dict[str, set[str]]:
    """The cells the page's answer line, answer table pick, decision and recommendation each name."""
    decision = text[text.index('<section id="decision"'):text.index('<section id="environment"')]
    within = decision[decision.index('data-goal="cost_within_bound"'):]
    within = within[: within.index("</tr>")]
    recommendation = text[text.index('id="recommendations"'):]
    recommendation = recommendation[: recommendation.index("</table>")]
    section = _answer_section(text)
    return {"answer line": set(re.findall(r'class="answer-line"[^>]*data-cell="([^"]+)"', section)),
            "answer pick": set(re.findall(r'<tr class="pick" data-cell="([^"]+)"', section)),
            "recommendation": set(re.findall(r'<tr class="pick" data-cell="([^"]+)"', recommendation)),
            "decision": set(re.findall(r'data-cell="([^"]+)"', within))}


def test_answer_json_agrees_with_the_page_and_the_hand_computation(tmp_path):
    runs = gpu_and_cpu_runs(tmp_path / "machines")
    text, data = _render(runs, tmp_path, latency_bound_ms=100, demand_qps=500)
    assert data["demand_qps"] == 500 and data["latency_bound_ms"] == 100
    assert (data["latency_percentile"], data["max_utilisation"], data["quality_gate"]) == (0.99, 0.8, None)
    _check_against_page_and_records(text, data, runs, 500)
    # the H100 serves it: base bs8, 120 requests/s with p99 ≤ 100 ms, at ≤ 80% -> ceil(500 / 96) = 6 devices,
    # $13,140 a month, $6.94 per M
    (gpu,) = data["answers"]  # the CPU cannot serve within 100 ms at any measured rate
    assert (gpu["devices"], gpu["usd_per_month"], gpu["basis"]) == (6, pytest.approx(13140.0), SERVER_BASIS)
    assert gpu["usd_per_million_images"] == pytest.approx(3.00 / 3600 / 120 * 1e6) and gpu["overall"]
    section = _answer_section(text)
    assert "$13,140" in section and "$6.94" in section and "69.4% of their capacity used" in section
    assert "no valid server run with p99 ≤ 100 ms" in section  # the CPU's row says why it has no answer
    block = text[text.index('id="cost-table-data">') + len('id="cost-table-data">'):]
    column = next(n for n, c in enumerate(report_table.COST_COLUMNS) if c.header.startswith("USD per M images"))
    costs = [row[1 + column]
             for row in json.loads(block[: block.index("</script>")])["rows"]]
    assert any(isinstance(c, list) and c[1] == pytest.approx(gpu["usd_per_million_images"], rel=1e-3) for c in costs)
    assert "rounded up to whole devices" in section


def test_one_pick_for_the_answer_decision_recommendation_and_json(tmp_path):
    """Issue 26: the Answer said $6.87/M while the Decision and Recommendation said $5.41/M (a single-stream
    cell priced at its throughput). Now every section names the JSON's overall pick."""
    runs = gpu_and_cpu_runs(tmp_path / "machines")
    for kwargs in ({"latency_bound_ms": 100, "demand_qps": 500}, {"latency_bound_ms": 5000}, {}):
        text, data = _render(runs, tmp_path, **kwargs)
        overall = {a["cell_id"] for a in data["answers"] if a["overall"]}
        picks = _picks(text)
        assert picks["answer line"] == overall and picks["recommendation"] == overall, (kwargs, picks)
        assert overall <= picks["answer pick"]
        assert picks["decision"] == {a["cell_id"] for a in data["answers"]}


def test_the_question_names_its_percentile_and_a_p90_capacity_does_not_answer_p99(tmp_path):
    """Issue 26: a capacity searched on p90 was offered under a p99 heading, with the p90's interval beside a
    p99 that it did not contain."""
    p90 = make_server_record("base", weights="random", batch_size=4, service_ms=30.0, qps_max=200.0, bound_ms=100.0,
                             percentile=0.9, seed=1)
    p90.samples_ms = [65.0 + 0.1 * i for i in range(44)]  # 44 requests: enough for p90 early stopping, not p99
    p90.latency_ms["p90"] = float(np.percentile(p90.samples_ms, 90))
    p90.server["percentile_ci_ms"] = list(percentile_ci(p90.samples_ms, 0.9))  # the p90's interval
    p99 = make_server_record("base", weights="random", batch_size=8, service_ms=30.0, qps_max=100.0, bound_ms=100.0,
                             seed=2)
    run = write_run(tmp_path / "run", [p90, p99])
    text, data = _render([run], tmp_path, latency_bound_ms=100, demand_qps=100)
    (a,) = data["answers"]
    assert a["cell_id"] == p99.cell_id and a["percentile"] == "p99"  # the cheaper p90 capacity does not headline
    (other,) = a["other_options"]
    assert other["cell_id"] == p90.cell_id and other["why_not"][0] == "judged at p90"
    assert other["latency_ci95_ms"] is None and "not enough samples for a p99 interval: n = 44, 368 needed" in \
        other["latency_note"]
    section = html.unescape(_answer_section(text))
    assert "request latency p99 ≤ 100 ms" in section and "request latency p99 (95% CI)" in section
    assert "cannot headline: judged at p90" in section
    # asked at p90, the p90 capacity answers, with the p90's own interval around the p90 printed
    text, data = _render([run], tmp_path, latency_bound_ms=100, demand_qps=100, latency_percentile=0.9)
    (a,) = data["answers"]
    assert a["cell_id"] == p90.cell_id and a["percentile"] == "p90" and a["latency_ci95_ms"] is not None
    _interval_holds(a)
    assert "request latency p90 (95% CI)" in html.unescape(_answer_section(text))


def test_the_report_a_run_writes_asks_the_runs_own_question(tmp_path):
    from bench.commands.run import _write_report

    rec = make_server_record("base", weights="random", batch_size=4, service_ms=30.0, qps_max=200.0, bound_ms=100.0,
                             percentile=0.9)
    run = write_run(tmp_path / "run", [rec])
    text = html.unescape(_write_report(run, {"latency_bound_ms": 100.0, "latency_percentile": 0.9}).read_text())
    section = _answer_section(text)
    assert "request latency p90 ≤ 100 ms" in section and f'data-cell="{rec.cell_id}"' in section
    unbounded = html.unescape(_answer_section(_write_report(run, {}).read_text()))
    assert "no latency bound (request latency p99 shown)" in unbounded


def test_the_server_chart_draws_each_capacity_at_the_percentile_its_search_judged(tmp_path):
    """Issue 26: the ★ of a p90 search sat at its p99, above the bound line, under a caption about p99."""
    from bench.report import charts_speed
    from bench.report.chart_style import Styles
    from bench.report.report_rows import load_runs

    rec = make_server_record("base", weights="random", batch_size=4, service_ms=30.0, qps_max=200.0, bound_ms=100.0,
                             percentile=0.9)
    for step in rec.server["curve"]:
        step["p99"] = step["p90"] * 3  # the p99 of a p90 search is far over the bound
    run = write_run(tmp_path / "run", [rec])
    rows = [r for run_ in load_runs([run], load_prices()) for r in run_.rows]
    (chart,) = charts_speed.server_charts(rows, Styles(rows), 100.0)
    assert "whose p90" in chart.note and "p99 is within" not in chart.note
    star = next(t for t in _plot_data(chart) if t.get("name") == "★ capacity")
    assert star["y"][0] <= 100.0


def _plot_data(chart) -> list[dict]:
    return figures(str(chart.html))[0][0]


def test_flagged_capacities_never_headline_and_the_unflagged_runner_up_does(tmp_path):
    """Issue 26: the cheapest pick carried capacity-above-offline and curve-not-monotone; the unflagged
    runner-up was not shown."""
    flagged = make_server_record("base", weights="random", batch_size=1, service_ms=30.0, qps_max=200.0,
                                 bound_ms=100.0, seed=1)
    runner = make_server_record("base", weights="random", batch_size=4, service_ms=30.0, qps_max=100.0,
                                bound_ms=100.0, seed=2)
    run = tmp_path / "run"
    run.mkdir()
    lines = [json.loads(flagged.to_json()), json.loads(runner.to_json())]
    lines[0]["flags"] = [{"code": "capacity-above-offline", "message": "capacity 3.64 QPS above the offline 1.94"},
                         {"code": "curve-not-monotone", "message": "the machine's speed changed"}]
    (run / store.RESULTS).write_text("".join(json.dumps(line) + "\n" for line in lines))
    store.write_env(run, environment())
    text, data = _render([run], tmp_path, latency_bound_ms=100, demand_qps=100)
    (a,) = data["answers"]
    assert a["cell_id"] == runner.cell_id and a["flags"] == []
    (other,) = a["other_options"]
    assert other["cell_id"] == flagged.cell_id
    assert other["why_not"] == ["capacity-above-offline", "curve-not-monotone"]
    assert other["usd_per_month"] < a["usd_per_month"]  # cheaper, yet flagged: a runner-up with its flags
    section = html.unescape(_answer_section(text))
    assert "cannot headline: capacity-above-offline; curve-not-monotone" in section


def test_every_option_carries_a_validity_stamp_from_the_record(tmp_path):
    rec = make_server_record("base", weights="random", batch_size=8, service_ms=30.0, qps_max=200.0, bound_ms=100.0)
    run = write_run(tmp_path / "run", [rec])
    text, data = _render([run], tmp_path, latency_bound_ms=100, demand_qps=100)
    (a,) = data["answers"]
    assert a["validity"]["stamp"] == "VALID"
    rules = a["validity"]["rules"]
    n = len(rec.samples_ms)
    over = sum(v > 100.0 for v in rec.samples_ms)
    for part in ("min duration 10 s", "min requests 8", f"{over} of {n} over 100 ms",
                 "early stopping on p99 at 99% confidence"):
        assert part in rules
    assert "VALID</span>" in _answer_section(text)
    # a curve step under a stricter bound is stamped with that step's own run
    _, data = _render([run], tmp_path, latency_bound_ms=50, demand_qps=10)
    (a,) = data["answers"]
    assert a["validity"]["stamp"] == "VALID" and "400 requests" in a["validity"]["rules"]


def test_a_capacity_signed_by_a_final_run_is_stamped_with_the_final_runs_minimum_duration(tmp_path):
    """The figure rests on the final run (at least ``final_min_duration_s``), not on the search's short steps."""
    rec = make_server_record("base", weights="random", batch_size=8, service_ms=30.0, qps_max=200.0, bound_ms=100.0)
    rec.server = {**rec.server, "curve": [{**step, "final": step["target_qps"] == rec.server["target_qps"]}
                                          for step in rec.server["curve"]]}
    rec.timing = {**rec.timing, "server_run": {**rec.timing["server_run"], "final_min_duration_s": 120.0}}
    _, data = _render([write_run(tmp_path / "run", [rec])], tmp_path, latency_bound_ms=100, demand_qps=100)
    (a,) = data["answers"]
    assert "min duration 120 s (final run)" in a["validity"]["rules"]


def test_utilisation_has_headroom_and_a_bad_one_is_refused(tmp_path, capsys):
    """Issue 26: without --demand-qps the answer planned at 100.0% utilisation."""
    from bench import cli

    runs = gpu_and_cpu_runs(tmp_path / "machines")
    _, data = _render(runs, tmp_path, latency_bound_ms=100)
    assert data["answers"] and all(a["utilisation"] <= 0.8 + 1e-9 for a in data["answers"])
    _, data = _render(runs, tmp_path, latency_bound_ms=100, max_utilisation=0.5, demand_qps=500)
    assert data["answers"][0]["devices"] == math.ceil(500 / (120 * 0.5))
    for flag, value, accepted in (("--max-utilisation", "1.5", "a number > 0 and <= 1"),
                                  ("--max-utilisation", "0", "a number > 0 and <= 1"),
                                  ("--latency-percentile", "99", "a number > 0 and <= 0.999999"),
                                  ("--quality-gate", "2", "a number > 0 and <= 1")):
        capsys.readouterr()
        assert cli.main(["report", str(runs[0]), "-o", str(tmp_path / "x.html"), flag, value]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and accepted in err[0] and flag in err[0], err


def _closed_loop_run(tmp_path):
    records = [
        make_record("base", weights="random", batch_size=1, p50=20.0, seed=1),  # 50/s, one request ≈ 20 ms
        make_record("base", weights="random", batch_size=16, p50=2.0, seed=2),  # 500/s, a batch ≈ 32 ms
        make_record("large", weights="random", batch_size=16, p50=5.0, seed=3),  # 200/s, a batch ≈ 80 ms
    ]
    return write_run(tmp_path / "run", records)


def test_without_a_server_cell_the_capacity_is_predicted_and_labelled_so(tmp_path):
    """Issue 26: a single-stream cell's throughput was offered as capacity ("offline throughput: optimistic")."""
    run = _closed_loop_run(tmp_path)
    text, data = _render([run], tmp_path, demand_qps=1200, latency_bound_ms=100)
    (a,) = data["answers"]
    assert a["basis"] == PREDICTED_BASIS and a["validity"]["stamp"] == "PREDICTED"
    assert a["predicted_from_batch_sizes"] and a["latency_ms"] <= 100
    assert a["capacity_qps"] < 500  # never the optimistic back-to-back throughput
    section = html.unescape(_answer_section(text))
    assert 'class="rests-on rests-predicted"' in section and PREDICTED_BASIS in section
    assert "optimistic" not in text and "from measured batch sizes" in section
    _check_against_page_and_records(text, data, [run], 1200)
    # a bound no batch meets even alone: no answer, and why
    text, data = _render([run], tmp_path, demand_qps=1200, latency_bound_ms=5)
    assert data["answers"] == []
    assert "no setting's predicted p99 is within 5 ms at any rate" in html.unescape(_answer_section(text))


def test_a_prediction_is_drawn_from_the_predictor_it_is_given():
    """The seam: the answer asks ``predict`` for the settings without a server cell, and only for those."""
    from bench.report.report_rows import Row
    from bench.scenarios.predict import Prediction

    recs = [json.loads(make_record("base", weights="random", batch_size=b, p50=10.0, seed=b).to_json())
            for b in (1, 8)]
    rows = [Row(Record.from_dict(r), "run", "cuda") for r in recs]
    asked = []

    def fake(records, *, bound_ms, percentile):
        asked.append((len(list(records)), bound_ms, percentile))
        key = answer.predict_module.setting_key(rows[0].rec)
        return {key: [Prediction(30.0, percentile, bound_ms, 80.0, 1, 5.0, 1, (1,), ""),
                      Prediction(70.0, percentile, bound_ms, 95.0, 8, 5.0, 1, (1, 8), "")]}

    (a,) = answer.answer(rows, Question(100.0, 0.95, 140.0), predict=fake)
    assert asked == [(2, 100.0, 0.95)]
    assert a.option.capacity == 70.0 and a.option.row.rec.batch_size == 8 and a.option.batch_sizes == (1, 8)
    assert a.option.latency.statistic == "p95" and a.option.latency.interval is None
    assert a.devices == math.ceil(140 / (70 * 0.8))


def test_the_default_demand_is_per_task_and_the_json_says_so(tmp_path):
    records = [
        make_server_record("base", weights="random", batch_size=8, service_ms=30.0, qps_max=200.0, bound_ms=100.0),
        make_server_record("base", task="<OD>", weights="random", batch_size=8, service_ms=30.0, qps_max=100.0,
                           bound_ms=100.0),
    ]
    run = write_run(tmp_path / "run", records)
    text, data = _render([run], tmp_path)
    assert data["demand_qps"] is None  # two tasks, two demands: each answer carries its own
    assert {a["task"]: (a["demand_qps"], a["devices"]) for a in data["answers"]} == {
        "<CAPTION>": (pytest.approx(120 * 0.8), 1), "<OD>": (pytest.approx(60 * 0.8), 1)}
    _check_against_page_and_records(text, data, [run], None)
    _, data = _render([run], tmp_path, demand_qps=1000)
    assert data["demand_qps"] == 1000
    assert {a["task"]: a["devices"] for a in data["answers"]} == {"<CAPTION>": 11, "<OD>": 21}


def test_the_committed_h200_baseline_is_answered_by_prediction(tmp_path):
    """Issue 26: "9 × H200 … p99 101 ms — offline throughput: optimistic" rested on a single-stream cell."""
    run = BASELINES / "gpu-nvidia-h200-graphs"
    text, data = _render([run], tmp_path, latency_bound_ms=200, demand_qps=100)
    _check_against_page_and_records(text, data, [run], 100)
    assert all(a["basis"] == PREDICTED_BASIS for a in data["answers"])
    assert "optimistic" not in text and "measured server capacity</span>" not in _answer_section(text).split(
        "</p>", 1)[1]
    # random weights: no accuracy badge, quality unverified on every option
    assert all(a["quality"]["basis"] == "quality unverified: random weights" for a in data["answers"])
    decision = text[text.index('<section id="decision"'):text.index('<section id="environment"')]
    assert "⚠ unstable" not in decision and "not enough samples" in decision


def test_quality_is_never_assumed_and_the_gate_keeps_failing_options_out(tmp_path):
    """Issue 26: int8-dynamic on random weights was drawn at the model card's fp32 CIDEr and called fp32."""
    fp32 = make_server_record("base", dtype="fp32", batch_size=8, service_ms=60.0, qps_max=100.0, bound_ms=200.0,
                              seed=1)
    fp32.accuracy = {"cider": 1.30}
    int8 = make_server_record("base", dtype="fp32", batch_size=8, service_ms=30.0, qps_max=200.0, bound_ms=200.0,
                              seed=2, settings={"quant": "int8-dynamic", "threads": 2})
    int8.accuracy = {"cider": 1.20}  # 92.3% of the reference
    run = write_run(tmp_path / "run", [fp32, int8])
    _, data = _render([run], tmp_path, latency_bound_ms=200, demand_qps=100)
    (a,) = data["answers"]
    assert (a["quant"], a["threads"], a["cell_id"]) == ("int8-dynamic", 2, int8.cell_id)  # cheaper, no gate
    assert a["quality"]["share_of_reference"] == pytest.approx(1.20 / 1.30)
    assert "92.3% of the fp32 reference 1.3" in a["quality"]["basis"]
    _, data = _render([run], tmp_path, latency_bound_ms=200, demand_qps=100, quality_gate=0.99)
    (a,) = data["answers"]
    assert a["cell_id"] == fp32.cell_id and a["quality"]["share_of_reference"] == 1.0
    (other,) = a["other_options"]
    assert other["quant"] == "int8-dynamic" and other["why_not"][0].startswith("below the quality gate")
    # random weights: unverified, never headlining behind a gate
    noise = make_server_record("base", weights="random", batch_size=8, service_ms=30.0, qps_max=200.0,
                               bound_ms=200.0, settings={"quant": "int8-dynamic"})
    run = write_run(tmp_path / "noise", [noise])
    text, data = _render([run], tmp_path, latency_bound_ms=200, demand_qps=100, quality_gate=0.99)
    assert data["answers"] == []
    assert data["unanswered"][0]["other_options"][0]["why_not"] == ["quality unverified: random weights"]


def test_reported_accuracy_is_drawn_only_at_the_setting_it_was_reported_for(tmp_path):
    from bench.report import charts_quality
    from bench.report.chart_style import Styles
    from bench.report.report_rows import load_runs

    card = make_record("base", dtype="fp32", p50=50.0, seed=1)  # the card's checkpoint, fp32, pretrained
    int8 = make_record("base", dtype="fp32", p50=30.0, seed=2, settings={"quant": "int8-dynamic"})
    half = make_record("base", dtype="fp16", p50=20.0, seed=3)
    noise = make_record("base", dtype="fp32", weights="random", p50=50.0, seed=4)
    run = write_run(tmp_path / "run", [card, int8, half, noise])
    rows = [r for run_ in load_runs([run], load_prices()) for r in run_.rows]
    charts = charts_quality.reported_vs_cost(rows, Styles(rows), {"<CAPTION>": "coco_caption_cider"},
                                              report.REPORTED_LABEL)
    (chart,) = charts
    drawn = [x for t in _plot_data(chart) for x in t.get("x") or [] if t.get("mode") == "markers"]
    assert len(drawn) == 1  # only the fp32, unquantised, pretrained cell of the card's checkpoint
    assert "drawn only at the setting it was reported for" in chart.note
    layout = figures(str(chart.html))[0][1]
    assert "reported (paper/model card)" in layout["yaxis"]["title"]["text"]
    assert "derived from measured throughput" in layout["xaxis"]["title"]["text"]


def test_the_agreement_note_names_what_differs(tmp_path):
    texts = {"1": "a cat", "2": "a dog"}
    fp32 = make_record("base", device="cpu", dtype="fp32", weights="random", seed=1)
    int8 = make_record("base", device="cpu", dtype="fp32", weights="random", seed=2,
                       settings={"quant": "int8-dynamic"})
    fp32.extra = {**fp32.extra, "texts": texts}
    int8.extra = {**int8.extra, "texts": {"1": "a cat", "2": "noise"}}
    run = write_run(tmp_path / "run", [fp32, int8], gpu=None)
    text = report.build_report([run], tmp_path / "r.html").read_text()
    assert "half-precision" not in text
    assert "stress test of int8-dynamic quantisation, never a measure of quality" in text


def test_top_options_per_device_kind_with_stamps_and_a_chart(tmp_path):
    records = [make_server_record("base", weights="random", batch_size=b, service_ms=10.0 * b ** 0.5,
                                  qps_max=40.0 * b ** 0.7, bound_ms=200.0, seed=b) for b in (1, 2, 4, 8, 16, 32, 64)]
    run = write_run(tmp_path / "run", records)
    text, data = _render([run], tmp_path, latency_bound_ms=200, demand_qps=500)
    (a,) = data["answers"]
    top = a["top_options"]
    assert len(top) == answer.TOP == 5
    months = [x["usd_per_month"] for x in top]
    assert months == sorted(months) and top[0]["cell_id"] == a["cell_id"] and top[0]["over_best"] == 0.0
    assert top[1]["over_best"] == pytest.approx(months[1] / months[0] - 1)
    assert all(x["validity"]["stamp"] == "VALID" and x["quality"]["basis"] for x in top)
    section = _answer_section(text)
    table = section[section.index('class="top-options-table'):]
    assert table.count('class="qualifies"') == 5 and "+" in table and "VALID</span>" in table
    assert 'data-chart="&lt;CAPTION&gt;: top options"' in section


def test_the_page_states_the_rules_in_force_generated_from_the_code(tmp_path):
    """Issue 26: "early stopping" appeared 0 times; the method still said "target rate within 5%"."""
    from bench.core.stats import queries_needed

    rec = make_server_record("base", weights="random", batch_size=8, service_ms=30.0, qps_max=200.0, bound_ms=100.0,
                             percentile=0.9)
    run = write_run(tmp_path / "run", [rec])
    text = html.unescape(report.build_report([run], tmp_path / "r.html", latency_bound_ms=100).read_text())
    method = text[text.index('<section id="method"'):]
    assert "target rate within 5%" not in method and "early stopping" in text[:text.index('<section id="method"')]
    assert "early stopping passes for its percentile (p90) at 0.99 confidence" in method
    assert f"p99 needs {queries_needed(0, 0.99, 0.99)} requests and p90 {queries_needed(0, 0.9, 0.99)}" in method
    assert "min_duration_s (10 s here)" in method and "min_requests (8 here)" in method


def test_all_cells_is_one_line_per_cell(tmp_path):
    """Issue 26: "All cells" for 20 rows was 9,400 px tall (the timing column wrapped)."""
    rec = make_record("base", seed=1)
    rec.timing = {**rec.timing, "latency": "x " * 200, "prefetch": "y " * 100}
    run = write_run(tmp_path / "run", [rec])
    text = report.build_report([run], tmp_path / "r.html").read_text()
    table = text[text.index('<table id="all-cells"'):]
    table = table[: table.index("</table>")]
    assert 'data-td="wrap"' not in table  # no column wraps
    block = text[text.index('id="all-cells-data">') + len('id="all-cells-data">'):]
    data = json.loads(block[: block.index("</script>")])
    (row,) = data["rows"]
    assert not any("<br>" in str(cell) for cell in row[1:])
    timing = row[1 + [c.header for c in report_table.COLUMNS].index("timing")]
    assert timing[0] == "<small>warmup=1, iterations=12</small>" and "x x x" in data["titles"][timing[2]]  # its title
    css = (page.TEMPLATES / "report.css").read_text()
    assert re.search(r"#all-cells td[^{]*\{[^}]*white-space: nowrap", css)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.001, 1e5, allow_nan=False), min_size=1, max_size=600),
       st.sampled_from([0.5, 0.9, 0.95, 0.99, 0.999]) | st.floats(0.01, 0.99))
def test_the_printed_interval_contains_the_printed_estimate(samples, q):
    samples = sorted(samples)
    estimate, interval = percentile_figure(samples, q)
    if interval is not None:
        assert interval[0] <= estimate <= interval[1]
    else:
        assert len(samples) < samples_needed(q)
    latency = samples_latency(Record.from_dict({"cell_id": "c", "status": "ok", "samples_ms": samples}), q)
    assert latency.estimate == estimate and (latency.interval is None) == (interval is None)
    assert (latency.interval is not None) or "not enough samples" in latency.note


def test_the_server_records_bracket_and_flags_are_shown(tmp_path):
    rec = make_server_record("base", weights="random", batch_size=8, service_ms=30.0, qps_max=200.0, bound_ms=100.0)
    rec.server["capacity_bracket"] = [120.0, 130.0]
    run = tmp_path / "run"
    run.mkdir()
    line = json.loads(rec.to_json())  # the run's own warnings, as s18's records carry them
    line["flags"] = [{"code": "roofline-bad-reference", "message": "the reference under-read the machine"}]
    (run / store.RESULTS).write_text(json.dumps(line) + "\n")
    store.write_env(run, environment())
    text, data = _render([run], tmp_path, demand_qps=500, latency_bound_ms=100)
    (a,) = data["answers"]
    assert a["device"] == GPU and a["flags"] == ["roofline-bad-reference"]  # not a suspect capacity: it headlines
    section = _answer_section(text)
    assert "capacity bracket 120–130 requests/s" in section and "⚠ the reference under-read the machine" in section
    decision = text[text.index('<section id="decision"'):text.index('<section id="environment"')]
    capacity = decision[decision.index('data-goal="capacity"'):]
    assert "capacity bracket 120–130 requests/s (valid–invalid)" in capacity[: capacity.index("</tr>")]


def test_answer_flag_writes_json_through_the_cli_and_refuses_a_directory(tmp_path, capsys):
    from bench import cli

    runs = gpu_and_cpu_runs(tmp_path / "machines")
    out = tmp_path / "deep" / "answer.json"
    args = ["report", *map(str, runs), "-o", str(tmp_path / "r.html"), "--latency-bound-ms", "100"]
    assert cli.main([*args, "--demand-qps", "240", "--answer", str(out)]) == 0
    assert json.loads(out.read_text())["answers"][0]["devices"] == 3  # ceil(240 / (120 × 0.8))
    capsys.readouterr()
    assert cli.main([*args, "--answer", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a directory" in err[0]


# ---------------------------------------------------------------------------------------------
# the stability rule: the interval of the figure the scenario is judged on


def test_samples_needed_is_where_the_order_statistic_interval_starts_to_exist():
    for q in (0.5, 0.9, 0.99):
        n = samples_needed(q)
        assert percentile_ci(list(range(n - 1)), q) is None and percentile_ci(list(range(n)), q) is not None
    assert (samples_needed(0.5), samples_needed(0.9), samples_needed(0.99)) == (6, 36, 368)


def _judge(partial: dict):
    """``judge`` of a record holding only these fields."""
    return judge(Record.from_dict({"cell_id": "c", "status": "ok", **partial}))


def _offline(samples, ips=100.0):
    return {"scenario": "offline", "samples_ms": samples, "throughput": {"images_per_s": ips},
            "latency_ms": {"p99": max(samples) if samples else None}}


def test_offline_is_judged_on_throughput_and_five_batches_are_too_few():
    assert _judge(_offline([100.0, 101, 99, 150, 60])).verdict == TOO_FEW  # a 40% spread, yet only 5 batches
    assert _judge(_offline([])).verdict == NO_SAMPLES
    tight = _judge(_offline([100.0 + i * 0.5 for i in range(12)]))
    assert tight.verdict == STABLE and tight.statistic == "throughput"
    # 12 batches: the median's interval is [x_(3), x_(10)]; as a ratio of the measured throughput
    spread = [50.0, 60, 70, 80, 90, 100, 100, 110, 120, 130, 140, 150]
    wide = _judge(_offline(spread, ips=10.0))
    assert wide.verdict == UNSTABLE
    assert (wide.low, wide.high) == pytest.approx((10.0 * 100 / 130, 10.0 * 100 / 70))


def test_single_stream_is_judged_on_p90_and_server_on_p99_or_its_recorded_interval():
    samples = [100.0 + (i % 10) for i in range(40)]
    single = _judge({"scenario": "single-stream", "samples_ms": samples, "latency_ms": {"p90": 109.0}})
    assert single.statistic == "p90" and single.verdict == STABLE and single.n == 40
    short = _judge({"scenario": "single-stream", "samples_ms": samples[:16], "latency_ms": {"p90": 109.0}})
    assert short.verdict == TOO_FEW and "n = 16, 36 needed" in short.text
    server = {"scenario": "server", "samples_ms": samples, "latency_ms": {"p99": 109.0},
              "server": {"percentile_ci_ms": [100.0, 150.0]}}
    assert _judge(server).verdict == UNSTABLE and _judge(server).source == "server.percentile_ci_ms"
    del server["server"]["percentile_ci_ms"]
    assert _judge(server).verdict == TOO_FEW  # 40 requests cannot pin a p99


def test_an_unstable_pick_names_a_stable_alternative_only_within_the_factor(tmp_path):
    from report_factory import make_unstable

    fast = make_unstable(make_record("large", weights="random", batch_size=16, p50=1.0, seed=1))  # 1000/s
    near = make_record("base", weights="random", batch_size=16, p50=1.6, seed=2)  # 625/s: within 2x
    far = make_record("base", weights="random", batch_size=4, p50=2.5, seed=3)  # 400/s: beyond 2x
    for records, named in (([fast, near, far], True), ([fast, far], False)):
        run = write_run(tmp_path / f"run{named}", records)
        rows = [r for run_ in report.load_runs([run], report.load_prices()) for r in run_.rows]
        (decision,) = decide(rows, None)
        goal = next(g for g in decision.goals if g.name == "throughput")
        pick = decision.pick(goal, decision.kinds[0])
        assert pick.row.unstable and "unstable" in pick.note
        assert ("Best stable" in pick.note) is named


def test_random_or_unscored_weights_never_badge_accuracy(tmp_path):
    noise = make_record("base", weights="random", seed=1)
    noise.accuracy = {"cider": 0.0}  # what a random checkpoint scores
    unscored = make_record("base", weights="pretrained", accuracy=None, seed=2)
    for name, rec in (("noise", noise), ("unscored", unscored)):
        run = write_run(tmp_path / name, [rec])
        text = report.build_report([run], tmp_path / f"{name}.html", accuracy_floor=1.0).read_text()
        assert "accuracy measured" not in text.replace("accuracy not measured", "")
        assert 'data-chart="<CAPTION>: measured"' not in text
        recommendation = text[text.index('id="recommendations"'):]
        assert "cider 0" not in recommendation[: recommendation.index("</table>")]


def _many_settings(root: Path) -> list:
    """An H100 and a 2-core CPU with 36 settings each (variant x dtype x beams), three batch sizes apiece, one
    served setting per machine, a flagged one, a third with random weights (unverified quality): rows as the
    report loads them."""
    from report_factory import make_unstable

    from bench.report.report_rows import load_runs

    runs = []
    for device, scale in (("cuda", 1.0), ("cpu", 40.0)):
        records = []
        for i, (variant, dtype, beams) in enumerate(
                (v, d, b) for v in ("base", "large") for d in ("fp32", "fp16", "bf16") for b in (1, 2, 3, 4, 5, 6)):
            p50 = scale * 3.0 * 10 ** ((i * 37) % 36 / 36) * (1.5 if variant == "large" else 1.0)
            for batch in (1, 4, 8):
                rec = make_record(variant, device=device, dtype=dtype, batch_size=batch, p50=p50 / batch ** 0.5,
                                  num_beams=beams, seed=i * 10 + batch, accuracy=1.0 + (i % 4) / 40,
                                  weights="pretrained" if i % 3 else "random")
                records.append(make_unstable(rec) if i == 5 else rec)
        records.append(make_server_record("base", device=device, weights="random", dtype="fp16", batch_size=8,
                                          service_ms=30.0 * scale, qps_max=200.0 / scale, bound_ms=100.0 * scale))
        for rec in records if device == "cpu" else ():
            rec.energy = None
        runs.append(write_run(root / device, records, gpu=GPU if device == "cuda" else None,
                              **({} if device == "cuda" else {"cores": 2})))
    return [r for run in load_runs(runs, load_prices()) for r in run.rows]


@pytest.mark.parametrize("question", [Question(500.0), Question(500.0, 0.95, 2000.0), Question(5000.0, 0.99, 30.0, 0.7),
                                      Question(500.0, quality_gate=0.9), Question(20000.0, accuracy_floor=1.05)])
def test_the_pruned_answer_is_the_answer_predicting_every_setting(tmp_path, question):
    """Branch and bound: settings are predicted best ceiling first and only while one left could still enter a
    listed top five or move the default demand; the answer (every section and the JSON read it) is the same as
    predicting them all, with far fewer predictions."""
    from bench.scenarios import predict as predict_module
    from bench.scenarios.predict import Prediction

    rows = _many_settings(tmp_path)
    asked: list[tuple] = []

    def fake(records, *, bound_ms, percentile):
        """A capacity at a fixed share (by setting) of its ceiling, 60-90% as the queueing model finds at a loose
        bound, none for some: never above the ceiling (what the pruning rests on)."""
        out = {}
        for key, times in predict_module.batch_times(records).items():
            asked.append(key)
            share = 0.6 + zlib.crc32(repr(key).encode()) % 31 / 100
            qps = predict_module.ceiling_qps(times) * share if share > 0.62 else None
            out[key] = [Prediction(qps, percentile, bound_ms, bound_ms * share if qps else None, max(times), 5.0, 1,
                                   tuple(sorted(times)), "")]
        return out

    full = answer.answer_json(answer.answer(rows, question, predict=fake, prune=False), question)
    settings_ = len(asked)
    asked.clear()
    pruned = answer.answer_json(answer.answer(rows, question, predict=fake), question)
    assert pruned == full
    assert len(asked) == len(set(asked))  # each setting predicted at most once
    assert settings_ >= 60 and len(asked) <= settings_ / 2, (len(asked), settings_)
