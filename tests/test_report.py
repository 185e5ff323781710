"""The HTML report: rendering, escaping, derived figures and the recommendation (no browser here)."""

from __future__ import annotations

import base64
import io
import re
import sys
import types
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from bench import report, store
from bench.errors import UsageError

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "report"))
from report_factory import (  # noqa: E402
    HOSTILE,
    HOSTILE_ESCAPED,
    example_image,
    failed_run,
    make_record,
    random_run,
    single_run,
    write_run,
)


class _Scripts(HTMLParser):
    """Collects every script element and every element's tag name."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.tags: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "script":
            self._in_script = True
            self.scripts.append("")

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
    return text.replace(parser.scripts[0], "")


def test_failed_cells_render_escaped_with_one_inlined_plotly(tmp_path):
    out, text = _render(tmp_path, failed_run, latency_bound_ms=300, accuracy_floor=1.35)
    assert out == tmp_path / "report.html"
    parser = _Scripts()
    parser.feed(text)
    charts = text.count('class="plotly-graph-div"')
    assert charts >= 8
    # plotly.js once, then one small script per chart and nothing else: no injected script element
    assert len(parser.scripts) == 1 + charts
    assert "Plotly" in parser.scripts[0] and len(parser.scripts[0]) > 1_000_000
    assert all(s.strip().startswith("window.PLOTLYENV") for s in parser.scripts[1:])
    assert "<script>alert(1)" not in text
    # the hostile variant name, settings value, error message, env value and example text show as text
    assert text.count(HOSTILE_ESCAPED) >= 5
    assert f"RuntimeError: {HOSTILE_ESCAPED}" in text
    # the failed cells are listed with their reasons
    failed = text[text.index('id="failed-cells"') :]
    failed = failed[: failed.index("</table>")]
    for reason in ("OutOfMemoryError: CUDA out of memory", "skipped: int8 needs bitsandbytes"):
        assert reason in failed
    assert "coefficient of variation 31%" in text
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
    assert "none meets it: accuracy not measured (random weights)" in rec
    # no accuracy, so no frontier: said plainly instead of an empty chart
    pareto = text[text.index('id="pareto"') : text.index('id="throughput"')]
    assert "plotly-graph-div" not in pareto and "No accuracy was measured" in pareto
    # reported numbers still appear, labelled
    assert '<span class="tag reported">reported</span> COCO caption CIDEr (Karpathy test): 133.0' in text


def test_random_weights_without_a_floor_picks_the_cheapest_within_the_bound(tmp_path):
    runs = report.load_runs([random_run(tmp_path / "run")], report.load_prices())
    rows = runs[0].rows
    rec = report.recommend(rows, "<CAPTION>", 200.0, None)
    within = [r for r in rows if r.p90 <= 200.0]
    assert rec.best is min(within, key=lambda r: r.cost_per_million)
    assert rec.met == len(within)
    assert "accuracy not measured (random weights)" in rec.notes[0]


def test_single_cell_renders_every_section(tmp_path):
    _, text = _render(tmp_path, single_run)
    for anchor in ("summary", "recommendation", "environment", "size-quality", "pareto", "throughput"):
        assert f'id="{anchor}"' in text
    for anchor in ("stages", "memory", "distributions", "cost", "results", "examples", "method"):
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


def test_cost_per_million_images_is_derived_from_price_and_throughput(tmp_path):
    prices = tmp_path / "prices.toml"
    prices.write_text('[prices]\n"H100" = 3.6\ncpu = 0.36\n[energy]\nusd_per_kwh = 0.2\n')
    rec = make_record("base", p50=100.0)
    rec.throughput = {"images_per_s": 10.0, "tokens_per_s": 1.0}
    rec.energy = {"joules_per_image": 36.0, "source": "nvml"}
    run = write_run(tmp_path / "run", [rec])
    row = report.load_runs([run], report.load_prices(prices))[0].rows[0]
    assert row.device_name == "NVIDIA H100 80GB HBM3"
    assert row.price == ("H100", 3.6)
    assert row.cost_per_million == pytest.approx(3.6 / 3600 / 10 * 1e6)  # 100 USD
    assert row.energy_cost_per_million == pytest.approx(36.0 * 1e6 / 3.6e6 * 0.2)  # 2 USD
    text = report.build_report([run], tmp_path / "r.html", prices=prices).read_text()
    assert "H100: $3.60/h" in text


def test_price_lookup_prefers_exact_then_longest_contained_key():
    table = report.PriceTable({"NVIDIA A10": 1.0, "NVIDIA A100": 2.0, "cpu": 0.1, "Tesla T4": 0.3}, "t")
    assert table.lookup("NVIDIA A100-SXM4-80GB") == ("NVIDIA A100", 2.0)
    assert table.lookup("NVIDIA A10") == ("NVIDIA A10", 1.0)
    assert table.lookup("CPU") == ("cpu", 0.1)
    assert table.lookup("AMD Instinct MI300X") is None


def test_default_price_table_is_documented_and_covers_the_lent_gpus():
    text = report.DEFAULT_PRICES.read_text()
    assert "EXAMPLE" in text and "--prices" in text
    table = report.load_prices()
    for name in ("cpu", "NVIDIA H100 80GB HBM3", "NVIDIA H200", "NVIDIA L4", "NVIDIA L40S"):
        assert table.lookup(name) is not None, name
    assert table.lookup("NVIDIA L4")[0] == "NVIDIA L4"


@pytest.mark.parametrize(
    "content, fragment",
    [
        (None, "not found"),
        ("[prices\n", "not valid TOML"),
        ("x = 1\n", "no [prices]"),
        ('[prices]\ncpu = "cheap"\n', "cpu"),
    ],
)
def test_bad_price_tables_are_usage_errors(tmp_path, content, fragment):
    path = tmp_path / "p.toml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UsageError, match=re.escape(fragment)):
        report.load_prices(path)


def test_bad_inputs_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="no results.jsonl"):
        report.build_report([tmp_path], tmp_path / "r.html")
    run = single_run(tmp_path / "run")
    with pytest.raises(UsageError, match="latency bound"):
        report.build_report([run], tmp_path / "r.html", latency_bound_ms=-5)
    with pytest.raises(UsageError, match="baseline"):
        report.build_report([run], tmp_path / "r.html", baseline=tmp_path / "nope")


def test_pareto_front_known_answer():
    points = [(10, 0.5), (20, 0.7), (15, 0.4), (30, 0.7), (40, 0.9), (5, 0.1)]
    assert report.pareto_front(points) == [5, 0, 1, 4]
    # throughput: higher x is better
    assert report.pareto_front(points, x_lower=False) == [4]
    # an error rate: lower y is better
    assert report.pareto_front(points, y_higher=False) == [5]


def test_recommendation_cheapest_within_bound_and_floor_else_none(tmp_path):
    records = [
        make_record("base", p50=50.0, accuracy=1.30, seed=1),
        make_record("large", p50=120.0, accuracy=1.42, seed=2),
        make_record("large", dtype="fp32", p50=400.0, accuracy=1.43, seed=3),
    ]
    rows = report.load_runs([write_run(tmp_path / "run", records)], report.load_prices())[0].rows
    assert report.recommend(rows, "<CAPTION>", 200.0, 1.4).best.rec["variant"] == "large"
    assert report.recommend(rows, "<CAPTION>", 200.0, 1.0).best.rec["variant"] == "base"
    none = report.recommend(rows, "<CAPTION>", 100.0, 1.4)
    assert none.best is None and none.verdict.startswith(report.NONE_MEETS)
    assert report.recommend(rows, "<CAPTION>", 10.0, None).verdict.startswith(report.NONE_MEETS)


def test_recommendation_without_a_price_picks_the_fastest_and_says_cost_unknown(tmp_path):
    prices = tmp_path / "p.toml"
    prices.write_text("[prices]\ncpu = 0.1\n")
    records = [make_record("base", p50=50.0, seed=1), make_record("base", batch_size=8, p50=60.0, seed=2)]
    rows = report.load_runs([write_run(tmp_path / "run", records)], report.load_prices(prices))[0].rows
    rec = report.recommend(rows, "<CAPTION>", None, None)
    assert rec.best.rec["batch_size"] == 8
    assert "cost unknown (no price for NVIDIA H100 80GB HBM3)" in rec.verdict


def test_error_rate_floor_is_a_ceiling(tmp_path):
    a = make_record("base", task="<OCR>", p50=50.0, seed=1, accuracy=None)
    b = make_record("large", task="<OCR>", p50=90.0, seed=2, accuracy=None)
    a.accuracy, b.accuracy = {"wer": 0.40}, {"wer": 0.10}
    rows = report.load_runs([write_run(tmp_path / "run", [a, b])], report.load_prices())[0].rows
    rec = report.recommend(rows, "<OCR>", None, 0.2)
    assert rec.best.rec["variant"] == "large" and "wer ≤ 0.2" in rec.constraint


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
    assert report.device_name({"device": "cuda:1"}, env) == "NVIDIA H200"
    assert report.device_name({"device": "cuda"}, env) == "NVIDIA L4"
    assert report.device_name({"device": "cpu"}, env) == "cpu"
    assert report.device_name({"device": "cuda"}, {}) == "cuda"


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
    uri, note = report._draw_example(run, box)
    img = _decode(uri)
    assert img.size == (400, 200) and note == ""
    assert img.getpixel((240, 160)) != (255, 255, 255)  # bottom-right corner of the box, scaled x2
    assert img.getpixel((150, 100)) == (255, 255, 255)  # inside the box stays clear
    poly = {
        "width": 200,
        "height": 100,
        "answer": {"polygons": [[[10, 10, 190, 10, 100, 90]]], "labels": ["a"]},
    }
    uri, note = report._draw_example(run, poly)
    assert "blank canvas" in note
    assert _decode(uri).getpixel((100, 10)) != (235, 235, 235)  # on the top edge
    quad = {
        "width": 200,
        "height": 100,
        "answer": {"quad_boxes": [[10, 10, 50, 10, 50, 40, 10, 40]], "labels": ["t"]},
    }
    assert len(report._shapes(quad["answer"])) == 1


def test_example_image_outside_the_run_dir_is_not_read(tmp_path):
    outside = tmp_path / "secret.png"
    Image.new("RGB", (10, 10)).save(outside)
    run = tmp_path / "run"
    run.mkdir()
    uri, note = report._draw_example(run, {"image_file": "../secret.png"})
    assert uri is None and note == "image file not saved"


@dataclass
class _Row:
    cell_id: str
    label: str
    metric: str
    baseline: float
    current: float
    ratio: float
    ci_low: float
    ci_high: float
    verdict: str


@dataclass
class _Comparison:
    rows: list = field(default_factory=list)
    unmatched_baseline: list = field(default_factory=list)
    unmatched_current: list = field(default_factory=list)
    env_warnings: list = field(default_factory=list)
    regressed: bool = False


def test_regression_section_from_compare(tmp_path, monkeypatch):
    base = single_run(tmp_path / "base")
    cur = single_run(tmp_path / "cur")
    seen = []

    def compare_dirs(baseline, current):
        seen.append((baseline, current))
        return _Comparison(
            rows=[_Row("c1", f"base {HOSTILE}", "latency_ms.p50", 75.0, 90.0, 1.2, 1.1, 1.3, "regressed")],
            unmatched_baseline=["large cuda fp16 bs1"],
            env_warnings=[f"GPU differs: {HOSTILE}"],
            regressed=True,
        )

    monkeypatch.setitem(sys.modules, "bench.compare", types.SimpleNamespace(compare_dirs=compare_dirs))
    text = report.build_report([cur], tmp_path / "r.html", baseline=base).read_text()
    assert seen == [(base, cur)]
    section = text[text.index('id="regression"') :]
    assert "REGRESSED" in section and "verdict-regressed" in section
    assert (
        f"GPU differs: {HOSTILE_ESCAPED}" in section
        and "Only in the baseline: large cuda fp16 bs1" in section
    )
    assert "<script>alert(1)" not in text


def test_regression_section_says_when_compare_is_missing(tmp_path, monkeypatch):
    base = single_run(tmp_path / "base")
    monkeypatch.setitem(sys.modules, "bench.compare", None)  # import fails
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
