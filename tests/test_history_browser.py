"""The trend report in headless Chromium: no console message, no network request, every chart drawn.

Driven exactly as the run report's test (tests/test_report_browser.py: same flags, net log, DOM dump).
"""

from __future__ import annotations

import shutil

import pytest
from test_history import trend_history
from test_report_browser import ARTIFACTS, chromium, load_offline  # noqa: F401

from bench.regression.history import check, load
from bench.regression.history.trends import build_trends

pytestmark = pytest.mark.browser


def test_trend_report_loads_offline_without_console_errors(tmp_path, chromium):  # noqa: F811
    history = trend_history(tmp_path / "history")
    page = build_trends(history, tmp_path / "trends.html")
    charts = page.read_text().count('class="plotly-graph-div"')
    assert charts > 0

    dom = load_offline(chromium, tmp_path, page, "trends.png", charts)
    assert "<script>alert(1)" not in dom and "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    # the newest run's `history check` verdict comes first, before any chart
    verdict = check(load(history)).summary()
    assert f'id="check-verdict">{verdict}</p>' in dom
    assert dom.index('id="check-verdict"') < dom.index('class="plotly-graph-div')
    shutil.copy(page, ARTIFACTS / "trends.html")
