"""The answer section and ``report --answer``: first after the header, the same numbers as the JSON, and
both as a hand computation from the records and the price table says (devices = ceil(demand / capacity),
USD per month = devices × price per hour × 730, USD per million images = price ÷ (3600 × capacity) × 10⁶)."""

from __future__ import annotations

import html
import json
import math
import re
import sys
from pathlib import Path

import pytest

from bench import answer, report, store
from bench.prices import load_prices
from bench.stats import percentile_ci
from bench.uncertainty import NO_SAMPLES, STABLE, TOO_FEW, UNSTABLE, judge, samples_needed

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "report"))
from report_factory import GPU, gpu_and_cpu_runs, make_record, make_server_record, write_run  # noqa: E402

BASELINES = Path(__file__).resolve().parents[1] / "reports" / "baselines"
REQUIRED = {"task", "device", "variant", "dtype", "batch_size", "scenario", "devices", "usd_per_month",
            "usd_per_million_images", "p99_ms", "basis", "cell_id"}


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
    for tag in re.findall(r"<tr [^>]*data-cell=[^>]*>", section):
        attrs = dict(re.findall(r'data-([\w-]+)="([^"]*)"', tag))
        rows[attrs["cell"]] = attrs
    return rows


def _records(run_dirs) -> dict[str, dict]:
    return {cid: rec for d in run_dirs for cid, rec in store.latest_by_cell(store.read_records(d)).items()}


def _check_against_page_and_records(text, data, run_dirs, demand):
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
        # by hand, from the record
        if a["basis"] == answer.SERVER_BASIS:  # the capacity search's, else a fixed-rate run's achieved rate
            capacity = rec["capacity_qps"] or rec["server"]["achieved_qps"]
        else:
            capacity = rec["throughput"]["images_per_s"]
        d = demand if demand is not None else a["demand_qps"]
        assert a["devices"] == math.ceil(d / capacity)
        price = prices.gpu_price(a["device"]) if rec["device"].startswith("cuda") else None
        if price is not None:
            assert a["usd_per_month"] == pytest.approx(a["devices"] * price.usd_per_hour * 730)
            assert a["usd_per_million_images"] == pytest.approx(price.usd_per_hour / 3600 / capacity * 1e6)
            assert f"${html.escape(report.format_number(a['usd_per_month']))}" in section
        assert a["p99_ms"] == pytest.approx(rec["latency_ms"]["p99"])
        assert (a["variant"], a["dtype"], a["batch_size"], a["scenario"]) == (
            rec["variant"], rec["dtype"], rec["batch_size"], rec["scenario"])
        assert html.escape(a["basis"]) in section
    assert sum(a["overall"] for a in data["answers"]) == len({a["task"] for a in data["answers"]})


def test_answer_json_agrees_with_the_page_and_the_hand_computation(tmp_path):
    runs = gpu_and_cpu_runs(tmp_path / "machines")
    text, data = _render(runs, tmp_path, latency_bound_ms=100, demand_qps=500)
    assert set(data) == {"demand_qps", "latency_bound_ms", "answers"}
    assert data["demand_qps"] == 500 and data["latency_bound_ms"] == 100
    _check_against_page_and_records(text, data, runs, 500)
    # the H100 serves it: base bs8, 120 requests/s with p99 ≤ 100 ms -> 5 devices, $10,950 a month, $6.94 per M
    (gpu,) = data["answers"]  # the CPU cannot serve within 100 ms at any measured rate
    assert (gpu["devices"], gpu["usd_per_month"], gpu["basis"]) == (5, pytest.approx(10950.0), answer.SERVER_BASIS)
    assert gpu["usd_per_million_images"] == pytest.approx(3.00 / 3600 / 120 * 1e6) and gpu["overall"]
    section = _answer_section(text)
    assert "$10,950" in section and "$6.94" in section and "83.3% of their capacity used" in section
    assert "no valid server run with p99 ≤ 100 ms" in section  # the CPU's row says why it has no answer
    # one cost per setting: the recommendation (cheapest within the bound) shows the same $6.94
    recommendation = text[text.index('id="recommendations"'):]
    assert "6.94" in recommendation[: recommendation.index("</table>")]
    cost_table = text[text.index('id="cost-table"'):]
    assert f'data-v="{gpu["usd_per_million_images"]!r}"' in cost_table[: cost_table.index("</table>")]
    assert "rounded up to whole devices" in section


def test_without_a_demand_one_device_of_the_best_option_and_a_cheaper_kind_overall(tmp_path):
    runs = gpu_and_cpu_runs(tmp_path / "machines")
    text, data = _render(runs, tmp_path)  # no bound: the CPU's own capacity (0.96/s at its 5 s bound) counts
    # the best option is the H100's base bs8 ($6.94 per M): the demand is its capacity, 120 requests/s
    assert data["demand_qps"] == 120.0 and data["latency_bound_ms"] is None
    by_device = {a["device"]: a for a in data["answers"]}
    assert by_device[GPU]["devices"] == 1 and by_device[GPU]["overall"]
    cpu = next(a for a in data["answers"] if a["device"].startswith("CPU"))
    assert cpu["devices"] == math.ceil(120 / 0.96) and not cpu["overall"]
    _check_against_page_and_records(text, data, runs, None)


def test_without_a_server_cell_the_offline_basis_is_used_and_labelled(tmp_path):
    records = [
        make_record("base", weights="random", batch_size=1, p50=20.0, seed=1),  # 50/s, p99 ≈ 20 ms
        make_record("base", weights="random", batch_size=16, p50=2.0, seed=2),  # 500/s, p99 ≈ 32 ms a batch
        make_record("large", weights="random", batch_size=16, p50=5.0, seed=3),  # 200/s
    ]
    run = write_run(tmp_path / "run", records)
    text, data = _render([run], tmp_path, demand_qps=1200, latency_bound_ms=40)
    (a,) = data["answers"]
    assert a["basis"] == answer.OFFLINE_BASIS and a["batch_size"] == 16 and a["variant"] == "base"
    assert a["devices"] == math.ceil(1200 / 500)
    section = _answer_section(text)
    assert 'class="rests-on rests-offline"' in section and "offline throughput: optimistic, no queueing" in section
    _check_against_page_and_records(text, data, [run], 1200)
    # a bound no batch's own wall time meets: no answer, and why
    text, data = _render([run], tmp_path, demand_qps=1200, latency_bound_ms=5)
    assert data["answers"] == []
    assert "no setting's request latency p99 is within 5 ms, even without queueing" in html.unescape(_answer_section(text))


def test_the_default_demand_is_per_task_and_the_json_says_so(tmp_path):
    records = [
        make_record("base", weights="random", batch_size=8, p50=2.0, seed=1),  # <CAPTION>: 500/s
        make_record("base", task="<OD>", weights="random", batch_size=8, p50=4.0, seed=2),  # <OD>: 250/s
    ]
    run = write_run(tmp_path / "run", records)
    text, data = _render([run], tmp_path)
    assert data["demand_qps"] is None  # two tasks, two demands: each answer carries its own
    assert {a["task"]: (a["demand_qps"], a["devices"]) for a in data["answers"]} == {
        "<CAPTION>": (500.0, 1), "<OD>": (250.0, 1)}
    _check_against_page_and_records(text, data, [run], None)
    _, data = _render([run], tmp_path, demand_qps=1000)
    assert data["demand_qps"] == 1000
    assert {a["task"]: a["devices"] for a in data["answers"]} == {"<CAPTION>": 2, "<OD>": 4}


@pytest.mark.parametrize("name", ["smoke-cpu", "gpu-nvidia-h200", "gpu-nvidia-h200-graphs"])
def test_the_committed_baselines_open_with_the_answer(name, tmp_path):
    run = BASELINES / name
    text, data = _render([run], tmp_path)
    _check_against_page_and_records(text, data, [run], None)
    assert all(a["basis"] == answer.OFFLINE_BASIS for a in data["answers"])  # they have no server cell
    # random weights: no accuracy badge, no quality chart, no accuracy in the recommendation
    assert "accuracy measured" not in text and "RANDOM WEIGHTS" in text
    quality = text[text.index('<section id="size-quality"'):]
    assert 'data-chart="<CAPTION>: measured"' not in quality[: quality.index("</section>")]
    # too few samples for an interval is said so, never called unstable
    decision = text[text.index('<section id="decision"'):text.index('<section id="environment"')]
    assert "⚠ unstable" not in decision and "not enough samples" in decision


def test_the_server_records_bracket_flags_and_recorded_interval_are_shown(tmp_path):
    rec = make_server_record("base", weights="random", batch_size=8, service_ms=30.0, qps_max=200.0, bound_ms=100.0)
    rec.server["capacity_bracket"] = [120.0, 130.0]
    rec.server["percentile_ci_ms"] = [70.0, 80.0]
    run = tmp_path / "run"
    run.mkdir()
    line = json.loads(rec.to_json())  # the run's own warnings, as s18's records carry them
    line["flags"] = [{"code": "capacity_above_offline", "message": "capacity 1.3x the offline throughput"}]
    (run / store.RESULTS).write_text(json.dumps(line) + "\n")
    text, data = _render([run], tmp_path, demand_qps=500, latency_bound_ms=100)
    (a,) = data["answers"]
    assert a["p99_ci95_ms"] == [70.0, 80.0]
    section = _answer_section(text)
    assert "capacity bracket 120–130 requests/s" in section and "⚠ capacity 1.3x the offline throughput" in section
    decision = text[text.index('<section id="decision"'):text.index('<section id="environment"')]
    capacity = decision[decision.index('data-goal="capacity"'):]
    capacity = capacity[: capacity.index("</tr>")]
    assert "capacity bracket 120–130 requests/s (valid–invalid)" in capacity
    assert "capacity 1.3x the offline throughput" in capacity and "p99 95% CI 70–80 ms" in capacity


def test_answer_flag_writes_json_through_the_cli_and_refuses_a_directory(tmp_path, capsys):
    from bench import cli

    runs = gpu_and_cpu_runs(tmp_path / "machines")
    out = tmp_path / "deep" / "answer.json"
    args = ["report", *map(str, runs), "-o", str(tmp_path / "r.html"), "--latency-bound-ms", "100"]
    assert cli.main([*args, "--demand-qps", "240", "--answer", str(out)]) == 0
    assert json.loads(out.read_text())["answers"][0]["devices"] == 2  # ceil(240 / 120)
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


def _offline(samples, ips=100.0):
    return {"scenario": "offline", "samples_ms": samples, "throughput": {"images_per_s": ips},
            "latency_ms": {"p99": max(samples) if samples else None}}


def test_offline_is_judged_on_throughput_and_five_batches_are_too_few():
    assert judge(_offline([100.0, 101, 99, 150, 60])).verdict == TOO_FEW  # a 40% spread, yet only 5 batches
    assert judge(_offline([])).verdict == NO_SAMPLES
    tight = judge(_offline([100.0 + i * 0.5 for i in range(12)]))
    assert tight.verdict == STABLE and tight.statistic == "throughput"
    # 12 batches: the median's interval is [x_(3), x_(10)]; as a ratio of the measured throughput
    spread = [50.0, 60, 70, 80, 90, 100, 100, 110, 120, 130, 140, 150]
    wide = judge(_offline(spread, ips=10.0))
    assert wide.verdict == UNSTABLE
    assert (wide.low, wide.high) == pytest.approx((10.0 * 100 / 130, 10.0 * 100 / 70))


def test_single_stream_is_judged_on_p90_and_server_on_p99_or_its_recorded_interval():
    samples = [100.0 + (i % 10) for i in range(40)]
    single = judge({"scenario": "single-stream", "samples_ms": samples, "latency_ms": {"p90": 109.0}})
    assert single.statistic == "p90" and single.verdict == STABLE and single.n == 40
    short = judge({"scenario": "single-stream", "samples_ms": samples[:16], "latency_ms": {"p90": 109.0}})
    assert short.verdict == TOO_FEW and "n = 16, 36 needed" in short.text
    server = {"scenario": "server", "samples_ms": samples, "latency_ms": {"p99": 109.0},
              "server": {"percentile_ci_ms": [100.0, 150.0]}}
    assert judge(server).verdict == UNSTABLE and judge(server).source == "server.percentile_ci_ms"
    del server["server"]["percentile_ci_ms"]
    assert judge(server).verdict == TOO_FEW  # 40 requests cannot pin a p99


def test_an_unstable_pick_names_a_stable_alternative_only_within_the_factor(tmp_path):
    from report_factory import make_unstable

    fast = make_unstable(make_record("large", weights="random", batch_size=16, p50=1.0, seed=1))  # 1000/s
    near = make_record("base", weights="random", batch_size=16, p50=1.6, seed=2)  # 625/s: within 2x
    far = make_record("base", weights="random", batch_size=4, p50=2.5, seed=3)  # 400/s: beyond 2x
    for records, named in (([fast, near, far], True), ([fast, far], False)):
        run = write_run(tmp_path / f"run{named}", records)
        rows = [r for run_ in report.load_runs([run], report.load_prices()) for r in run_.rows]
        (decision,) = report.decide(rows, None)
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
