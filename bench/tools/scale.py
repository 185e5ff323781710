"""The scale benchmark: how long ``report``, ``compare``, ``export`` and ``history`` take, and how much
memory they hold, as a sweep grows to procurement size (issue 29).

Run directories are synthesised from a real tiny run's records: ``--source RUN_DIR``, or, without it, a
run this tool makes first (a tiny random-weight checkpoint; single-stream, offline and server cells of
``<CAPTION>`` and ``<OD>``). Each synthetic cell is a copy of the source record of its scenario with
its axes set (variant, task, dtype, batch size, backend; 43,200 cells = 5 variants x 15 tasks x 3
dtypes x 8 batch sizes x 2 backends x 3 scenarios x 4 machines, one run directory each; the sizes are
drawn at random from that product times 3 beam counts, 129,600 cells in all) and its
timings scaled by a per-cell factor; the examples (image files) are left out. Every record written is
read back through ``bench.results.store`` (the readers' rule), or the tool stops.

Each command runs as its own process; its wall time, CPU time (user + system) and peak RSS
(``os.wait4``: that child alone) are measured once per size. The growth exponent is the slope of log(time) against log(cells) from the
smallest size to the largest. The report's page is opened in headless Chromium (Debian ``chromium``):
the time to its first screen is Chromium's wall time to load the page and take a 1400 x 900 screenshot,
process start included (an upper bound). The host's load average is recorded before and after every
command: on a shared machine the figures are as slow as its neighbours made them.

    python -m bench.tools.scale [--sizes 1000,10000,43200] [--compare-cells 100000] [--histories 2000x10,1000x100]
        [--commands report,compare,export,history]
        [--source RUN_DIR] [--work DIR] [--out scale.json] [--screenshot PNG]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import random
import shlex
import shutil
import subprocess
import sys
import time
from array import array
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

from bench.accuracy.tasks import TASKS
from bench.core.paths import read_bytes, remove_tree, write_atomic, write_output
from bench.core.variants import VARIANTS
from bench.regression.history.entries import Entry, machine_from_env
from bench.results import Record, Table, store

SCENARIOS = ("single-stream", "offline", "server")
AXES = {
    "variant": list(VARIANTS),
    "task": list(TASKS),
    "dtype": ["fp32", "fp16", "bf16"],
    "batch_size": [1, 2, 4, 8, 16, 32, 64, 128],
    "backend": ["transformers", "openvino"],
    "scenario": list(SCENARIOS),
    "num_beams": [1, 3, 5],
}
"""The record axes a synthetic cell sets (``Synthetic``'s fields, in its order) and their values."""
MACHINES = 4
"""Run directories a size is split over (the issue's 4 devices): a report of several machines."""
SIZES = (1000, 10_000, 43_200)
COMMANDS = ("report", "compare", "export", "history")
T = TypeVar("T", bound=Table)
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
                  "--host-resolver-rules=MAP * ~NOTFOUND", "--window-size=1400,900")


def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def tiny_source(work: Path) -> Path:
    """A real run of the tiny checkpoint: the records every synthetic cell is copied from."""
    source = work / "source"
    if (source / store.RESULTS).exists():
        return source
    bench = [sys.executable, "-m", "bench"]
    subprocess.run([*bench, "make-tiny-checkpoint", "--force", str(work / "tiny")], check=True, capture_output=True)
    subprocess.run([*bench, "run", "--model-path", str(work / "tiny"), "--variants", "base", "--tasks", "<CAPTION>,<OD>",
                    "--batch-sizes", "1,2", "--scenarios", "single-stream,offline,server", "--server-qps", "2",
                    "--limit", "4", "--out", str(source), "--quiet"], check=True)
    return source


def templates(source: Path) -> tuple[dict[str, Record], dict[str, Any]]:
    """One ok source record per scenario (without its examples), and the source's env.json."""
    out: dict[str, Record] = {}
    for record in store.records(source):
        if record.status == "ok":
            out.setdefault(record.scenario or "single-stream", dataclasses.replace(record, examples=()))
    missing = [s for s in SCENARIOS if s not in out]
    if missing:
        raise SystemExit(f"scale: source {source} has no ok record of scenario {', '.join(missing)}; accepted: a run "
                         "with single-stream, offline and server cells")
    return out, store.read_env(source)


@dataclass(frozen=True)
class Synthetic:
    """One synthetic cell: the machine (run directory) it ran on, None in a history, and its axes (``AXES``)."""

    machine: int | None
    variant: str
    task: str
    dtype: str
    batch_size: int
    backend: str
    scenario: str
    num_beams: int

    def axes(self) -> dict[str, Any]:
        """The record fields this cell sets."""
        return {name: getattr(self, name) for name in AXES}

    @property
    def cell_id(self) -> str:
        """Distinct per machine, so merged runs keep every cell."""
        named = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        return hashlib.sha256(json.dumps(named, sort_keys=True).encode()).hexdigest()[:16]


def _scaled(table: T | None, factor: float) -> T | None:
    """The table with each of its figures that is a float times ``factor`` (counts, labels and flags as they are)."""
    if table is None:
        return None
    return dataclasses.replace(table, **{f.name: getattr(table, f.name) * factor for f in dataclasses.fields(table)
                                       if type(getattr(table, f.name)) is float})


def synth_record(template: Record, cell: Synthetic, factor: float) -> Record:
    """The template with this cell's axes and id and its timings times ``factor`` (rates divided by it)."""
    capacity = template.capacity_qps
    return dataclasses.replace(
        template, **cell.axes(), cell_id=cell.cell_id,
        samples_ms=array("d", (v * factor for v in template.samples_ms)),
        latency_ms=_scaled(template.latency_ms, factor), time_per_image_ms=_scaled(template.time_per_image_ms, factor),
        per_token_ms=_scaled(template.per_token_ms, factor), throughput=_scaled(template.throughput, 1 / factor),
        capacity_qps=capacity / factor if capacity is not None else None)


def cells(n: int, seed: int = 0) -> list[Synthetic]:
    """``n`` distinct settings drawn from ``MACHINES`` x the product of ``AXES`` (all when n is its size),
    each with the index of the machine (run directory) it ran on.

    The product is shuffled as indices and only the ``n`` drawn are built (the same draw as shuffling the
    product itself: a shuffle depends on the length alone)."""
    sizes = [MACHINES, *map(len, AXES.values())]
    order = list(range(math.prod(sizes)))
    random.Random(seed).shuffle(order)
    if n > len(order):
        raise SystemExit(f"scale: {n} cells asked for; accepted: at most {len(order)} (the axes' product)")
    return [_axes_at(index, sizes) for index in order[:n]]


def _axes_at(index: int, sizes: list[int]) -> Synthetic:
    """The setting at ``index`` of ``itertools.product(range(MACHINES), *AXES.values())``."""
    digits = []
    for size in reversed(sizes):
        index, digit = divmod(index, size)
        digits.append(digit)
    machine, *rest = reversed(digits)
    return Synthetic(machine, **{axis: values[i] for (axis, values), i in zip(AXES.items(), rest, strict=True)})


def _factor(cell: Synthetic, rng: random.Random) -> float:
    v = 1 + list(VARIANTS).index(cell.variant) * 0.6
    d = {"fp32": 1.0, "fp16": 0.55, "bf16": 0.6}[cell.dtype]
    b = cell.batch_size ** 0.7  # a larger batch takes longer, in every scenario
    return v * d * b * (0.8 if cell.backend == "openvino" else 1.0) * math.exp(rng.gauss(0, 0.05))


def write_runs(templates_: dict[str, Record], env: dict[str, Any], n: int, out: Path, seed: int) -> list[Path]:
    """``n`` cells split over ``MACHINES`` run directories under ``out``; each read back whole."""
    rng = random.Random(seed)
    chosen = cells(n)
    dirs = []
    for m in range(MACHINES):
        run = out / f"machine-{m + 1}"
        remove_tree(run, out, "run directory")
        run.mkdir(parents=True)
        store.write_env(run, env)
        mine = [cell for cell in chosen if cell.machine == m]
        lines = [synth_record(templates_[cell.scenario], cell, _factor(cell, rng)).to_json() + "\n" for cell in mine]
        write_atomic(run / store.RESULTS, "".join(lines), what="results file")
        if len(store.records(run)) != len(mine):
            raise SystemExit(f"scale: the readers refused some synthetic records in {run}")
        dirs.append(run)
    return dirs


def write_history(templates_: dict[str, Record], env: dict[str, Any], runs: int, n_cells: int,
                  out: Path) -> Path:
    """``runs`` history entries (what ``history add`` writes) of the same ``n_cells`` cells, an hour apart."""
    remove_tree(out, out.parent, "run directory")
    out.mkdir(parents=True)
    machine = machine_from_env(env)
    chosen = [dataclasses.replace(cell, machine=None) for cell in cells(n_cells)]
    rng = random.Random(1)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for i in range(runs):
        level = math.exp(rng.gauss(0, 0.03))
        records = [synth_record(templates_[c.scenario], c, _factor(c, rng) * level) for c in chosen]
        commit = hashlib.sha1(f"scale-{i}".encode()).hexdigest()
        entry = Entry(run_id=hashlib.sha256(f"scale-{i}".encode()).hexdigest(), commit=commit,
                      date=(start + timedelta(hours=i)).isoformat(), dirty=False,
                      source={"kind": "run-dir", "path": f"synthetic/{i}"}, machine=machine, env=env, records=records)
        write_atomic(out / entry.file_name(), entry.to_json(), what="history entry")
    return out


# A command runs from a small interpreter of its own: on Linux a child's peak RSS (``ru_maxrss``) counts the
# memory of the process it was forked from (exec keeps the old image's high-water mark), so a command forked
# straight from this tool, which holds 100k synthetic cells, would read as large as the tool.
_LAUNCHER = ("import json, os, sys\n"
             "fd, argv = int(sys.argv[1]), sys.argv[2:]\n"
             "pid = os.posix_spawnp(argv[0], argv, os.environ)\n"
             "_, status, usage = os.wait4(pid, 0)\n"
             "os.write(fd, json.dumps([usage.ru_utime + usage.ru_stime, usage.ru_maxrss]).encode())\n"
             "sys.exit(os.waitstatus_to_exitcode(status))\n")


def timed(argv: list[str], cwd: Path) -> dict[str, Any]:
    """Wall time, CPU time, peak RSS (the command alone, ``os.wait4`` in a small launcher) and exit code."""
    before = load_average()
    read_end, write_end = os.pipe()
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", _LAUNCHER, str(write_end), *argv], cwd=cwd,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, pass_fds=(write_end,))
    os.close(write_end)
    assert child.stderr is not None
    err = child.stderr.read()
    child.wait()
    seconds = time.perf_counter() - start
    with os.fdopen(read_end, "rb") as report:
        measured = report.read()
    if not measured:
        raise RuntimeError(f"could not run {shlex.join(argv)}: {err.decode(errors='replace')[-300:]}")
    cpu, maxrss_kib = json.loads(measured)
    return {"seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
            "peak_rss_mib": round(maxrss_kib / 1024, 1), "exit_code": child.returncode,
            "load_before": before, "load_after": load_average(),
            "stderr_tail": err.decode(errors="replace")[-300:] if child.returncode not in (0, 1) else ""}


def first_screen(page: Path, shot: Path) -> dict[str, Any] | None:
    """Headless Chromium's wall time to load the page and draw its first 1400 x 900 screen."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        return None
    profile = shot.with_suffix(".profile")
    start = time.perf_counter()
    subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}", page.as_uri()],
                   check=True, capture_output=True, timeout=900)
    remove_tree(profile, shot.parent, "output")
    return {"seconds": round(time.perf_counter() - start, 2), "screenshot": str(shot)}


def exponent(points: list[tuple[int, float]]) -> float | None:
    """Slope of log(seconds) against log(cells) from the smallest size to the largest."""
    (n0, t0), (n1, t1) = points[0], points[-1]
    return round(math.log(t1 / t0) / math.log(n1 / n0), 3) if n1 > n0 and t0 > 0 and t1 > 0 else None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default=",".join(map(str, SIZES)), help="cells per report size (comma-separated)")
    p.add_argument("--compare-cells", type=int, default=100_000, help="cells of compare and export's largest size")
    p.add_argument("--histories", default="2000x10,1000x100",
                   help="histories to time, each RUNSxCELLS (runs, cells per run), comma-separated")
    p.add_argument("--commands", default=",".join(COMMANDS),
                   help=f"which commands to time, comma-separated (default: all of {', '.join(COMMANDS)}); e.g. "
                        "compare,export --sizes 100000 --compare-cells 100000 times those two at 100k cells alone")
    p.add_argument("--source", type=Path, help="a real run directory to copy records from (default: a tiny run)")
    p.add_argument("--work", type=Path, default=Path("runs/scale"), help="where the synthetic runs go")
    p.add_argument("--out", type=Path, default=Path("runs/scale/scale.json"))
    p.add_argument("--report-args", default="",
                   help='options for every report, one string (e.g. --report-args="--latency-bound-ms 500": with a '
                        "bound, the answer predicts the capacity of every setting without a server cell by simulation)")
    p.add_argument("--screenshot", type=Path, help="keep the largest report's first screen here (PNG)")
    return p


@dataclass
class Session:
    """One scale run: its arguments, the source's templates and env.json, and the figures measured so far
    (``figures`` is what scale.json holds)."""

    args: argparse.Namespace
    sizes: list[int]
    commands: set[str]
    templates: dict[str, Record]
    env: dict[str, Any]
    figures: dict[str, Any]

    def time(self, *argv: str) -> dict[str, Any]:
        return timed([sys.executable, "-m", "bench", *argv], Path.cwd())

    def report(self, n: int, base: list[Path]) -> None:
        """Time ``report`` of the ``n``-cell runs, then its page's first screen in headless Chromium."""
        page = self.args.work / f"{n}" / "report.html"
        row = {"cells": n, **self.time("report", *map(str, base), "-o", str(page), *shlex.split(self.args.report_args))}
        row["page_mib"] = round(page.stat().st_size / 2**20, 2) if page.exists() else None
        if page.exists():
            shot = self.args.work / f"{n}" / "first-screen.png"
            row["first_screen"] = first_screen(page, shot)
            if n == self.sizes[-1] and self.args.screenshot and row["first_screen"]:
                write_output(self.args.screenshot, read_bytes(shot, "output"))
        self.figures["report"].append(row)
        print(f"report {n} cells: {row['seconds']} s, {row['peak_rss_mib']} MiB, page {row['page_mib']} MiB, "
              f"first screen {(row.get('first_screen') or {}).get('seconds')} s (load {row['load_before']})", flush=True)

    def compare_export(self, n: int, base: list[Path]) -> None:
        """Time ``compare`` of two ``n``-cell runs (each merged into one directory) and ``export`` of one."""
        merged = self.args.work / f"{n}" / "merged"
        cur = write_runs(self.templates, self.env, n, self.args.work / f"{n}" / "cur", seed=n + 1)
        for role, dirs in (("base", base), ("cur", cur)):
            _merge(dirs, merged / role)
        timings = [("compare", "compare", ["compare", str(merged / "base"), str(merged / "cur")])]
        timings += [(f"export_{kind}", f"export {kind}",
                     ["export", str(merged / "base"), str(self.args.work / f"{n}" / f"all.{kind}")])
                    for kind in ("csv", "parquet")]
        for name, label, argv in timings:
            if argv[0] not in self.commands:
                continue
            row = {"cells": n, **self.time(*argv)}
            self.figures[name].append(row)
            print(f"{label} {n} cells: {row['seconds']} s, {row['cpu_seconds']} s CPU, {row['peak_rss_mib']} MiB "
                  f"(load {row['load_before']})", flush=True)

    def time_sizes(self) -> None:
        """Report at every size; compare and export at the smallest, the largest and ``--compare-cells``."""
        for n in sorted({*self.sizes, self.args.compare_cells}) if self.commands - {"history"} else ():
            base = write_runs(self.templates, self.env, n, self.args.work / f"{n}" / "base", seed=n)
            if n in self.sizes and "report" in self.commands:
                self.report(n, base)
            if self.commands & {"compare", "export"} and n in (self.sizes[0], self.sizes[-1], self.args.compare_cells):
                self.compare_export(n, base)

    def time_histories(self) -> None:
        """``history check``, ``steps`` and ``report`` of each RUNSxCELLS history."""
        for spec in self.args.histories.split(",") if "history" in self.commands else ():
            runs, n_cells = (int(v) for v in spec.lower().split("x"))
            history = write_history(self.templates, self.env, runs, n_cells, self.args.work / f"history-{spec}")
            trends = self.args.work / f"trends-{spec}.html"
            for name, extra in (("check", []), ("steps", []), ("report", ["-o", str(trends)])):
                row = {"runs": runs, "cells_per_run": n_cells, **self.time("history", name, str(history), *extra)}
                if name == "report":
                    row["page_mib"] = round(trends.stat().st_size / 2**20, 2) if trends.exists() else None
                self.figures["history"].setdefault(spec, {})[name] = row
                print(f"history {name} {runs} runs x {n_cells} cells: {row['seconds']} s, {row['peak_rss_mib']} MiB "
                      f"(load {row['load_before']})", flush=True)


def growth(figures: dict[str, Any]) -> dict[str, float | None]:
    """The growth exponent of each sized command, by wall and by CPU time."""
    return {f"{name} ({clock})": exponent([(r["cells"], r[clock]) for r in figures[name]]) if figures[name] else None
            for name in ("report", "compare", "export_csv", "export_parquet") for clock in ("seconds", "cpu_seconds")}


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    commands = {c.strip() for c in args.commands.split(",") if c.strip()}
    if not commands or commands - set(COMMANDS):
        p.error(f"--commands {args.commands!r}; accepted: a comma-separated subset of {', '.join(COMMANDS)}")
    args.work.mkdir(parents=True, exist_ok=True)
    source = args.source or tiny_source(args.work)
    host = {"cores": os.cpu_count(), "load_start": load_average(), "shared": "other engineers' work ran beside it"}
    figures: dict[str, Any] = {"host": host, "source": str(source), "machines": MACHINES, "report": [],
                               "compare": [], "export_csv": [], "export_parquet": [], "history": {}}
    session = Session(args, sizes, commands, *templates(source), figures)
    session.time_sizes()
    session.time_histories()
    figures["growth_exponent"] = growth(figures)
    host["load_end"] = load_average()
    print("growth exponents (log time / log cells, smallest to largest):", figures["growth_exponent"])
    write_output(args.out, json.dumps(figures, indent=1) + "\n")
    print(f"figures: {args.out}")
    return 0


def _merge(dirs: list[Path], out: Path) -> None:
    """One run directory holding the cells of all ``dirs`` (compare and export take one per side)."""
    remove_tree(out, out.parent, "run directory")
    out.mkdir(parents=True)
    write_atomic(out / store.ENV, read_bytes(dirs[0] / store.ENV, "environment file"), what="environment file")
    write_atomic(out / store.RESULTS, b"".join(read_bytes(d / store.RESULTS, "results file") for d in dirs),
                 what="results file")


if __name__ == "__main__":
    sys.exit(main())
