"""The result of a comparison (``Row``, ``Comparison``) and how it is shown: terminal table, summary
line, markdown, exit code. Its own module because ``bench.regression.history``'s check reuses it over
a run history, not two run directories."""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import ClassVar

from bench.core.errors import UsageError
from bench.regression.bootstrap import CI_LEVEL
from bench.regression.gates import DEFAULT_THRESHOLDS, metric_spec

FAILED_STATUSES = ("oom", "error")

VERDICTS = ("regressed", "improved", "unchanged", "inconclusive", "not-comparable")
JUDGED = VERDICTS[:4]  # the verdicts that judge something (an inconclusive row is judged: it says the run cannot tell)
COLUMNS = (
    "cell",
    "metric",
    "baseline",
    "current",
    "change",
    f"{CI_LEVEL:.0%} CI",
    "threshold",
    "verdict",
    "method",
    "note",
)



@dataclass
class Row:
    """One metric of one matched cell. ``ratio`` holds current/baseline, or for kind "delta" the
    difference current - baseline in points; ``ci_low``/``ci_high`` bound it (None for single values)."""

    cell_id: str
    label: str
    metric: str
    kind: str
    baseline: float | None
    current: float | None
    ratio: float | None
    ci_low: float | None
    ci_high: float | None
    method: str
    verdict: str
    threshold: float | None = None
    note: str = ""

    def value_text(self, value: float | None) -> str:
        """A baseline/current value with its unit, as the table and the report show it."""
        return value_text(self.metric, value)

    def change_text(self) -> str:
        return format_change(self.kind, self.ratio)

    def ci_text(self) -> str:
        if self.ci_low is None or self.ci_high is None:
            return "-"
        return f"[{format_change(self.kind, self.ci_low)}, {format_change(self.kind, self.ci_high)}]"

    def threshold_text(self) -> str:
        return _threshold_text(self.kind, self.threshold)


def value_text(metric: str, value: float | None) -> str:
    """A metric's value with its unit (also used by ``bench.regression.history``)."""
    if value is None:
        return "-"
    unit = metric_spec(metric).unit
    if unit == "bytes":
        return f"{value / 2**20:.1f} MiB"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "img/s":
        return f"{value:.3g} img/s"
    return f"{value:.2f}"


def format_change(kind: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:+.2f} pt" if kind == "delta" else f"{(value - 1) * 100:+.1f}%"


def _threshold_text(kind: str, threshold: float | None) -> str:
    if threshold is None:
        return "-"
    if math.isinf(threshold):
        return "off"
    return f"{threshold:+g} pt" if kind == "delta" else f"{threshold * 100:g}%"


@dataclass
class Comparison:
    """The result of ``compare_dirs``: rows per matched cell and metric, plus what could not be compared."""

    rows: list[Row]
    unmatched_baseline: list[str]
    unmatched_current: list[str]
    env_warnings: list[str]
    newly_failed: list[str] = field(default_factory=list)
    accuracy_skipped: list[str] = field(default_factory=list)
    """Matched cells whose accuracy was not compared, and why (random weights, or no score on one side)."""
    thresholds: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    n_boot: int = 2000
    seed: int = 0
    nothing_comparable: str | None = None
    """One line when no cell matched: nothing is comparable, and which axes or environment facts differ."""
    columns: ClassVar[tuple[str, ...]] = COLUMNS  # a subclass judging otherwise names its interval column

    @property
    def regressed(self) -> bool:
        """Any metric regressed beyond its threshold, or a cell that was ok now fails."""
        return bool(self.newly_failed) or any(row.verdict == "regressed" for row in self.rows)

    @property
    def judged(self) -> bool:
        """At least one verdict: a metric compared, or a cell that was ok and now fails."""
        return bool(self.newly_failed) or any(row.verdict in JUDGED for row in self.rows)

    @property
    def inconclusive(self) -> list[Row]:
        """The rows whose figures cannot rule out a change beyond the threshold (neither regressed nor unchanged)."""
        return [row for row in self.rows if row.verdict == "inconclusive"]

    @property
    def state(self) -> str:
        """What the headline says, and the colour pages give it: "not-comparable", "not-judged", "regressed",
        "inconclusive" (nothing regressed, but some row cannot tell) or "ok"."""
        if self.nothing_comparable:
            return "not-comparable"
        if not self.judged:
            return "not-judged"
        if self.regressed:
            return "regressed"
        return "inconclusive" if self.inconclusive else "ok"

    def nothing_judged(self) -> str:
        """One line saying why no verdict was reached (a verdict over nothing is exit 2, never OK)."""
        reasons = list(dict.fromkeys(f"{row.label}: {row.note}" for row in self.rows if row.note))
        shown = listed(reasons)
        return (f"nothing judged: {len(self.rows)} row(s), none with a verdict" + (f" ({shown})" if shown else "")
                + "; accepted: runs with at least one ok cell in common")

    def inconclusive_line(self) -> str:
        """One line for ``--fail-on-inconclusive`` (exit 2): the rows that could not tell, and what passes."""
        rows = [f"{row.label} {row.metric} {row.change_text()}" for row in self.inconclusive]
        return (
            f"inconclusive (--fail-on-inconclusive): {len(rows)} row(s) whose figures cannot rule out a change "
            f"beyond the threshold ({listed(rows)}); accepted: figures that settle every verdict (more samples "
            "per cell, a quieter machine), or no --fail-on-inconclusive"
        )

    def counts(self) -> dict[str, int]:
        counted = Counter(row.verdict for row in self.rows)
        return {verdict: counted.get(verdict, 0) for verdict in VERDICTS}

    def warnings(self) -> list[str]:
        """What must be read before any verdict: the runs come from different machines or software."""
        if not self.env_warnings:
            return []
        return [
            "the runs come from different machines or software, so a change may come from that alone: "
            + "; ".join(self.env_warnings)
        ]

    def summary(self) -> str:
        if self.nothing_comparable:
            return f"NOT COMPARABLE: {self.nothing_comparable}"
        if not self.judged:
            return f"NOT JUDGED: {self.nothing_judged()}"
        counts = ", ".join(f"{n} {verdict}" for verdict, n in self.counts().items())
        failed = f", {len(self.newly_failed)} newly failed cell(s)" if self.newly_failed else ""
        return f"{self.state.upper()}: {counts}{failed}"

    def method_text(self) -> str:
        return (
            f"{CI_LEVEL:.0%} percentile bootstrap of the median (p90) ratio, {self.n_boot} resamples, "
            f"seed {self.seed}; regressed only when the whole interval is beyond the threshold"
        )

    def thresholds_text(self) -> str:
        return ", ".join(
            f"{name} {_threshold_text(metric_spec(name).kind, t)}" for name, t in self.thresholds.items()
        )

    def table_rows(self) -> list[list[str]]:
        """The table's cells as the terminal prints them (one list of ``COLUMNS`` per row); the HTML
        report renders these same strings."""
        return self._cells()

    def notes(self) -> list[tuple[str, list[str]]]:
        """(title, items) printed under the table: failed, unmatched cells."""
        return [(title, items) for title, items in self._notes() if items]

    def _cells(self) -> list[list[str]]:
        return [
            [
                row.label,
                row.metric,
                row.value_text(row.baseline),
                row.value_text(row.current),
                row.change_text(),
                row.ci_text(),
                row.threshold_text(),
                row.verdict,
                row.method,
                row.note,
            ]
            for row in self.rows
        ]

    def _notes(self) -> list[tuple[str, list[str]]]:
        return [
            ("cells that were ok in the baseline and now fail (counted as regressions)", self.newly_failed),
            ("cells only in the baseline", self.unmatched_baseline),
            ("cells only in the current run", self.unmatched_current),
            ("accuracy not compared (not measured on both sides)", self.accuracy_skipped),
        ]

    def to_table(self) -> str:
        """Fixed-width text for the terminal: summary, table, then what could not be compared."""
        header = list(self.columns)
        body = self._cells()
        widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
        right = {2, 3, 4, 5, 6}

        def fmt(line: list[str]) -> str:
            parts = [
                c.rjust(w) if i in right else c.ljust(w)
                for i, (c, w) in enumerate(zip(line, widths, strict=True))
            ]
            return "  ".join(parts).rstrip()

        lines = [*(f"WARNING: {w}" for w in self.warnings()), self.summary()]
        lines += [f"method: {self.method_text()}", f"thresholds: {self.thresholds_text()}", ""]
        lines += [fmt(header), fmt(["-" * w for w in widths]), *(fmt(line) for line in body)]
        for title, items in self._notes():
            if items:
                lines += ["", f"{title}:", *(f"  {item}" for item in items)]
        return "\n".join(lines) + "\n"

    def to_markdown(self) -> str:
        """GitHub-flavoured markdown for CI summaries (task tokens such as <OD> are escaped)."""
        lines = [f"> **Warning:** {_md(w)}\n" for w in self.warnings()]
        lines += [
            f"### Regression check: {_md(self.summary())}",
            "",
            f"Method: {_md(self.method_text())}. Thresholds: {_md(self.thresholds_text())}.",
            "",
        ]
        if self.rows:
            lines += [
                "| " + " | ".join(self.columns) + " |",
                "|" + "|".join(["---", "---"] + ["---:"] * 5 + ["---"] * 3) + "|",
            ]
            for cells in self._cells():
                cells[0] = _md_code(cells[0])
                cells[1:] = [_md(c) for c in cells[1:]]
                if cells[7] == "regressed":
                    cells[7] = "**regressed**"
                lines.append("| " + " | ".join(cells) + " |")
        else:
            lines.append("No matched cells.")
        for title, items in self._notes():
            if items:
                lines += [
                    "",
                    f"**{title[0].upper()}{title[1:]}:**",
                    "",
                    *(f"- {_md(item)}" for item in items),
                ]
        return "\n".join(lines) + "\n"


def listed(items: list[str], n: int = 3) -> str:
    """The first ``n`` items joined, and how many more there are (one-line messages stay one line)."""
    return "; ".join(items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")


def exit_code(result: Comparison, fail_on_inconclusive: bool = False) -> int:
    """1 for a regression (it wins over anything inconclusive); 0 otherwise, except that with
    ``fail_on_inconclusive`` an inconclusive row is no pass: UsageError (exit 2), the code of a verdict
    over nothing, because 1 would claim a regression the figures do not show."""
    if result.regressed:
        return 1
    if fail_on_inconclusive and result.inconclusive:
        raise UsageError(result.inconclusive_line())
    return 0


def _md(text: str) -> str:
    """Text shown as typed in a markdown table cell: labels come from records, which are untrusted."""
    text = " ".join(str(text).split())  # a newline would end the table row
    text = re.sub(r"([\\`*_\[\]|~])", r"\\\1", text)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _md_code(text: str) -> str:
    """A code span that no backtick in the text can close early (CommonMark: a longer fence)."""
    text = " ".join(str(text).split()).replace("|", "\\|")
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    return f"{fence}{pad}{text}{pad}{fence}"
