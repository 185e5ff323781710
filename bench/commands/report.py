"""``report``: render one HTML report from one or more run directories."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bench import inputs
from bench.errors import UsageError

REPORT_HELP = """\
Render one self-contained HTML report (no network needed to open it) from one or more run directories,
e.g. a GPU run and a CPU run side by side. Read it from the top:

  Answer         first: per task, the cheapest way to serve the demand (--demand-qps Q; default: one
                 device of the best option) within the bound (--latency-bound-ms, on p99): per device
                 kind and overall, the setting, devices needed (ceil(Q / capacity)), USD per month
                 (x 730 h), USD per million images (the setting's own cost, one figure everywhere), p99
                 with its 95% interval, and what it rests on: measured server capacity, or (no server
                 cell) offline throughput: optimistic, no queueing. --answer FILE.json writes the same.
  Decision       per task and device kind, the best setting for each goal: highest throughput, lowest
                 single-stream request latency p90, highest server capacity within the latency bound,
                 lowest cost per million images (also within the bound when one is given), lowest energy
                 per image; each with the 95% interval and sample count of the figure its scenario is
                 judged on, flagged stable / unstable / not enough samples (server: valid/invalid), with
                 its weights mode. Then the recommendation: the cheapest setting within the bound and floor.
  Environment    collapsed; the comparability panel lists what differs between the runs (commit,
                 library versions, driver, CPU model and cores, GPU).
  Regression     with --baseline: exactly what `compare BASELINE RUN_DIR` prints.
  Charts         throughput vs request latency (bound drawn), latency vs QPS per server setting (bound
                 drawn), cost and throughput vs p99 fronts (no accuracy needed), reported accuracy vs
                 measured cost, Pareto frontiers (measured accuracy only), throughput vs batch size,
                 per-stage time per image, memory, request latency distributions, energy and cost.
  All cells      a table that sorts (click a header) and filters (type words) in the page.

Latency is request latency, what one request waits (an offline request waits for its whole batch, a server
request includes queueing); the amortised time per image (batch time / batch size) is always named so.
Costs are derived from the price table (--prices): a GPU by its exact name, a CPU per vCPU-hour times the
cores the run used; the price's source is printed beside every cost. Unstable cells and invalid server
runs are marked in every table and chart.
"""


def setup_arguments(subparsers: Any) -> argparse.ArgumentParser:
    rp = subparsers.add_parser(
        "report",
        help="render one HTML report from one or more run directories",
        description=REPORT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rp.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    rp.add_argument("-o", "--output", help="HTML file (default: RUN_DIR/report.html of the first run)")
    rp.add_argument("--latency-bound-ms", type=inputs.bounded("latency_bound_ms"), metavar="MS",
                    help="bound on request latency: p90 of single-stream cells, p99 of server cells; offline cells "
                         "never meet it (they are judged on throughput only)")
    rp.add_argument("--accuracy-floor", type=inputs.bounded("accuracy_floor"), metavar="X",
                    help="accuracy floor on each task's headline metric (a ceiling for error rates such as CER)")
    rp.add_argument("--demand-qps", type=inputs.bounded("demand_qps"), metavar="Q",
                    help="images per second to serve: the answer gives, per task and device kind, the cheapest "
                         "setting, the devices it needs (ceil(Q / capacity)) and their cost (default: one device "
                         "of the best option)")
    rp.add_argument("--answer", metavar="FILE.json",
                    help="also write the answer section as JSON: {demand_qps, latency_bound_ms, answers: [{task, "
                         "device, variant, dtype, backend, batch_size, scenario, devices, usd_per_month, "
                         "usd_per_million_images, p99_ms, basis, cell_id, ...}]}")
    rp.add_argument("--prices", metavar="FILE",
                    help="TOML price table: [gpu] \"exact GPU name\" = {usd_per_hour, source}, [cpu] "
                         "usd_per_vcpu_hour and source (default: bench/data/prices.toml, an example)")
    rp.add_argument("--baseline", metavar="DIR",
                    help="a baseline run directory: the regression check of `compare BASELINE RUN_DIR`, near the top")
    rp.add_argument("--title", help="page title")
    return rp


def run(args: argparse.Namespace) -> int:
    from bench.report import build_report

    for d in args.run_dirs:
        if not (Path(d) / "results.jsonl").exists():
            raise UsageError(f"not a run directory: {d} (no results.jsonl); accepted: directories written by run")
    out = inputs.output_file(args.output, "report") if args.output else Path(args.run_dirs[0]) / "report.html"
    path = build_report([Path(d) for d in args.run_dirs], out, latency_bound_ms=args.latency_bound_ms,
                        accuracy_floor=args.accuracy_floor, prices=Path(args.prices) if args.prices else None,
                        baseline=Path(args.baseline) if args.baseline else None, title=args.title,
                        demand_qps=args.demand_qps,
                        answer=inputs.output_file(args.answer, "answer file") if args.answer else None)
    print(f"report: {path}" + (f"\nanswer: {args.answer}" if args.answer else ""))
    return 0

