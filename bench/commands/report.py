"""``report``: render one HTML report from one or more run directories."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bench.core import inputs
from bench.core.errors import UsageError
from bench.report.question import MAX_UTILISATION_DEFAULT, PERCENTILE_DEFAULT

REPORT_HELP = """\
Render one self-contained HTML report (no network needed to open it) from one or more run directories,
e.g. a GPU run and a CPU run side by side. Read it from the top:

  Answer         first: per task, the question --latency-bound-ms B at --latency-percentile P (default
                 0.99) for --demand-qps Q (default: one device of the best option at the target
                 utilisation), planned at --max-utilisation U (default 0.8: devices = ceil(Q / (capacity x U)),
                 never 100%). Per device kind the cheapest option that qualifies (capacity judged at P, a VALID
                 run, no suspect flag, through --quality-gate X when given) and the top five: devices, USD per
                 month (x 730 h), USD per million images, the P-th percentile with its own 95% interval,
                 validity stamp, flags and quality basis, and what it rests on: measured server capacity, or
                 (no server cell for the setting) predicted (queueing model from measured batch times).
                 Options that cannot headline (judged at another percentile, invalid, flagged, below the
                 gate) are listed with why. --answer FILE.json writes the same.
  Decision       per task and device kind, the best setting for each goal: highest throughput, lowest
                 single-stream request latency p90, highest server capacity within the latency bound,
                 the answer's pick, lowest energy per image; each with the 95% interval and sample count of
                 the figure its scenario is judged on. Then the recommendation: the answer's overall pick.
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
                    help="the question's bound on request latency at --latency-percentile (the answer); the decision "
                         "table judges single-stream cells by p90, server cells by their own percentile; offline cells "
                         "never meet it")
    rp.add_argument("--latency-percentile", type=inputs.bounded("latency_percentile"), metavar="P", default=PERCENTILE_DEFAULT,
                    help=f"the percentile the bound is on, in (0, 1) (default {PERCENTILE_DEFAULT:g}): an option "
                         "qualifies only if its capacity was judged at P")
    rp.add_argument("--max-utilisation", type=inputs.bounded("max_utilisation"), metavar="U", default=MAX_UTILISATION_DEFAULT,
                    help=f"plan devices at most this busy, in (0, 1] (default {MAX_UTILISATION_DEFAULT:g}): "
                         "devices = ceil(demand / (capacity x U))")
    rp.add_argument("--quality-gate", type=inputs.bounded("quality_gate"), metavar="X",
                    help="keep out of the headline any option whose accuracy is not measured or below X times the "
                         "fp32 reference of the same variant and task, in (0, 1] (MLPerf: 0.99)")
    rp.add_argument("--accuracy-floor", type=inputs.bounded("accuracy_floor"), metavar="X",
                    help="accuracy floor on each task's headline metric (a ceiling for error rates such as CER)")
    rp.add_argument("--demand-qps", type=inputs.bounded("demand_qps"), metavar="Q",
                    help="images per second to serve: the answer gives, per task and device kind, the cheapest "
                         "setting, the devices it needs (ceil(Q / (capacity x U))) and their cost (default: one "
                         "device of the best option at the target utilisation)")
    rp.add_argument("--answer", metavar="FILE.json",
                    help="also write the answer as JSON (README, 'The answer JSON'): {demand_qps, latency_bound_ms, "
                         "latency_percentile, max_utilisation, quality_gate, accuracy_floor, answers: [{task, device, "
                         "variant, backend, dtype, quant, threads, batch_size, scenario, devices, usd_per_month, "
                         "usd_per_million_images, percentile, latency_ms, latency_ci95_ms, basis, validity, flags, "
                         "quality, top_options, other_options, ...}], unanswered}")
    rp.add_argument("--prices", metavar="FILE",
                    help="TOML price table: [gpu] \"exact GPU name\" = {usd_per_hour, source}, [cpu] "
                         "usd_per_vcpu_hour and source (default: bench/data/prices.toml, an example)")
    rp.add_argument("--baseline", metavar="DIR",
                    help="a baseline run directory: the regression check of `compare BASELINE RUN_DIR`, near the top")
    rp.add_argument("--title", help="page title")
    return rp


def run(args: argparse.Namespace) -> int:
    from bench.report.report import build_report

    for d in args.run_dirs:
        if not (Path(d) / "results.jsonl").exists():
            raise UsageError(f"not a run directory: {d} (no results.jsonl); accepted: directories written by run")
    out = inputs.output_file(args.output, "report") if args.output else Path(args.run_dirs[0]) / "report.html"
    path = build_report([Path(d) for d in args.run_dirs], out, latency_bound_ms=args.latency_bound_ms,
                        accuracy_floor=args.accuracy_floor, prices=Path(args.prices) if args.prices else None,
                        baseline=Path(args.baseline) if args.baseline else None, title=args.title,
                        demand_qps=args.demand_qps, latency_percentile=args.latency_percentile,
                        max_utilisation=args.max_utilisation, quality_gate=args.quality_gate,
                        answer=inputs.output_file(args.answer, "answer file") if args.answer else None)
    print(f"report: {path}" + (f"\nanswer: {args.answer}" if args.answer else ""))
    return 0

