"""Charts that survive many runs: short trace labels with a key table, a palette whose colours are checked
apart, one colour per setting on a page, legends below the plots (issue 19, items 3 and 6)."""

from __future__ import annotations

import html
import itertools
import re
import sys
from collections import Counter
from pathlib import Path

import pytest

from bench.pages import chart_keys
from bench.pages.chart_keys import MAX_LABEL, run_short_names, short_labels
from bench.pages.page import BASE_COLORS, FLAG_COLOR, MIN_COLOR_DISTANCE, Palette, color_distance
from bench.report import report
from bench.results import Record

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "report"))
from report_factory import failed_run, figures, gpu_and_cpu_runs, random_run, single_run  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BASELINES = [ROOT / "reports" / "baselines" / n for n in ("smoke-cpu", "gpu-nvidia-h200", "gpu-nvidia-h200-graphs")]
# the legend entry, as the three committed baselines labelled it before
LONG = ("gpu-nvidia-h200-graphs base cuda fp16 bs128 cuda-graphs max_new=20 offline cache=static "
        "compile_vision=True prefetch=True preprocess=device")


def trace_labels(data: list[dict]) -> list[str]:
    """What a chart prints for its traces: legend names and the category labels of bars and boxes."""
    labels = [t["name"] for t in data if t.get("name")]
    for t in data:
        if t.get("type") in ("bar", "box") and t.get("orientation", "h" if t.get("type") == "box" else "v") == "h":
            labels += [y for y in t.get("y") or [] if isinstance(y, str)]
    return [html.unescape(label) for label in labels]


def key_table(page: str) -> dict[str, str]:
    """The page's key table: label -> full setting."""
    table = page[page.index('id="chart-key-table"') : page.index("</table>", page.index('id="chart-key-table"'))]
    rows = re.findall(r"<tr><td class=\"swatch\">.*?</td><td>\d+</td><td>(.*?)</td><td>.*?</td><td>(.*?)</td></tr>",
                      table, re.S)
    return {html.unescape(label): html.unescape(full) for label, full in rows}


def test_run_names_are_shortened_to_a_unique_tail():
    names = ["smoke-cpu", "gpu-nvidia-h200", "gpu-nvidia-h200-graphs"]
    assert run_short_names(names) == {"smoke-cpu": "smoke-cpu", "gpu-nvidia-h200": "nvidia-h200",
                                      "gpu-nvidia-h200-graphs": "h200-graphs"}
    # a tail two runs share is never used: both keep their full names
    assert run_short_names(["a-long-name-x", "b-long-name-x"]) == {"a-long-name-x": "a-long-name-x",
                                                                   "b-long-name-x": "b-long-name-x"}


def test_labels_keep_only_the_telling_settings_and_fit():
    words = LONG.split()
    axes = ["run", "variant", "device", "dtype", "batch_size", "compile", "max_new_tokens", "scenario",
            "settings.cache", "settings.compile_vision", "settings.prefetch", "settings.preprocess"]
    a = list(zip(axes, words, strict=True))
    b = [(axis, text.replace("bs128", "bs1").replace("offline", "single-stream")) for axis, text in a]
    c = [(axis, "gpu-nvidia-h200" if axis == "run" else text) for axis, text in a]
    labels = short_labels({"a": a, "b": b, "c": c})
    assert all(len(label) <= MAX_LABEL for label in labels.values())
    assert len(set(labels.values())) == 3
    # settings the same for every key are dropped; what tells the keys apart stays
    assert "cache" not in labels["a"] and "bs128" in labels["a"] and "bs1" in labels["b"]
    assert labels["a"].startswith("h200-graphs") and labels["c"].startswith("nvidia-h200")
    # a label that cannot be told apart within the limit is cut and points at its key-table row
    tight = short_labels({"x": [("run", "x" * 60)], "y": [("run", "y" * 60)]})
    assert tight == {"x": "x" * 37 + "…#1", "y": "y" * 37 + "…#2"}


def test_the_palette_is_checked_apart_and_never_repeats():
    distances = [color_distance(a, b) for a, b in itertools.combinations(BASE_COLORS, 2)]
    assert min(distances) >= MIN_COLOR_DISTANCE
    assert color_distance("#000000", "#ffffff") == pytest.approx(100.0, abs=0.5)
    assert color_distance("#8c564b", "#9c755f") < MIN_COLOR_DISTANCE  # the pair the issue saw is gone
    assert "#8c564b" not in BASE_COLORS
    palette = Palette()
    assert len({palette(n) for n in range(60)}) == 60
    assert FLAG_COLOR not in BASE_COLORS


def _reports(tmp_path: Path) -> dict[str, str]:
    made = {
        "failed": [failed_run(tmp_path / "failed")],
        "random": [random_run(tmp_path / "random")],
        "single": [single_run(tmp_path / "single")],
        "two-machines": list(gpu_and_cpu_runs(tmp_path / "two")),
        "three-baselines": BASELINES,
    }
    return {
        name: report.build_report(runs, tmp_path / f"{name}.html", latency_bound_ms=300, demand_qps=20).read_text()
        for name, runs in made.items()
    }


def test_no_trace_label_is_longer_than_40_and_the_key_table_maps_each(tmp_path):
    for name, page in _reports(tmp_path).items():
        keys = key_table(page)
        assert keys, name
        for data, layout in figures(page):
            labels = trace_labels(data)
            assert labels, name
            too_long = [label for label in labels if len(label) > MAX_LABEL]
            assert too_long == [], (name, too_long)
            assert layout["legend"]["orientation"] == "h"  # below the plot, not beside it
            for t in data:
                if t.get("type") in ("bar", "box"):
                    cells = [html.unescape(y).removesuffix(" ⚠") for y in t.get("y") or []]
                    assert set(cells) <= set(keys), (name, set(cells) - set(keys))
        if name == "three-baselines":
            # the key table gives the full setting of every label
            (label,) = [label for label, full in keys.items() if full == "<CAPTION> · " + LONG]
            assert label.startswith("CAPTION h200-graphs") and "bs128" in label
            assert "max_new=0" not in page  # a failed cell's never-resolved token budget is not a setting


def test_one_colour_per_setting_across_every_chart_of_a_page(tmp_path):
    page = _reports(tmp_path)["three-baselines"]
    colours: dict[str, set[str]] = {}
    for data, _ in figures(page):
        for t in data:
            colour = (t.get("marker") or {}).get("color")
            if t.get("name") and isinstance(colour, str):
                colours.setdefault(html.unescape(t["name"]).removesuffix(" ⚠"), set()).add(colour)
    assert len(colours) >= 10
    assert {name: c for name, c in colours.items() if len(c) > 1} == {}
    assert len({next(iter(c)) for c in colours.values()}) >= 8  # and the settings do not share one colour


def test_the_throughput_chart_never_joins_scenarios_and_one_batch_size_gets_a_sane_axis(tmp_path):
    pages = _reports(tmp_path)
    for name in ("three-baselines", "two-machines"):
        for data, layout in figures(pages[name]):
            if "throughput vs batch size" not in layout["title"]["text"]:
                continue
            for t in data:
                if t.get("mode") == "lines+markers":  # a joined line: one scenario, never single-stream
                    assert 1 not in t["x"] or len(t["x"]) == 1, (name, t["name"], t["x"])
    single = [layout for data, layout in figures(pages["single"]) if "throughput vs batch size" in layout["title"]["text"]]
    assert single and single[0]["xaxis"]["type"] == "linear" and single[0]["xaxis"]["range"] == [0, 2]


def test_random_weight_examples_are_collapsed_with_a_one_line_note(tmp_path):
    pages = _reports(tmp_path)
    random_page = pages["three-baselines"]
    section = random_page[random_page.index('<section id="examples">') :]
    assert '<details id="examples-noise" class="noise">' in section
    assert "outputs are noise" in section[: section.index("</summary>")]
    assert '<details id="examples-noise"' not in pages["failed"]  # pretrained outputs stay open


def _labels_key_by_key(parts: dict, limit: int = MAX_LABEL) -> dict:
    """The labels as short_labels made them before it counted projections: every key compared with every
    other (quadratic), kept here as the oracle the one-pass labels must equal."""
    keys = list(parts)
    runs = run_short_names(text for k in keys for axis, text in parts[k] if axis == "run")
    values = {k: dict(parts[k]) for k in keys}
    axes = list(dict.fromkeys(axis for k in keys for axis, _ in parts[k]))
    telling = [a for a in axes if len({values[k].get(a) for k in keys}) > 1]
    shown = {k: [a for a in telling if a in values[k]] for k in keys}

    def label(k):
        return " ".join(runs.get(values[k][a], values[k][a]) if a == "run" else chart_keys._abbreviate(values[k][a])
                        for a in shown[k])

    for k in keys:
        for axis in sorted(shown[k], key=chart_keys._rank, reverse=True):
            if len(label(k)) <= limit:
                break
            kept = [a for a in shown[k] if a != axis]
            if kept and all(any(values[o].get(a) != values[k][a] for a in kept) for o in keys if o != k):
                shown[k] = kept
    out = {k: label(k) or "all cells" for k in keys}
    counted = Counter(out.values())
    for n, k in enumerate(keys, 1):
        if len(out[k]) > limit or counted[out[k]] > 1:
            out[k] = out[k][: limit - len(f"…#{n}")].rstrip() + f"…#{n}"
    return out


def test_one_pass_labels_equal_the_key_by_key_labels():
    import random

    rng = random.Random(7)
    choices = {"run": ["gpu-nvidia-h200", "gpu-nvidia-h200-graphs", "smoke-cpu"], "task": ["<CAPTION>", "<OD>"],
               "variant": ["base", "large", "base-ft"], "dtype": ["fp32", "fp16", "bf16"],
               "batch_size": ["bs1", "bs8", "bs32", "bs128"], "scenario": ["offline", "single-stream", "server"],
               "settings.compile_vision": ["compile_vision=True", "compile_vision=False"],
               "settings.preprocess": ["preprocess=device", "preprocess=host"]}
    for trial in range(40):
        parts = {}
        for n in range(rng.randint(1, 60)):
            axes = [a for a in choices if a in ("run", "task") or rng.random() < 0.8]
            parts[n] = [(a, rng.choice(choices[a])) for a in axes]
        limit = rng.choice([12, 20, MAX_LABEL])
        assert short_labels(parts, limit) == _labels_key_by_key(parts, limit), trial
    # and the report's own labels, on the long settings and the tight cut above
    words = LONG.split()
    axes = ["run", "variant", "device", "dtype", "batch_size", "compile", "max_new_tokens", "scenario",
            "settings.cache", "settings.compile_vision", "settings.prefetch", "settings.preprocess"]
    a = list(zip(axes, words, strict=True))
    b = [(axis, text.replace("bs128", "bs1")) for axis, text in a]
    assert short_labels({"a": a, "b": b}) == _labels_key_by_key({"a": a, "b": b})


def test_above_the_chart_limit_the_charts_draw_the_leading_settings_and_say_so():
    from bench.report.chart_style import BAR_CELLS, CHART_CELLS, LEADING_SERIES, chart_rows, leading
    from bench.report.report_rows import Row

    def row(n: int, series: int, ips: float, status: str = "ok") -> Row:
        rec = Record.from_dict({"cell_id": f"c{n}", "status": status, "throughput": {"images_per_s": ips}})
        return Row(rec=rec, run="r", device_name="cpu",
                   series=f"s{series}")

    few = [row(n, n % 7, 1.0 + n) for n in range(CHART_CELLS)]
    assert chart_rows(few) == (few, "")  # at the limit: every cell, no note
    many = [row(n, n % 50, 1.0 + n) for n in range(CHART_CELLS + 200)] + [row(0, 49, 1e9, "error")]
    chosen, note = chart_rows(many)
    best = {f"s{s}" for s in range(50 - LEADING_SERIES, 50)}  # the highest cells are in the last series
    assert {r.series for r in chosen} == best and all(r.ok for r in chosen)
    assert len(chosen) == sum(r.series in best for r in many if r.ok)
    assert f"{len(chosen):,} cells of the {LEADING_SERIES} settings" in note and "all-cells table" in note
    items = list(range(BAR_CELLS + 5))
    assert leading(items, "cells") == (items[:BAR_CELLS], f"The best {BAR_CELLS} of {BAR_CELLS + 5} cells are drawn; "
                                        "the all-cells table has every one.")
    assert leading(items[:3], "cells") == (items[:3], "")
