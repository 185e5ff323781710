"""The trend report in headless Chromium: no console message, no network request, every chart drawn.

Driven exactly as the run report's test (tests/test_report_browser.py: same flags, net log, DOM dump).
"""

from __future__ import annotations

import shutil

import pytest
from test_history import trend_history
from test_report_browser import ARTIFACTS, _chromium, _page_requests, _unrendered_charts, chromium  # noqa: F401

from bench.history.trends import build_trends

pytestmark = pytest.mark.browser


def test_trend_report_loads_offline_without_console_errors(tmp_path, chromium):  # noqa: F811
    history = trend_history(tmp_path / "history")
    page = build_trends(history, tmp_path / "trends.html")
    charts = page.read_text().count('class="plotly-graph-div"')
    assert charts > 0

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "trends.png"
    shot.unlink(missing_ok=True)
    net_log = tmp_path / "net-log.json"
    loaded = _chromium(
        chromium,
        tmp_path / "profile",
        page,
        "--dump-dom",
        f"--screenshot={shot}",
        "--window-size=1400,3000",
        f"--log-net-log={net_log}",
    )
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert [line for line in loaded.stderr.splitlines() if ":CONSOLE" in line] == []
    assert _page_requests(net_log) == []
    dom = loaded.stdout
    assert dom.count('class="plotly-graph-div') == charts
    assert _unrendered_charts(dom) == []
    assert "<script>alert(1)" not in dom and "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    assert shot.stat().st_size > 10_000
    shutil.copy(page, ARTIFACTS / "trends.html")
