"""The HTML report: rendering, escaping, derived figures and the recommendation (no browser here)."""

from __future__ import annotations

import base64
import html
import io
import json
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from bench.core.errors import UsageError
from bench.report import answer, charts_quality, comparability, decision, examples, report
from bench.report.capacity_options import PREDICTED_BASIS
from bench.report.question import Question
from bench.results import Example, store

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "report"))
from report_factory import (  # noqa: E402
    HOSTILE,
    HOSTILE_ESCAPED,
    example_image,
    failed_run,
    gpu_and_cpu_runs,
    make_record,
    random_run,
    single_run,
    write_run,
)


class _Scripts(HTMLParser):
    """Collects every script element (its text, and its id and type in ``kinds``) and every element's tag name."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.kinds: list[tuple[str, str]] = []
        self.tags: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "script":
            self._in_script = True
            self.scripts.append("")
            self.kinds.append((dict(attrs).get("id") or "", dict(attrs).get("type") or ""))

    def by_id(self, script_id: str) -> str:
        return self.scripts[[i for i, _ in self.kinds].index(script_id)]

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data


def _render(tmp_path: Path, make, **kwargs) -> tuple[Path, str]:
    run = make(tmp_path / "run")
    out = report.build_report([run], tmp_path / "report.html", **kwargs)
    return out, out.read_text()


def _outside_plotlyjs(text: str) -> str:
    parser = _Scripts()
    parser.feed(text)
    return text.replace(parser.by_id("plotly-js"), "")


def test_failed_cells_render_escaped_with_one_inlined_plotly(tmp_path):
    out, text = _render(tmp_path, failed_run, latency_bound_ms=300, accuracy_floor=1.35)
    assert out == tmp_path / "report.html"
    parser = _Scripts()
    parser.feed(text)
    charts = text.count('class="plotly-graph-div"')
    assert charts >= 8
    # plotly.js once (an inert block, last but one), one JSON block per chart, the cost and all-cells data
    # blocks, and the page's one script last (lazy.js, tables.js, charts.js); none runs before the content
    assert len(parser.scripts) == charts + 4
    assert parser.kinds[-2] == ("plotly-js", "text/x-plotly-js") and len(parser.scripts[-2]) > 1_000_000
    assert "Plotly" in parser.scripts[-2]
    figures = [json.loads(s) for s, (i, kind) in zip(parser.scripts, parser.kinds, strict=True) if i.endswith("-figure")]
    assert len(figures) == charts and all(set(f) == {"data", "layout", "config"} for f in figures)
    assert len(json.loads(parser.by_id("cost-table-data"))["rows"]) == sum(  # the cost table: one row per finished cell
        r.status == "ok" for r in store.latest_by_cell(store.records(tmp_path / "run")).values())
    cells = json.loads(parser.by_id("all-cells-data"))["rows"]
    assert len(cells) == len(store.latest_by_cell(store.records(tmp_path / "run")))  # one row per cell
    assert HOSTILE_ESCAPED in parser.by_id("all-cells-data")  # escaped in the block too: drawn as text
    code = [s for s, (_, kind) in zip(parser.scripts, parser.kinds, strict=True) if kind == ""]
    assert code == parser.scripts[-1:]
    assert "table.sortable" in code[0] and "IntersectionObserver" in code[0] and "http" not in code[0]
    assert text.index("<script>") > text.index("</main>")  # no code runs before the page's content is parsed
    assert "<script>alert(1)" not in text
    # the hostile variant name, settings value, error message, env value and example text show as text
    assert text.count(HOSTILE_ESCAPED) >= 5
    assert f"RuntimeError: {HOSTILE_ESCAPED}" in text
    # the failed cells are listed with their reasons
    failed = text[text.index('id="failed-cells"') :]
    failed = failed[: failed.index("</table>")]
    for reason in ("OutOfMemoryError: CUDA out of memory", "skipped: int8 needs bitsandbytes"):
        assert reason in failed
    unstable = text[text.index('id="unstable-cells"') :]
    assert "throughput 95% CI" in unstable[: unstable.index("</table>")] and "(n = 12)" in unstable
    assert "PRETRAINED WEIGHTS" in text


def test_no_network_reference_outside_plotlyjs(tmp_path):
    _, text = _render(tmp_path, failed_run)
    rest = _outside_plotlyjs(text)
    assert not re.search(r"https?://|//cdn|src=\"(?!data:)|@import|url\(", rest)
    assert "mathjax" not in rest.lower()


def test_random_weights_only_says_so_and_recommends_nothing_against_a_floor(tmp_path):
    _, text = _render(tmp_path, random_run, latency_bound_ms=1000, accuracy_floor=0.5)
    assert "RANDOM WEIGHTS — accuracy not measured" in text
    rec = text[text.index('id="recommendations"') :]
    rec = rec[: rec.index("</table>")]
    assert "none meets it" in rec and "accuracy not measured: the floor cannot be checked" in rec
    # no accuracy, so no frontier: said plainly instead of an empty chart
    pareto = text[text.index('id="pareto"') : text.index('id="throughput"')]
    assert "plotly-graph-div" not in pareto and "No accuracy was measured" in pareto
    # reported numbers still appear, labelled
    assert '<span class="tag reported">reported</span> coco_caption_cider: 133.0' in text


def _recommend(rows, task, bound, floor):
    question = Question(bound, accuracy_floor=floor)
    return decision.recommend(rows, task, answer.answer(rows, question), question)


def test_random_weights_without_a_floor_picks_the_answers_cheapest_within_the_bound(tmp_path):
    runs = report.load_runs([random_run(tmp_path / "run")], report.load_prices())
    rows = runs[0].rows
    rec = _recommend(rows, "<CAPTION>", 1000.0, None)
    # no server cell: every option rests on a capacity predicted from the batch times, never on a throughput
    assert rec.option.basis == PREDICTED_BASIS and rec.option.capacity < rec.best.ips
    (pick,) = [a for a in answer.answer(rows, Question(1000.0)) if a.overall]
    assert rec.best is pick.option.row and rec.cost == pick.usd_per_million
    assert rec.met == sum(len(a.top) for a in answer.answer(rows, Question(1000.0)))
    assert "quality unverified: random weights" in rec.notes[0]


def test_single_cell_renders_every_section(tmp_path):
    _, text = _render(tmp_path, single_run)
    for anchor in ("decision", "summary", "recommendation", "environment", "size-quality", "pareto", "throughput"):
        assert f'id="{anchor}"' in text
    for anchor in ("tradeoff", "server", "stages", "memory", "distributions", "cost", "results", "examples", "method"):
        assert f'id="{anchor}"' in text
    assert 'id="regression"' not in text
    assert text.count('class="plotly-graph-div"') >= 8


def test_several_runs_are_labelled_by_directory(tmp_path):
    a = write_run(tmp_path / "h100-run", [make_record("base", p50=50.0)])
    b = write_run(tmp_path / "cpu-run", [make_record("base", device="cpu", p50=900.0)])
    out = report.build_report([a, b], tmp_path / "merged.html", latency_bound_ms=100)
    text = out.read_text()
    assert "h100-run base cuda" in text and "cpu-run base cpu" in text
    rec = text[text.index('id="recommendations"') :]
    assert "h100-run base cuda fp16 bs1" in rec[: rec.index("</table>")]


PRICES = """
[gpu]
"NVIDIA H100 80GB HBM3" = { usd_per_hour = 3.6, source = "our contract <b>2025</b>" }
[cpu]
usd_per_vcpu_hour = 0.05
source = "VM list price"
[energy]
usd_per_kwh = 0.2
source = "tariff"
"""


def test_cost_per_million_images_is_derived_from_price_and_throughput(tmp_path):
    prices = tmp_path / "prices.toml"
    prices.write_text(PRICES)
    rec = make_record("base", p50=100.0)
    rec.throughput = {"images_per_s": 10.0, "tokens_per_s": 1.0}
    rec.energy = {"joules_per_image": 36.0, "source": "nvml"}
    run = write_run(tmp_path / "run", [rec])
    row = report.load_runs([run], report.load_prices(prices))[0].rows[0]
    assert row.device_name == "NVIDIA H100 80GB HBM3"
    assert row.price.usd_per_hour == 3.6 and row.price.source == "our contract <b>2025</b>"
    assert row.cost_per_million == pytest.approx(3.6 / 3600 / 10 * 1e6)  # 100 USD
    assert row.energy_cost_per_million == pytest.approx(36.0 * 1e6 / 3.6e6 * 0.2)  # 2 USD
    text = report.build_report([run], tmp_path / "r.html", prices=prices).read_text()
    # the price and its source stand beside the cost (escaped: a source is text)
    cost_table = text[text.index('id="cost-table"') :]
    assert "NVIDIA H100 80GB HBM3 at $3.60/h (source: our contract &lt;b&gt;2025&lt;/b&gt;)" in cost_table
    assert "<b>2025" not in text


def test_a_cpu_run_is_priced_per_vcpu_hour_times_the_cores_it_used(tmp_path):
    prices = tmp_path / "prices.toml"
    prices.write_text(PRICES)
    rec = make_record("base", device="cpu", dtype="fp32", p50=500.0)
    rec.throughput = {"images_per_s": 2.0}
    run = write_run(tmp_path / "run", [rec], gpu=None, cores=2)
    row = report.load_runs([run], report.load_prices(prices))[0].rows[0]
    assert row.kind.label == "CPU Synthetic CPU @ 2.0GHz (2 cores used)"
    assert row.price.usd_per_hour == pytest.approx(0.10)  # 2 vCPU x 0.05, not a whole 8-vCPU machine
    assert row.cost_per_million == pytest.approx(0.10 / 3600 / 2.0 * 1e6)
    assert "2 vCPU × $0.05/vCPU-h" in row.price.text and "VM list price" in row.price.text


def test_gpus_are_priced_by_exact_name_only():
    table = report.PriceTable({"NVIDIA A10": (1.0, "s1"), "NVIDIA A100-SXM4-80GB": (2.0, "s2")}, "t", (0.04, "s3"))
    assert table.gpu_price("nvidia  a100-sxm4-80gb").usd_per_hour == 2.0  # case and spacing aside
    assert table.gpu_price("NVIDIA A10").usd_per_hour == 1.0
    assert table.gpu_price("NVIDIA A100-PCIE-40GB") is None  # never by substring
    assert table.gpu_price("NVIDIA A10G") is None
    assert table.cpu_price(4).usd_per_hour == pytest.approx(0.16) and table.cpu_price(None) is None


def test_default_price_table_is_documented_and_covers_the_lent_gpus():
    text = report.DEFAULT_PRICES.read_text()
    assert "EXAMPLE" in text and "--prices" in text and "usd_per_vcpu_hour" in text
    table = report.load_prices()
    for name in ("NVIDIA H100 80GB HBM3", "NVIDIA H200", "NVIDIA L4", "NVIDIA L40S"):
        price = table.gpu_price(name)
        assert price is not None and price.source, name
    assert table.cpu_price(2) is not None and table.usd_per_kwh is not None


@pytest.mark.parametrize(
    "content, fragment",
    [
        (None, "not found"),
        ("[gpu\n", "not valid TOML"),
        ("x = 1\n", "unknown section(s) x"),
        ("[energy]\nusd_per_kwh = 1\n", "no [gpu] or [cpu] section"),
        ('[gpu]\n"NVIDIA L4" = "cheap"\n', "NVIDIA L4"),
        ('[gpu]\n"NVIDIA L4" = { usd_per_hour = -1 }\n', "usd_per_hour is -1"),
        ("[cpu]\nsource = 'x'\n", "usd_per_vcpu_hour"),
        ('[prices]\ncpu = 0.2\n"H100" = 3.0\n', "old format"),
        ("energy = 5\n[cpu]\nusd_per_vcpu_hour = 1\n", "energy is 5, not a [energy] table"),
    ],
)
def test_bad_price_tables_are_usage_errors(tmp_path, content, fragment):
    path = tmp_path / "p.toml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UsageError, match=re.escape(fragment)) as info:
        report.load_prices(path)
    assert "\n" not in str(info.value)


def test_bad_inputs_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="no results.jsonl"):
        report.build_report([tmp_path], tmp_path / "r.html")
    run = single_run(tmp_path / "run")
    with pytest.raises(UsageError, match="bad latency_bound_ms -5"):
        report.build_report([run], tmp_path / "r.html", latency_bound_ms=-5)
    with pytest.raises(UsageError, match="baseline"):
        report.build_report([run], tmp_path / "r.html", baseline=tmp_path / "nope")
    with pytest.raises(UsageError, match="bad demand_qps 0"):
        report.build_report([run], tmp_path / "r.html", demand_qps=0)


def test_pareto_front_known_answer():
    points = [(10, 0.5), (20, 0.7), (15, 0.4), (30, 0.7), (40, 0.9), (5, 0.1)]
    assert charts_quality.pareto_front(points) == [5, 0, 1, 4]
    # throughput: higher x is better
    assert charts_quality.pareto_front(points, x_lower=False) == [4]
    # an error rate: lower y is better
    assert charts_quality.pareto_front(points, y_higher=False) == [5]


def test_recommendation_cheapest_within_bound_and_floor_else_none(tmp_path):
    records = [
        make_record("base", p50=50.0, accuracy=1.30, seed=1),
        make_record("large", p50=120.0, accuracy=1.42, seed=2),
        make_record("large", dtype="fp32", p50=400.0, accuracy=1.43, seed=3),
    ]
    rows = report.load_runs([write_run(tmp_path / "run", records)], report.load_prices())[0].rows
    assert _recommend(rows, "<CAPTION>", 200.0, 1.4).best.rec.variant == "large"
    assert _recommend(rows, "<CAPTION>", 200.0, 1.0).best.rec.variant == "base"
    none = _recommend(rows, "<CAPTION>", 100.0, 1.4)
    assert none.best is None and none.verdict.startswith(decision.NONE_MEETS)
    assert _recommend(rows, "<CAPTION>", 10.0, None).verdict.startswith(decision.NONE_MEETS)


def test_recommendation_without_a_price_picks_the_fastest_and_says_cost_unknown(tmp_path):
    prices = tmp_path / "p.toml"
    prices.write_text("[cpu]\nusd_per_vcpu_hour = 0.1\n")
    records = [make_record("base", p50=50.0, seed=1), make_record("base", batch_size=8, p50=6.0, seed=2)]
    rows = report.load_runs([write_run(tmp_path / "run", records)], report.load_prices(prices))[0].rows
    rec = _recommend(rows, "<CAPTION>", 1000.0, None)
    assert rec.best.rec.batch_size == 8
    assert "cost unknown (no price for NVIDIA H100 80GB HBM3)" in rec.verdict


def test_error_rate_floor_is_a_ceiling(tmp_path):
    a = make_record("base", task="<OCR>", p50=50.0, seed=1, accuracy=None)
    b = make_record("large", task="<OCR>", p50=90.0, seed=2, accuracy=None)
    a.accuracy, b.accuracy = {"wer": 0.40}, {"wer": 0.10}
    rows = report.load_runs([write_run(tmp_path / "run", [a, b])], report.load_prices())[0].rows
    rec = _recommend(rows, "<OCR>", 1000.0, 0.2)
    assert rec.best.rec.variant == "large" and "wer ≤ 0.2" in rec.constraint


def test_primary_metric_is_the_tasks_headline_from_the_registry():
    assert report.primary_metric({"bleu4": 30.0, "cider": 120.0, "meteor": 20.0}, "<CAPTION>") == "cider"
    assert report.primary_metric({"wer": 20.0, "cer": 10.0, "exact_match": 50.0}, "<OCR>") == "cer"
    assert report.primary_metric({"map": 30.0, "ap50": 50.0}, "<OD>") == "map"
    # without a task, or without its headline: the first registered metric, never an unknown name
    assert report.primary_metric({"exact_match": 50.0, "wer": 20.0}) == "wer"
    assert report.primary_metric({"CIDEr": 1.2}) is None
    assert report.primary_metric(None) is None
    assert report.lower_is_better("cer") and report.lower_is_better("wer")
    assert not report.lower_is_better("cider") and not report.lower_is_better("unknown")


def test_device_name_comes_from_the_env_fingerprint():
    env = {"gpu": {"devices": [{"name": "NVIDIA L4"}, {"name": "NVIDIA H200"}]}}
    assert report.device_name("cuda:1", env) == "NVIDIA H200"
    assert report.device_name("cuda", env) == "NVIDIA L4"
    assert report.device_name("cpu", env) == "cpu"
    assert report.device_name("cuda", {}) == "cuda"


def _decode(uri: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB")


def test_example_boxes_and_polygons_are_drawn_in_image_coordinates(tmp_path):
    run = tmp_path / "run"
    rel = example_image(run, size=(400, 200))  # saved at twice the recorded size
    box = {
        "image_file": rel,
        "width": 200,
        "height": 100,
        "answer": {"bboxes": [[20, 20, 120, 80]], "labels": [HOSTILE]},
    }
    uri, note = examples._draw_example(run, Example.from_dict(box))
    img = _decode(uri)
    assert img.size == (400, 200) and note == ""
    assert img.getpixel((240, 160)) != (255, 255, 255)  # bottom-right corner of the box, scaled x2
    assert img.getpixel((150, 100)) == (255, 255, 255)  # inside the box stays clear
    poly = {
        "width": 200,
        "height": 100,
        "answer": {"polygons": [[[10, 10, 190, 10, 100, 90]]], "labels": ["a"]},
    }
    uri, note = examples._draw_example(run, Example.from_dict(poly))
    assert "blank canvas" in note
    assert _decode(uri).getpixel((100, 10)) != (235, 235, 235)  # on the top edge
    quad = {
        "width": 200,
        "height": 100,
        "answer": {"quad_boxes": [[10, 10, 50, 10, 50, 40, 10, 40]], "labels": ["t"]},
    }
    assert len(examples._shapes(quad["answer"])) == 1


def test_example_image_outside_the_run_dir_is_not_read(tmp_path):
    outside = tmp_path / "secret.png"
    Image.new("RGB", (10, 10)).save(outside)
    run = tmp_path / "run"
    run.mkdir()
    uri, note = examples._draw_example(run, Example(image_file="../secret.png"))
    assert uri is None and note == "image file not saved"


def test_regression_section_shows_exactly_what_compare_prints(tmp_path):
    from bench.regression.compare import compare_dirs

    base_rec = make_record(f"base{HOSTILE}", p50=75.0, seed=1)
    cur_rec = make_record(f"base{HOSTILE}", p50=110.0, seed=1)
    base = write_run(tmp_path / "base", [base_rec, make_record("large", p50=200.0, seed=3)], cores=16)
    cur = write_run(tmp_path / "cur", [cur_rec], cores=8)
    comparison = compare_dirs(base, cur)
    assert comparison.regressed and comparison.env_warnings
    text = report.build_report([cur], tmp_path / "r.html", baseline=base).read_text()
    section = text[text.index('<section id="regression"') :]
    section = section[: section.index("</section>")]
    # the same strings as the terminal table: interval, thresholds, units, notes, verdicts
    for cells in comparison.table_rows():
        for cell in cells:
            assert html.escape(cell, quote=False) in section, cell
    assert "90% CI" in section and "95% CI" not in section
    assert '<details id="regression-details" open' in section  # a regression: the table is shown open
    assert html.escape(comparison.thresholds_text(), quote=False) in section
    assert html.escape(comparison.summary(), quote=False) in section
    assert " MiB" in section and "regressed" in section
    assert "cells only in the baseline" in section.lower()
    # the machines differ: the warning comes before the verdict, as in the terminal output
    assert section.index("CPU cores usable differs") < section.index('id="regression-verdict"')
    assert '<p class="badge badge-regressed" id="regression-verdict">REGRESSED: ' in section  # its state's colour
    assert 'class="headline bad" id="regression-headline"' in text
    # placed at the top: in the header and before the first chart, right after the decision
    assert 'id="regression-headline"' in text[: text.index("<main>")]
    assert text.index('<section id="decision"') < text.index('<section id="regression"')
    assert text.index('<section id="regression"') < text.index('class="plotly-graph-div"')
    assert "<script>alert(1)" not in text


def test_regression_section_says_when_nothing_is_comparable(tmp_path):
    base = write_run(tmp_path / "base", [make_record("base", device="cpu", dtype="fp32")], gpu=None)
    cur = write_run(tmp_path / "cur", [make_record("base")])
    text = report.build_report([cur], tmp_path / "r.html", baseline=base).read_text()
    section = text[text.index('<section id="regression"') :]
    assert "NOT COMPARABLE: nothing is comparable" in section
    assert "device cpu (baseline) vs cuda (current)" in section
    assert "OK:" not in section[: section.index("</section>")]


def test_regression_section_says_when_compare_refuses_the_pair(tmp_path, monkeypatch):
    import bench.regression.compare

    def refuse(baseline, current):
        raise UsageError(f"cannot compare: records of another schema {HOSTILE}")

    monkeypatch.setattr(bench.regression.compare, "compare_dirs", refuse)
    base = single_run(tmp_path / "base")
    text = report.build_report([single_run(tmp_path / "cur")], tmp_path / "r.html", baseline=base).read_text()
    section = text[text.index('<section id="regression"') :]
    assert "NOT COMPARED" in section and f"records of another schema {HOSTILE_ESCAPED}" in section
    assert "not run: cannot compare" in text[: text.index("<main>")]


def test_regression_section_says_when_compare_is_missing(tmp_path, monkeypatch):
    base = single_run(tmp_path / "base")
    monkeypatch.setitem(sys.modules, "bench.regression.compare", None)  # import fails
    text = report.build_report([single_run(tmp_path / "cur")], tmp_path / "r.html", baseline=base).read_text()
    assert "regression compare unavailable" in text


def test_records_with_missing_fields_still_render(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / store.RESULTS).write_text(
        '{"cell_id": "x", "variant": "base", "task": "<OD>", "status": "error", "error": null}\n'
        '{"cell_id": "y", "variant": "base", "task": "<OD>", "status": "ok", "latency_ms": null, "examples": [{}]}\n'
    )
    text = report.build_report([run], tmp_path / "r.html").read_text()
    assert "no reason recorded" in text and 'id="recommendations"' in text


def test_the_comparability_panel_shows_each_runs_load_and_differs_only_when_one_was_busy():
    from types import SimpleNamespace

    def run(start: float) -> SimpleNamespace:
        return SimpleNamespace(env={"host_load": {"cores": 4, "start": [start, 0.0, 0.0], "end": [start, 0.0, 0.0]}})

    def host_load(runs):
        return next(f for f in comparability.comparability(runs) if f.label == "host load")

    calm = host_load([run(0.3), run(1.1)])
    assert calm.values == ["1-min load 0.30 at start, 0.30 at end, on 4 cores",
                           "1-min load 1.10 at start, 1.10 at end, on 4 cores"]
    assert not calm.differs and calm.suspect == [False, False]  # two idle loads are never equal, and never matter
    busy = host_load([run(0.3), run(2.5), SimpleNamespace(env={})])
    assert busy.differs and busy.suspect == [False, True, False]
    assert busy.values[1].endswith("(busy at start and end)") and busy.values[2] == "not recorded"


def test_the_all_cells_block_holds_every_cell_once_with_its_sort_keys(tmp_path):
    import base64
    import zlib

    from bench.report.prices import load_prices
    from bench.report.report_rows import load_runs
    from bench.report.report_table import COLUMNS, COMPRESS_ROWS, headers, script_block, table_data

    runs = load_runs(list(gpu_and_cpu_runs(tmp_path / "runs")), load_prices(None))
    rows = [r for run in runs for r in run.rows]
    data = table_data(rows, 100.0, "agreement")
    assert data["page"] > 0 and len(data["rows"]) == len(rows) == 10
    names = [c.header for c in COLUMNS]
    for row, cells in zip(rows, data["rows"], strict=True):
        assert len(cells) == 1 + len(COLUMNS) and cells[0] == ("unstable" if row.flags else "")
        p50 = cells[1 + names.index("latency p50 ms")]  # [text, key to 4 significant figures]
        assert p50[1] == pytest.approx(row.p50, rel=1e-3) if row.p50 is not None else p50 == "–"
        setting = cells[1 + names.index("setting")]  # bare text, or [text with its flags, the setting]
        text = html.escape(row.setting) + "".join(
            f' <span class="status status-unstable flag">⚠ {html.escape(f)}</span>' for f in row.flags)
        assert setting == (text if not row.flags else [text, row.setting.lower()])
        assert cells[1 + names.index("cell")][1] == row.rec.cell_id  # the key: the whole id, not the text shown
        timing = cells[1 + names.index("timing")]
        assert data["titles"][timing[2]].startswith("clock=")  # the full timing, once per distinct text
    assert len(data["titles"]) < len(rows)
    # small: JSON with no "<" that could end its script element; large: deflated, the same data
    block = script_block(data)
    assert block.type == "application/json" and "<" not in block.text and json.loads(block.text) == data
    big = {**data, "rows": data["rows"] * (COMPRESS_ROWS // 10 + 1)}
    packed = script_block(big)
    assert packed.type == "application/x-deflate-base64" and len(packed.text) < len(json.dumps(big)) / 5
    assert json.loads(zlib.decompress(base64.b64decode(str(packed.text)))) == big
    assert [h["text"] for h in headers("agreement")] == names
