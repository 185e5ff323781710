"""The report in headless Chromium: it loads offline with no console message and every chart renders.

Chromium is Debian's ``chromium`` package. Where it is missing, the test installs it once when the
environment variable CI is set or FLORENCE2_BENCH_INSTALL_BROWSER=1, and otherwise skips with the
reason. Screenshots are kept under test-artifacts/ (gitignored) for a person to look at.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.report import report

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "report"))
from report_factory import HOSTILE_ESCAPED, failed_run, gpu_and_cpu_runs, random_run, single_run  # noqa: E402

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    # a request the page makes fails fast (and is caught by the net log below)
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--enable-logging=stderr",
    "--v=0",
    "--virtual-time-budget=20000",
)


def _install_once() -> str | None:
    """apt-get install chromium, only where CI or FLORENCE2_BENCH_INSTALL_BROWSER=1 asks for it."""
    if not (os.environ.get("CI") or os.environ.get("FLORENCE2_BENCH_INSTALL_BROWSER") == "1"):
        return None
    cmd = "apt-get install -y chromium || (apt-get update && apt-get install -y chromium)"
    subprocess.run(["sh", "-c", cmd], check=False, capture_output=True, timeout=900)
    return shutil.which("chromium")


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium") or _install_once()
    if path is None:
        pytest.skip(
            "headless Chromium not found (Debian package 'chromium'); install it, or set "
            "CI=1 or FLORENCE2_BENCH_INSTALL_BROWSER=1 to let this test apt-get install it"
        )
    return path


def _chromium(binary: str, profile: Path, page: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [binary, *FLAGS, f"--user-data-dir={profile}", *extra, page.as_uri()],
        capture_output=True,
        text=True,
        timeout=180,
    )


def _page_requests(net_log: Path) -> list[str]:
    """Non-file URLs requested on behalf of the page (Chromium's own background requests excluded)."""
    events = json.loads(net_log.read_text()).get("events", [])
    return sorted(
        {
            e["params"]["url"]
            for e in events
            if str(e.get("params", {}).get("network_isolation_key", "")).startswith("file://")
            and not str(e["params"].get("url", "file:")).startswith(("file:", "data:"))
        }
    )


def _unrendered_charts(dom: str) -> list[str]:
    """Ids of the plotly chart divs that hold no rendered SVG after the page settled."""
    starts = [(m.start(), m.group(1)) for m in re.finditer(r'<div id="([^"]+)" class="plotly-graph-div', dom)]
    missing = []
    for n, (start, chart_id) in enumerate(starts):
        end = starts[n + 1][0] if n + 1 < len(starts) else len(dom)
        if 'class="main-svg"' not in dom[start:end]:
            missing.append(chart_id)
    return missing


def load_offline(binary: str, tmp_path: Path, page: Path, screenshot: str, charts: int) -> str:
    """Open ``page`` once (settled DOM + a screenshot under ARTIFACTS), check it made no console message and
    no network request and that all ``charts`` rendered; returns the DOM."""
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / screenshot
    shot.unlink(missing_ok=True)
    net_log = tmp_path / "net-log.json"
    loaded = _chromium(binary, tmp_path / "profile", page, "--dump-dom", f"--screenshot={shot}",
                       "--window-size=1400,3000", f"--log-net-log={net_log}")
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert [line for line in loaded.stderr.splitlines() if ":CONSOLE" in line] == []
    assert _page_requests(net_log) == []
    dom = loaded.stdout
    assert dom.count('class="plotly-graph-div') == charts
    assert _unrendered_charts(dom) == []
    assert shot.stat().st_size > 10_000
    return dom


def _two_machines(root: Path) -> list[Path]:
    return list(gpu_and_cpu_runs(root))


@pytest.mark.parametrize(
    "name, make",
    [
        ("failed", lambda d: [failed_run(d)]),
        ("random", lambda d: [random_run(d)]),
        ("single", lambda d: [single_run(d)]),
        ("two-machines", _two_machines),
    ],
)
def test_report_loads_without_console_errors_and_every_chart_renders(tmp_path, chromium, name, make):
    runs = make(tmp_path / name)
    page = report.build_report(
        runs, tmp_path / f"{name}.html", latency_bound_ms=300, accuracy_floor=1.35, demand_qps=50,
        baseline=runs[0],
    )
    charts = page.read_text().count('class="plotly-graph-div"')
    assert charts > 0

    dom = load_offline(chromium, tmp_path, page, f"report-{name}.png", charts)
    # the answer (with its top options' chart) and the decision come first: before the evidence's charts
    assert dom.index('<section id="decision"') < dom.index('<section id="tradeoff"')
    first_chart = dom.index('class="plotly-graph-div')
    assert first_chart > dom.index('<section id="decision"') or first_chart < dom.index('<nav id="toc"')
    # the hostile strings are text in the live DOM too, never an element
    assert "<script>alert(1)" not in dom and (HOSTILE_ESCAPED in dom or name == "two-machines")
    shutil.copy(page, ARTIFACTS / f"report-{name}.html")


# Appended to a copy of a report: sort the all-cells table by images/s (twice: descending), then filter it,
# and write what the page shows into the DOM for --dump-dom to read.
_DRIVE_TABLE = """
<script>
(function () {
  var table = document.getElementById("all-cells");
  var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
  var col = heads.findIndex(function (th) { return th.textContent.trim() === "images/s"; });
  heads[col].click();
  var up = Array.prototype.map.call(table.tBodies[0].rows, function (r) { return r.cells[col].getAttribute("data-v"); });
  heads[col].click();
  var down = Array.prototype.map.call(table.tBodies[0].rows, function (r) { return r.cells[col].getAttribute("data-v"); });
  var input = document.querySelector("input[data-filter=all-cells]");
  input.value = "offline large";
  input.dispatchEvent(new Event("input"));
  var shown = Array.prototype.filter.call(table.tBodies[0].rows, function (r) { return !r.hidden; })
    .map(function (r) { return r.cells[1].textContent.trim(); });
  var out = document.createElement("pre");
  out.id = "table-probe";
  out.textContent = JSON.stringify({up: up, down: down, shown: shown,
                                    count: document.getElementById("all-cells-count").textContent});
  document.body.appendChild(out);
})();
</script>
"""


def test_the_all_cells_table_sorts_and_filters_in_the_page(tmp_path, chromium):
    runs = list(gpu_and_cpu_runs(tmp_path / "runs"))
    page = report.build_report(runs, tmp_path / "r.html", latency_bound_ms=100)
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", _DRIVE_TABLE + "</body>"))
    loaded = _chromium(chromium, tmp_path / "profile", probe, "--dump-dom")
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert [line for line in loaded.stderr.splitlines() if ":CONSOLE" in line] == []
    found = re.search(r'<pre id="table-probe">(.*?)</pre>', loaded.stdout, re.S)
    assert found, "the probe script did not run"
    result = json.loads(found.group(1).replace("&quot;", '"'))
    up = [float(v) for v in result["up"] if v]
    down = [float(v) for v in result["down"] if v]
    assert up == sorted(up) and down == sorted(down, reverse=True) and len(up) == 10
    assert result["shown"] == ["h100 large cuda fp16 bs32 offline ⚠ unstable"]
    assert result["count"] == "1 of 10 rows"


# Appended to a page shown in an iframe of a given width (headless Chromium's window is at least 500 px
# wide; an iframe is not): what a reader at that width sees, written into the parent's DOM.
_LAYOUT_PROBE = """
<script>
window.addEventListener("load", function () { setTimeout(function () {
  function box(el) { var r = el.getBoundingClientRect(); return {left: r.left, right: r.right, width: r.width}; }
  var plots = Array.prototype.map.call(document.querySelectorAll(".plotly-graph-div"), function (gd) {
    return {chart: (gd.closest("figure") || gd).getAttribute("data-chart"), w: gd._fullLayout._size.w};
  });
  var planner = {};
  var table = document.querySelector("table.answer");
  if (table) {
    Array.prototype.forEach.call(table.tBodies[0].rows[0].cells, function (td) {
      var label = td.getAttribute("data-label");
      if (label) { planner[label] = box(td); }
    });
  }
  var out = window.parent.document.createElement("pre");
  out.id = "layout-probe";
  out.textContent = JSON.stringify({inner: window.innerWidth, scroll: document.documentElement.scrollWidth,
                                    plots: plots, planner: planner});
  window.parent.document.body.appendChild(out);
}, 300); });
</script>
"""


def layout_at(binary: str, tmp_path: Path, page: Path, width: int) -> dict:
    """The page laid out ``width`` px wide: viewport and document widths, each plot area's width, and
    the first answer row's cells (by column)."""
    import html

    inner = page.read_text().replace("</body>", _LAYOUT_PROBE + "</body>")
    frame = tmp_path / f"frame-{width}.html"
    frame.write_text(f'<!DOCTYPE html><html><body style="margin:0"><iframe style="width:{width}px;height:1600px;'
                     f'border:0" srcdoc="{html.escape(inner, quote=True)}"></iframe></body></html>')
    loaded = _chromium(binary, tmp_path / f"profile-{width}", frame, "--dump-dom", "--window-size=1500,1700")
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    found = re.search(r'<pre id="layout-probe">(.*?)</pre>', loaded.stdout, re.S)
    assert found, "the layout probe did not run"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


BASELINES = [Path(__file__).resolve().parent.parent / "reports" / "baselines" / name
             for name in ("smoke-cpu", "gpu-nvidia-h200", "gpu-nvidia-h200-graphs")]


@pytest.mark.parametrize("name", ["three-baselines", "two-machines"])
def test_no_plot_is_narrower_than_300_px_at_1400_and_the_page_fits_420_px(tmp_path, chromium, name):
    runs = BASELINES if name == "three-baselines" else list(gpu_and_cpu_runs(tmp_path / "runs"))
    page = report.build_report(runs, tmp_path / f"{name}.html", latency_bound_ms=300, demand_qps=20)
    wide = layout_at(chromium, tmp_path, page, 1400)
    assert wide["scroll"] == wide["inner"] == 1400
    assert len(wide["plots"]) == page.read_text().count('class="plotly-graph-div"') > 5
    assert [p for p in wide["plots"] if p["w"] < 300] == []
    narrow = layout_at(chromium, tmp_path, page, 420)
    # no page-level horizontal scroll: wide tables and charts scroll inside their own boxes
    assert narrow["inner"] == 420 and narrow["scroll"] <= 420
    # the answer's device and cost columns are on screen, one block per row
    if name == "two-machines":
        shown = {k: v for k, v in narrow["planner"].items() if v["width"] > 0 and v["left"] >= 0 and v["right"] <= 420}
        assert {"device kind", "devices"} <= set(shown), narrow["planner"]
        assert any(k.startswith("USD per month") for k in shown), narrow["planner"]


# Sort the all-cells table by images/s ascending, then descending, and read which rows come last.
_SORT_MISSING = """
<script>
(function () {
  var table = document.getElementById("all-cells");
  var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
  var col = heads.findIndex(function (th) { return th.textContent.trim() === "images/s"; });
  function order() {
    return Array.prototype.map.call(table.tBodies[0].rows, function (r) { return r.cells[col].getAttribute("data-v"); });
  }
  heads[col].click();
  var up = order();
  heads[col].click();
  var out = document.createElement("pre");
  out.id = "sort-probe";
  out.textContent = JSON.stringify({up: up, down: order()});
  document.body.appendChild(out);
})();
</script>
"""


def test_sorting_puts_cells_without_a_value_last_in_both_directions(tmp_path, chromium):
    page = report.build_report([failed_run(tmp_path / "run")], tmp_path / "r.html")
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", _SORT_MISSING + "</body>"))
    loaded = _chromium(chromium, tmp_path / "profile", probe, "--dump-dom")
    found = re.search(r'<pre id="sort-probe">(.*?)</pre>', loaded.stdout, re.S)
    assert found, loaded.stderr[-2000:]
    result = json.loads(found.group(1).replace("&quot;", '"'))
    for direction in ("up", "down"):
        values = result[direction]
        missing = [n for n, v in enumerate(values) if v in ("", "None")]
        assert missing and missing == list(range(len(values) - len(missing), len(values))), (direction, values)
        numbers = [float(v) for v in values if v not in ("", "None")]
        assert numbers == sorted(numbers, reverse=direction == "down")
