"""The report's charts, by section: each section's charts come from its module (``charts_speed``,
``charts_quality``, ``charts_bars``), built from the report's rows (``bench.report.report_rows.Row``) with the
conventions of ``bench.report.chart_style`` and ``bench.pages.page``."""

from __future__ import annotations

from bench.pages.page import Chart
from bench.report import charts_bars, charts_quality, charts_speed
from bench.report.chart_style import Styles
from bench.report.report_rows import Row


def build_charts(
    rows: list[Row],
    bound: float | None,
    reported_keys: dict[str, str | None],
    reported_label: str,
    styles: Styles | None = None,
) -> dict[str, list[Chart]]:
    """Every chart of the report, by section; ``styles``: the page's (its key table shown beside)."""
    styles = styles or Styles(rows)
    return {
        "tradeoff": charts_speed.tradeoff_charts(rows, styles, bound),
        "server": charts_speed.server_charts(rows, styles, bound),
        "size": charts_quality.size_quality_charts(rows, styles, reported_keys, reported_label),
        "pareto": charts_quality.pareto_charts(rows, styles),
        "fronts": charts_quality.front_charts(rows, styles),
        "throughput": charts_speed.throughput_charts(rows, styles),
        "stages": charts_bars.stage_charts(rows, styles),
        "memory": [c for c in [charts_bars.memory_chart(rows, styles)] if c],
        "distributions": [c for c in [charts_bars.distribution_chart(rows, styles)] if c],
        "energy": charts_bars.energy_charts(rows, styles),
        "cost": charts_bars.cost_charts(rows, styles),
    }
