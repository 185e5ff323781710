"""The report in headless Chromium: it loads offline with no console message, its first screen holds the
answer before any chart script runs, and every chart renders once scrolled to (``Browser`` drives the page
over the DevTools protocol, in real time).

Chromium is Debian's ``chromium`` package. Where it is missing, the test installs it once when the
environment variable CI is set or FLORENCE2_BENCH_INSTALL_BROWSER=1, and otherwise skips with the
reason. Screenshots are kept under test-artifacts/ (gitignored) for a person to look at.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

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


# The page draws a chart or a data table only when it comes near the screen (bench/templates/lazy.js), after
# the first screen is drawn. drawAll() scrolls every chart and data table into view in turn, waits until each
# is drawn (no longer aria-busy; at most 60 s each), then scrolls back to the top; it resolves when done.
DRAW_ALL = """
function drawAll() {
  var parts = Array.prototype.slice.call(document.querySelectorAll(".plotly-graph-div, table.datatable"));
  return new Promise(function (done) {
    var i = 0, since = Date.now();
    (function next() {
      if (i === parts.length) { window.scrollTo(0, 0); requestAnimationFrame(function () { done(); }); return; }
      parts[i].scrollIntoView();
      if (!parts[i].hasAttribute("aria-busy") || Date.now() - since > 60000) { i += 1; since = Date.now(); }
      setTimeout(next, 20);
    })();
  });
}
"""


class Browser:
    """Headless Chromium with one page, driven over the DevTools protocol (--remote-debugging-pipe: requests on
    fd 3, replies and events on fd 4, each a JSON text ended by NUL) in real time: every step waits for an
    event or a promise the page resolves, never for a fixed delay. Opening returns once the page's load event
    fired. Chromium's stderr (console messages) is kept in ``log``."""

    def __init__(self, binary: str, profile: Path, page: Path, *extra: str) -> None:
        to_chrome, self._out = os.pipe()
        self._in, from_chrome = os.pipe()
        self.log = profile.with_suffix(".log")
        profile.mkdir(parents=True, exist_ok=True)

        def pipes() -> None:  # in the child: the pipes as its fds 3 and 4 (copied above 10 first: a pipe may be 3 or 4)
            read, write = fcntl.fcntl(to_chrome, fcntl.F_DUPFD, 10), fcntl.fcntl(from_chrome, fcntl.F_DUPFD, 10)
            os.dup2(read, 3)
            os.dup2(write, 4)

        with self.log.open("w") as err:
            self.proc = subprocess.Popen(
                [binary, *FLAGS, "--remote-debugging-pipe", f"--user-data-dir={profile}", *extra, "about:blank"],
                stdout=subprocess.DEVNULL, stderr=err, preexec_fn=pipes, close_fds=False)  # noqa: PLW1509
        os.close(to_chrome)
        os.close(from_chrome)
        self._buffer, self._id, self._events = b"", 0, []
        targets = self.send("Target.getTargets")["targetInfos"]
        target = next(t["targetId"] for t in targets if t["type"] == "page")
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.send("Page.enable", self.session)
        self.send("Page.navigate", self.session, url=page.as_uri())
        while not any(e["method"] == "Page.loadEventFired" for e in self._events):
            self._events.append(self._message())

    def _message(self) -> dict:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._in], [], [], 180)
            assert ready, "Chromium sent nothing in 180 s"
            chunk = os.read(self._in, 1 << 20)
            assert chunk, f"Chromium closed its pipe: {self.log.read_text()[-2000:]}"
            self._buffer += chunk
        text, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(text)

    def send(self, method: str, session: str | None = None, **params: Any) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params, **({"sessionId": session} if session else {})}
        os.write(self._out, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._message()
            if reply.get("id") == self._id:
                assert "error" not in reply, reply["error"]
                return reply["result"]
            if "method" in reply:
                self._events.append(reply)

    def run(self, script: str) -> Any:
        """The value of ``script`` (an expression; a promise is waited for) in the page."""
        result = self.send("Runtime.evaluate", self.session, expression=script, awaitPromise=True, returnByValue=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", self.session)["data"]))

    def close(self) -> list[str]:
        """Close Chromium; the console messages it logged."""
        self.send("Browser.close")
        self.proc.wait(timeout=60)
        os.close(self._in)
        os.close(self._out)
        return [line for line in self.log.read_text().splitlines() if ":CONSOLE" in line]


def load_offline(binary: str, tmp_path: Path, page: Path, screenshot: str, charts: int) -> str:
    """Open ``page`` once and scroll through it (settled DOM + a screenshot under ARTIFACTS), check it made no
    console message and no network request and that all ``charts`` rendered once scrolled to; returns the DOM."""
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / screenshot
    shot.unlink(missing_ok=True)
    net_log = tmp_path / "net-log.json"
    browser = Browser(binary, tmp_path / "profile", page, "--window-size=1400,3000", f"--log-net-log={net_log}")
    browser.run(f"({DRAW_ALL})()")
    dom = browser.run("document.documentElement.outerHTML")
    browser.screenshot(shot)
    assert browser.close() == []
    assert _page_requests(net_log) == []
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


# Appended to a copy of a report: at its load event, whether plotly.js ran, how many charts are drawn, how many
# data tables wait to be read, and where the first answer line is.
_AT_LOAD = """
<script>
window.addEventListener("load", function () {
  var line = document.querySelector(".answer-line").getBoundingClientRect();
  window.atLoad = {plotly: !!window.Plotly, drawn: document.querySelectorAll(".main-svg").length,
                   waiting: document.querySelectorAll("table.datatable[aria-busy]").length,
                   answer: [line.top, line.bottom, window.innerHeight]};
});
</script>
"""
# Whether each chart is drawn, and how many screens below the top of the view it starts.
CHARTS = "Array.prototype.slice.call(document.querySelectorAll('.plotly-graph-div'))"
DRAWN = f"{CHARTS}.map(function (c) {{ return !!c.querySelector('.main-svg'); }})"
SCREENS = f"{CHARTS}.map(function (c) {{ return c.getBoundingClientRect().top / innerHeight; }})"
# Unscrolled: once every chart that starts within two screens (the view and one screen below it) is drawn, and
# two frames later, which charts are drawn.
SETTLED = f"""new Promise(function (done) {{
  (function wait() {{
    if ({CHARTS}.some(function (c) {{ return c.getBoundingClientRect().top < 2 * innerHeight && c.hasAttribute("aria-busy"); }})) {{
      setTimeout(wait, 20);
      return;
    }}
    requestAnimationFrame(function () {{ requestAnimationFrame(function () {{ setTimeout(function () {{ done({DRAWN}); }}, 0); }}); }});
  }})();
}})"""


def test_the_first_screen_holds_the_answer_and_a_chart_is_drawn_once_scrolled_to(tmp_path, chromium):
    runs = list(gpu_and_cpu_runs(tmp_path / "runs"))
    page = report.build_report(runs, tmp_path / "r.html", latency_bound_ms=300, demand_qps=20)
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", _AT_LOAD + "</body>"))
    browser = Browser(chromium, tmp_path / "profile", probe, "--window-size=1400,900")
    at_load, screens = browser.run("window.atLoad"), browser.run(SCREENS)
    settled = browser.run(SETTLED)
    scrolled = browser.run(f"({DRAW_ALL})().then(function () {{ return {DRAWN}; }})")
    painted = browser.run("performance.getEntriesByName('first-contentful-paint').length")
    assert browser.close() == []
    # the answer's first line is on the first screen; at the load event no chart script had run and no data
    # table had been read
    top, bottom, height = at_load["answer"]
    assert 0 <= top < bottom <= height and painted == 1
    assert at_load["plotly"] is False and at_load["drawn"] == 0 and at_load["waiting"] == 2
    # unscrolled, the charts within a screen of the view are drawn, those further down are not
    assert len(screens) > 5 and max(screens) > 3 and min(screens) < 2
    assert [s for s, drawn in zip(screens, settled, strict=True) if drawn != (s < 2)] == []
    # scrolled to, every chart is drawn
    assert all(scrolled)


# Once the all-cells table is drawn, sort it by images/s (twice: descending), then filter it: what the page shows.
_DRIVE_TABLE = f"""({DRAW_ALL})().then(function () {{
  var table = document.getElementById("all-cells");
  var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
  var col = heads.findIndex(function (th) {{ return th.textContent.trim() === "images/s"; }});
  heads[col].click();
  var up = Array.prototype.map.call(table.tBodies[0].rows, function (r) {{ return r.cells[col].getAttribute("data-v"); }});
  heads[col].click();
  var down = Array.prototype.map.call(table.tBodies[0].rows, function (r) {{ return r.cells[col].getAttribute("data-v"); }});
  var input = document.querySelector("input[data-filter=all-cells]");
  input.value = "offline large";
  input.dispatchEvent(new Event("input"));
  var shown = Array.prototype.filter.call(table.tBodies[0].rows, function (r) {{ return !r.hidden; }})
    .map(function (r) {{ return r.cells[1].textContent.trim(); }});
  return {{up: up, down: down, shown: shown, count: document.getElementById("all-cells-count").textContent}};
}})"""


def drive(binary: str, tmp_path: Path, page: Path, script: str) -> Any:
    """The value of ``script`` in ``page`` (loaded), checking the page logged no console message."""
    browser = Browser(binary, tmp_path / "profile", page)
    value = browser.run(script)
    assert browser.close() == []
    return value


def test_the_all_cells_table_sorts_and_filters_in_the_page(tmp_path, chromium):
    runs = list(gpu_and_cpu_runs(tmp_path / "runs"))
    page = report.build_report(runs, tmp_path / "r.html", latency_bound_ms=100)
    result = drive(chromium, tmp_path, page, _DRIVE_TABLE)
    up = [float(v) for v in result["up"] if v]
    down = [float(v) for v in result["down"] if v]
    assert up == sorted(up) and down == sorted(down, reverse=True) and len(up) == 10
    assert result["shown"] == ["h100 large cuda fp16 bs32 offline ⚠ unstable"]
    assert result["count"] == "1 of 10 rows"


def test_printing_draws_every_chart_at_once(tmp_path, chromium):
    page = report.build_report(list(gpu_and_cpu_runs(tmp_path / "runs")), tmp_path / "r.html", latency_bound_ms=300)
    # unscrolled, some charts wait; the print event draws all of them before it returns (a printed page is not scrolled)
    drawn = drive(chromium, tmp_path, page, f"""new Promise(function (done) {{ requestAnimationFrame(function () {{
        var before = {DRAWN};
        window.dispatchEvent(new Event("beforeprint"));
        done([before, {DRAWN}]);
    }}); }})""")
    assert not all(drawn[0]) and all(drawn[1]) and len(drawn[1]) > 5


# Appended to a page shown in an iframe of a given width (headless Chromium's window is at least 500 px
# wide; an iframe is not): what a reader at that width sees once every chart is drawn, written into the
# parent's DOM.
_LAYOUT_PROBE = f"""
<script>
window.addEventListener("load", function () {{ ({DRAW_ALL})().then(function () {{
  function box(el) {{ var r = el.getBoundingClientRect(); return {{left: r.left, right: r.right, width: r.width}}; }}
  var plots = Array.prototype.map.call(document.querySelectorAll(".plotly-graph-div"), function (gd) {{
    return {{chart: (gd.closest("figure") || gd).getAttribute("data-chart"), w: gd._fullLayout._size.w}};
  }});
  var planner = {{}};
  var table = document.querySelector("table.answer");
  if (table) {{
    Array.prototype.forEach.call(table.tBodies[0].rows[0].cells, function (td) {{
      var label = td.getAttribute("data-label");
      if (label) {{ planner[label] = box(td); }}
    }});
  }}
  window.parent.layout = {{inner: window.innerWidth, scroll: document.documentElement.scrollWidth,
                          plots: plots, planner: planner}};
}}); }});
</script>
"""
LAYOUT = "new Promise(function (done) { (function wait() { if (window.layout) { done(window.layout); } else { setTimeout(wait, 20); } })(); })"


def layout_at(binary: str, tmp_path: Path, page: Path, width: int) -> dict:
    """The page laid out ``width`` px wide: viewport and document widths, each plot area's width, and
    the first answer row's cells (by column)."""
    import html

    inner = page.read_text().replace("</body>", _LAYOUT_PROBE + "</body>")
    frame = tmp_path / f"frame-{width}.html"
    frame.write_text(f'<!DOCTYPE html><html><body style="margin:0"><iframe style="width:{width}px;height:1600px;'
                     f'border:0" srcdoc="{html.escape(inner, quote=True)}"></iframe></body></html>')
    browser = Browser(binary, tmp_path / f"profile-{width}", frame, "--window-size=1500,1700")
    layout = browser.run(LAYOUT)
    browser.close()
    return layout


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


# Once the all-cells table is drawn, sort it by images/s ascending, then descending: the sort keys in row order.
_SORT_MISSING = f"""({DRAW_ALL})().then(function () {{
  var table = document.getElementById("all-cells");
  var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
  var col = heads.findIndex(function (th) {{ return th.textContent.trim() === "images/s"; }});
  function order() {{
    return Array.prototype.map.call(table.tBodies[0].rows, function (r) {{ return r.cells[col].getAttribute("data-v"); }});
  }}
  heads[col].click();
  var up = order();
  heads[col].click();
  return {{up: up, down: order()}};
}})"""


def test_sorting_puts_cells_without_a_value_last_in_both_directions(tmp_path, chromium):
    page = report.build_report([failed_run(tmp_path / "run")], tmp_path / "r.html")
    result = drive(chromium, tmp_path, page, _SORT_MISSING)
    for direction in ("up", "down"):
        values = result[direction]
        missing = [n for n, v in enumerate(values) if v in ("", "None")]
        assert missing and missing == list(range(len(values) - len(missing), len(values))), (direction, values)
        numbers = [float(v) for v in values if v not in ("", "None")]
        assert numbers == sorted(numbers, reverse=direction == "down")
