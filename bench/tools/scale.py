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
import copy
import hashlib
import itertools
import json
import math
import os
import random
import shlex
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from bench.accuracy.tasks import TASKS
from bench.core.paths import read_bytes, remove_tree, write_atomic, write_output
from bench.core.variants import VARIANTS
from bench.regression.history.entries import DROPPED_FIELDS, Entry, machine_from_env
from bench.results import store

AXES = {
    "variant": list(VARIANTS),
    "task": list(TASKS),
    "dtype": ["fp32", "fp16", "bf16"],
    "batch_size": [1, 2, 4, 8, 16, 32, 64, 128],
    "backend": ["transformers", "openvino"],
    "scenario": ["single-stream", "offline", "server"],
    "num_beams": [1, 3, 5],
}
MACHINES = 4
"""Run directories a size is split over (the issue's 4 devices): a report of several machines."""
SIZES = (1000, 10_000, 43_200)
COMMANDS = ("report", "compare", "export", "history")
TIMED_FIELDS = ("latency_ms", "time_per_image_ms", "per_token_ms")
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


def templates(source: Path) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """One ok source record per scenario (without its examples), and the source's env.json."""
    out: dict[str, dict[str, Any]] = {}
    for record in store.read_records(source):
        if record.get("status") == "ok":
            out.setdefault(record.get("scenario", "single-stream"), {k: v for k, v in record.items() if k != "examples"})
    missing = [s for s in AXES["scenario"] if s not in out]
    if missing:
        raise SystemExit(f"scale: source {source} has no ok record of scenario {', '.join(missing)}; accepted: a run "
                         "with single-stream, offline and server cells")
    return out, store.read_env(source)


def _scaled(value: Any, factor: float) -> Any:
    if isinstance(value, float):
        return value * factor
    if isinstance(value, list):
        return [_scaled(v, factor) for v in value]
    if isinstance(value, dict):
        return {k: v if k in ("n", "count") else _scaled(v, factor) for k, v in value.items()}
    return value


def synth_record(template: dict[str, Any], axes: dict[str, Any], factor: float) -> dict[str, Any]:
    """The template with these axes (``machine`` only in its cell id, so merged runs keep every cell) and
    its timings times ``factor`` (rates divided by it)."""
    record = copy.deepcopy(template)
    record.update({k: v for k, v in axes.items() if k != "machine"})
    record["cell_id"] = hashlib.sha256(json.dumps(axes, sort_keys=True).encode()).hexdigest()[:16]
    record["samples_ms"] = _scaled(record.get("samples_ms") or [], factor)
    for name in TIMED_FIELDS:
        if isinstance(record.get(name), dict):
            record[name] = _scaled(record[name], factor)
    if isinstance(record.get("throughput"), dict):
        record["throughput"] = _scaled(record["throughput"], 1 / factor)
    if isinstance(record.get("capacity_qps"), float):
        record["capacity_qps"] /= factor
    return record


def cells(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` distinct settings drawn from ``MACHINES`` x the product of ``AXES`` (all when n is its size),
    each with the index of the machine (run directory) it ran on."""
    product = [{"machine": m, **dict(zip(AXES, values, strict=True))}
               for m in range(MACHINES) for values in itertools.product(*AXES.values())]
    random.Random(seed).shuffle(product)
    if n > len(product):
        raise SystemExit(f"scale: {n} cells asked for; accepted: at most {len(product)} (the axes' product)")
    return product[:n]


def _factor(axes: dict[str, Any], rng: random.Random) -> float:
    v = 1 + AXES["variant"].index(axes["variant"]) * 0.6
    d = {"fp32": 1.0, "fp16": 0.55, "bf16": 0.6}[axes["dtype"]]
    b = axes["batch_size"] ** 0.7  # a larger batch takes longer, in every scenario
    return v * d * b * (0.8 if axes["backend"] == "openvino" else 1.0) * math.exp(rng.gauss(0, 0.05))


def write_runs(templates_: dict[str, dict[str, Any]], env: dict[str, Any], n: int, out: Path, seed: int) -> list[Path]:
    """``n`` cells split over ``MACHINES`` run directories under ``out``; each read back whole."""
    rng = random.Random(seed)
    chosen = cells(n)
    dirs = []
    for m in range(MACHINES):
        run = out / f"machine-{m + 1}"
        remove_tree(run, out, "run directory")
        run.mkdir(parents=True)
        store.write_env(run, env)
        mine = [axes for axes in chosen if axes["machine"] == m]
        lines = [json.dumps(synth_record(templates_[axes["scenario"]], axes, _factor(axes, rng)), sort_keys=True)
                 + "\n" for axes in mine]
        write_atomic(run / store.RESULTS, "".join(lines), what="results file")
        if len(store.read_records(run)) != len(mine):
            raise SystemExit(f"scale: the readers refused some synthetic records in {run}")
        dirs.append(run)
    return dirs


def write_history(templates_: dict[str, dict[str, Any]], env: dict[str, Any], runs: int, n_cells: int,
                  out: Path) -> Path:
    """``runs`` history entries (what ``history add`` writes) of the same ``n_cells`` cells, an hour apart."""
    remove_tree(out, out.parent, "run directory")
    out.mkdir(parents=True)
    machine = machine_from_env(env)
    chosen = [{k: v for k, v in axes.items() if k != "machine"} for axes in cells(n_cells)]
    rng = random.Random(1)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for i in range(runs):
        level = math.exp(rng.gauss(0, 0.03))
        records = [
            {k: v for k, v in synth_record(templates_[a["scenario"]], a, _factor(a, rng) * level).items()
             if k not in DROPPED_FIELDS}
            for a in chosen
        ]
        commit = hashlib.sha1(f"scale-{i}".encode()).hexdigest()
        entry = Entry(run_id=hashlib.sha256(f"scale-{i}".encode()).hexdigest(), commit=commit,
                      date=(start + timedelta(hours=i)).isoformat(), dirty=False,
                      source={"kind": "run-dir", "path": f"synthetic/{i}"}, machine=machine, env=env, records=records)
        write_atomic(out / entry.file_name(), entry.to_json(), what="history entry")
    return out


def timed(argv: list[str], cwd: Path) -> dict[str, Any]:
    """Wall time, peak RSS (this child alone, ``os.wait4``) and exit code of one command."""
    before = load_average()
    start = time.perf_counter()
    child = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert child.stderr is not None
    err = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    return {"seconds": round(seconds, 2), "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "exit_code": child.returncode,
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="cells per report size (comma-separated)")
    parser.add_argument("--compare-cells", type=int, default=100_000, help="cells of compare and export's largest size")
    parser.add_argument("--histories", default="2000x10,1000x100",
                        help="histories to time, each RUNSxCELLS (runs, cells per run), comma-separated")
    parser.add_argument("--commands", default=",".join(COMMANDS),
                        help=f"which commands to time, comma-separated (default: all of {', '.join(COMMANDS)}); e.g. "
                             "compare,export --sizes 100000 --compare-cells 100000 times those two at 100k cells alone")
    parser.add_argument("--source", type=Path, help="a real run directory to copy records from (default: a tiny run)")
    parser.add_argument("--work", type=Path, default=Path("runs/scale"), help="where the synthetic runs go")
    parser.add_argument("--out", type=Path, default=Path("runs/scale/scale.json"))
    parser.add_argument("--report-args", default="",
                        help='options for every report, one string (e.g. --report-args="--latency-bound-ms 500": with a '
                             "bound, the answer predicts the capacity of every setting without a server cell by simulation)")
    parser.add_argument("--screenshot", type=Path, help="keep the largest report's first screen here (PNG)")
    args = parser.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    commands = {c.strip() for c in args.commands.split(",") if c.strip()}
    if not commands or commands - set(COMMANDS):
        parser.error(f"--commands {args.commands!r}; accepted: a comma-separated subset of {', '.join(COMMANDS)}")
    args.work.mkdir(parents=True, exist_ok=True)
    source = args.source or tiny_source(args.work)
    templates_, env = templates(source)
    bench = [sys.executable, "-m", "bench"]
    cwd = Path.cwd()
    result: dict[str, Any] = {
        "host": {"cores": os.cpu_count(), "load_start": load_average(), "shared": "other engineers' work ran beside it"},
        "source": str(source), "machines": MACHINES, "report": [], "compare": [], "export_csv": [],
        "export_parquet": [], "history": {},
    }
    for n in sorted({*sizes, args.compare_cells}) if commands - {"history"} else ():
        base = write_runs(templates_, env, n, args.work / f"{n}" / "base", seed=n)
        if n in sizes and "report" in commands:
            page = args.work / f"{n}" / "report.html"
            row = {"cells": n, **timed([*bench, "report", *map(str, base), "-o", str(page), *shlex.split(args.report_args)], cwd)}
            row["page_mib"] = round(page.stat().st_size / 2**20, 2) if page.exists() else None
            if page.exists():
                shot = args.work / f"{n}" / "first-screen.png"
                row["first_screen"] = first_screen(page, shot)
                if n == sizes[-1] and args.screenshot and row["first_screen"]:
                    write_output(args.screenshot, read_bytes(shot, "output"))
            result["report"].append(row)
            print(f"report {n} cells: {row['seconds']} s, {row['peak_rss_mib']} MiB, page {row['page_mib']} MiB, "
                  f"first screen {(row.get('first_screen') or {}).get('seconds')} s (load {row['load_before']})", flush=True)
        if commands & {"compare", "export"} and (n in (*sizes[:1], args.compare_cells) or n == sizes[-1]):
            merged = args.work / f"{n}" / "merged"
            cur = write_runs(templates_, env, n, args.work / f"{n}" / "cur", seed=n + 1)
            for role, dirs in (("base", base), ("cur", cur)):
                _merge(dirs, merged / role)
            if "compare" in commands:
                row = {"cells": n, **timed([*bench, "compare", str(merged / "base"), str(merged / "cur")], cwd)}
                result["compare"].append(row)
                print(f"compare {n} cells: {row['seconds']} s, {row['cpu_seconds']} s CPU, {row['peak_rss_mib']} MiB "
                      f"(load {row['load_before']})", flush=True)
            for kind in ("csv", "parquet") if "export" in commands else ():
                row = {"cells": n, **timed([*bench, "export", str(merged / "base"), str(args.work / f"{n}" / f"all.{kind}")], cwd)}
                result[f"export_{kind}"].append(row)
                print(f"export {kind} {n} cells: {row['seconds']} s, {row['cpu_seconds']} s CPU, {row['peak_rss_mib']} MiB "
                      f"(load {row['load_before']})", flush=True)
    for spec in args.histories.split(",") if "history" in commands else ():
        runs, n_cells = (int(v) for v in spec.lower().split("x"))
        history = write_history(templates_, env, runs, n_cells, args.work / f"history-{spec}")
        trends = args.work / f"trends-{spec}.html"
        for name, extra in (("check", []), ("steps", []), ("report", ["-o", str(trends)])):
            row = {"runs": runs, "cells_per_run": n_cells, **timed([*bench, "history", name, str(history), *extra], cwd)}
            if name == "report":
                row["page_mib"] = round(trends.stat().st_size / 2**20, 2) if trends.exists() else None
            result["history"].setdefault(spec, {})[name] = row
            print(f"history {name} {runs} runs x {n_cells} cells: {row['seconds']} s, {row['peak_rss_mib']} MiB "
                  f"(load {row['load_before']})", flush=True)
    result["growth_exponent"] = {
        f"{name} ({clock})": exponent([(r["cells"], r[clock]) for r in result[name]]) if result[name] else None
        for name in ("report", "compare", "export_csv", "export_parquet") for clock in ("seconds", "cpu_seconds")
    }
    result["host"]["load_end"] = load_average()
    print("growth exponents (log time / log cells, smallest to largest):", result["growth_exponent"])
    write_output(args.out, json.dumps(result, indent=1) + "\n")
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
