"""The florence2-bench command line: one subcommand per job, each a thin layer over a module.

Exit codes: 0 all good; 1 a regression (compare, history check) or at least one failed cell (run); 2 bad
usage or bad input, with one line naming the offending value and what is accepted; 3 an unexpected error
(a bug), with one line and the path of a file holding the full traceback. A crash is never exit 1, which
`compare` and `history check` reserve for a regression.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path

from bench import inputs
from bench.errors import UsageError

PROG = "florence2-bench"

REPORT_HELP = """\
Render one self-contained HTML report (no network needed to open it) from one or more run directories,
e.g. a GPU run and a CPU run side by side. Read it from the top:

  Decision       per task and device kind, the best setting for each goal: highest throughput, lowest
                 single-stream request latency p90, highest server capacity within the latency bound,
                 lowest cost per million images (also within the bound when one is given), lowest energy
                 per image; each flagged stable/unstable (server: valid/invalid), with its weights mode.
                 With --demand-qps Q, the capacity planner: devices needed and cost per month and per
                 million images. Then the recommendation: the cheapest setting within the bound and floor.
  Environment    collapsed; the comparability panel lists what differs between the runs (commit,
                 library versions, driver, CPU model and cores, GPU).
  Regression     with --baseline: exactly what `compare BASELINE RUN_DIR` prints.
  Charts         throughput vs request latency (bound drawn), latency vs QPS per server setting (bound
                 drawn), reported accuracy vs measured cost, Pareto frontiers, throughput vs batch size,
                 per-stage time per image, memory, request latency distributions, energy and cost.
  All cells      a table that sorts (click a header) and filters (type words) in the page.

Latency is request latency, what one request waits (an offline request waits for its whole batch, a server
request includes queueing); the amortised time per image (batch time / batch size) is always named so.
Costs are derived from the price table (--prices): a GPU by its exact name, a CPU per vCPU-hour times the
cores the run used; the price's source is printed beside every cost. Unstable cells and invalid server
runs are marked in every table and chart.
"""


def _quiet_libraries() -> None:
    """Keep library chatter (progress bars, torchvision hints) out of the benchmark's output."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


# ------------------------------------------------------------------------------------------ run


def cmd_run(args: argparse.Namespace) -> int:
    from bench import store, sweep

    config = sweep.load_sweep(args.sweep)
    config = sweep.override(config, variants=args.variants, tasks=args.tasks, dtypes=args.dtypes,
                            batch_sizes=args.batch_sizes, devices=args.devices, attn=args.attn,
                            compile=args.compile, num_beams=args.num_beams, cache=args.cache,
                            channels_last=args.channels_last, quant=args.quant, scenarios=args.scenarios,
                            compile_vision=args.compile_vision, preprocess=args.preprocess, prefetch=args.prefetch,
                            backends=args.backends)
    config = _server_overrides(config, args)
    updates = {k: v for k, v in (("weights", args.weights), ("model_path", args.model_path),
                                 ("dataset", args.dataset), ("limit", args.limit),
                                 ("max_new_tokens", args.max_new_tokens)) if v is not None}
    if args.trust_remote_code:
        updates["trust_remote_code"] = True
    if args.allow_pickle:
        updates["allow_pickle"] = True
    if updates.get("model_path"):
        if "weights" not in updates and config.weights == "auto":
            updates["weights"] = "pretrained"
        if args.variants is None:  # the checkpoint's own config.json is the architecture
            updates["variants"] = ["custom"]
    config = dataclasses.replace(config, **updates)
    out = Path(args.out) if args.out else Path("runs") / f"{config.name}-{_timestamp()}"
    summary = sweep.run_sweep(config, out, resume=args.resume, quiet=args.quiet, executor=args.executor,
                              ray_address=args.ray_address, extend=args.extend)
    records = list(store.latest_by_cell(store.read_records(out)).values())
    print(summary_table(records))
    report = _write_report(out)
    print(f"\nrun directory: {out}\n  results: {out / store.RESULTS}\n  environment: {out / store.ENV}\n"
          f"  report: {report}")
    if summary.skipped_resumed:
        print(f"  resumed: {summary.skipped_resumed} cell(s) already done were skipped")
    failed = [r for r in records if r["status"] in ("error", "oom")]
    if failed:
        print(f"{len(failed)} cell(s) failed; see the error column above and {out / store.RESULTS}", file=sys.stderr)
    return 1 if failed else 0


def _server_overrides(config, args: argparse.Namespace):
    """``--server-qps`` and friends replace the sweep's [server] settings; they need a server cell."""
    flags = {"qps": args.server_qps, "max_queue_delay_ms": args.max_queue_delay_ms,
             "latency_bound_ms": args.latency_bound_ms}
    given = {k: v for k, v in flags.items() if v is not None}
    if not given:
        return config
    if "server" not in (config.scenarios or ()):
        raise UsageError(f"--{'server-qps' if 'qps' in given else next(iter(given)).replace('_', '-')} applies to "
                         "the server scenario, which this run has not; accepted: add server to --scenarios")
    return dataclasses.replace(config, server={**config.server, **given})


def _timestamp() -> str:
    import time

    return time.strftime("%Y%m%d-%H%M%S")


def _write_report(out: Path) -> Path:
    from bench.report import build_report

    return build_report([out], out / "report.html")


def summary_table(records: list[dict]) -> str:
    """A fixed-width table of the run's cells: what ran and the headline numbers."""
    head = ("status", "variant", "task", "scenario", "dtype", "bs", "device", "weights", "p50 ms", "p90 ms",
            "p99 ms", "img/s", "tok/s", "server", "peak RSS MiB", "tokens")
    rows = [head]
    invalid = []
    for r in records:
        lat, thr, mem = r.get("latency_ms") or {}, r.get("throughput") or {}, r.get("memory") or {}
        rss = mem.get("peak_rss_bytes")
        server = r.get("server") or {}
        if server and not server.get("valid"):
            invalid.append(f"! {r['variant']} {r['task']} bs{r['batch_size']} {r['device']} server: invalid at "
                           f"{_num(server.get('target_qps'), 3)} QPS: {server.get('invalid_reason')}")
        rows.append((
            r["status"] + ("*" if r.get("unstable") else ""), r["variant"], r["task"], r.get("scenario") or "-",
            r["dtype"], str(r["batch_size"]), r["device"], r["weights"], _num(lat.get("p50"), 0),
            _num(lat.get("p90"), 0), _num(lat.get("p99"), 0), _num(thr.get("images_per_s"), 3),
            _num(thr.get("tokens_per_s"), 1), _server_text(r), _num(rss / 2**20 if rss else None, 0),
            _num(r.get("gen_tokens_mean"), 1),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("latency = request latency, what one request waits (offline: the whole batch; server: queueing "
                 "included)")
    if any(r.get("unstable") for r in records):
        lines.append("* unstable: coefficient of variation above the threshold")
    return "\n".join(lines + invalid)


def _server_text(record: dict) -> str:
    """Server cells: the capacity found, or the load run and whether the run was valid."""
    server = record.get("server")
    if not server:
        return "-"
    if record.get("capacity_qps") is not None:
        return f"capacity {record['capacity_qps']:.3g} QPS"
    verdict = "valid" if server.get("valid") else "INVALID"
    return f"{verdict} @ {_num(server.get('target_qps'), 3)} QPS"


def _num(value, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


# ---------------------------------------------------------------------------------- other verbs


def cmd_report(args: argparse.Namespace) -> int:
    from bench.report import build_report

    for d in args.run_dirs:
        if not (Path(d) / "results.jsonl").exists():
            raise UsageError(f"not a run directory: {d} (no results.jsonl); accepted: directories written by run")
    out = inputs.output_file(args.output, "report") if args.output else Path(args.run_dirs[0]) / "report.html"
    path = build_report([Path(d) for d in args.run_dirs], out, latency_bound_ms=args.latency_bound_ms,
                        accuracy_floor=args.accuracy_floor, prices=Path(args.prices) if args.prices else None,
                        baseline=Path(args.baseline) if args.baseline else None, title=args.title,
                        demand_qps=args.demand_qps)
    print(f"report: {path}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from bench.compare import run_compare

    return run_compare(Path(args.baseline), Path(args.current), args.fail_on,
                       inputs.output_file(args.markdown, "markdown summary") if args.markdown else None)


def cmd_history(args: argparse.Namespace) -> int:
    from bench import history

    if args.action == "add":
        return history.run_add(Path(args.source), Path(args.history), args.commit, args.date)
    if args.action == "check":
        markdown = inputs.output_file(args.markdown, "markdown summary") if args.markdown else None
        return history.run_check(Path(args.history), args.fail_on, markdown, args.baseline_runs)
    if args.action == "steps":
        return history.run_steps(Path(args.history), args.fail_on)
    return history.run_report(Path(args.history), inputs.output_file(args.output, "trend report"), args.fail_on,
                              args.title)


def cmd_score(args: argparse.Namespace) -> int:
    from bench.metrics import format_metrics, score_file
    from bench.tasks import get_task

    metrics = score_file(get_task(args.task).token, args.dataset, Path(args.predictions),
                         inputs.output_file(args.json, "metrics file") if args.json else None)
    print(format_metrics(metrics))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from bench.store import export

    print(f"exported: {export(Path(args.run_dir), inputs.output_file(args.file, 'export file'))}")
    return 0


def cmd_variants(args: argparse.Namespace) -> int:
    from bench.variants import VARIANTS

    print(f"{'variant':10s} {'params':>9s}  {'hub id (original)':32s} {'native id':38s} description")
    for v in VARIANTS.values():
        print(f"{v.name:10s} {v.params / 1e6:8.1f}M  {v.hub_id:32s} {v.native_id:38s} {v.description}")
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from bench import fetch

    if args.action == "list":
        print(fetch.format_rows(fetch.list_datasets(args.cache_dir)))
        return 0
    if args.action == "fetch":
        path = fetch.fetch(_need_name(args), cache_dir=args.cache_dir)
        print(f"ready: {path}")
        return 0
    report = fetch.verify(_need_name(args), cache_dir=args.cache_dir)
    print(report)
    return 0 if report.ok else 1


def _need_name(args: argparse.Namespace) -> str:
    if not args.name:
        raise UsageError(f"datasets {args.action} needs a dataset NAME; see `{PROG} datasets list`")
    return args.name


def cmd_env(args: argparse.Namespace) -> int:
    from bench.environment import fingerprint

    print(json.dumps(fingerprint(), indent=2, sort_keys=True, default=str))
    return 0


def cmd_make_tiny(args: argparse.Namespace) -> int:
    from bench.backends.transformers.checkpoints import make_tiny_checkpoint

    inputs.output_file(Path(args.directory) / "config.json", "checkpoint")
    path = make_tiny_checkpoint(Path(args.directory), seed=args.seed)
    print(f"tiny Florence-2 checkpoint written to {path} (random weights; load it with --model-path {path})")
    return 0


def cmd_make_checkpoint(args: argparse.Namespace) -> int:
    from bench.backends.transformers.checkpoints import make_checkpoint
    from bench.variants import get_variant

    variant = get_variant(args.variant)
    inputs.output_file(Path(args.directory) / "config.json", "checkpoint")
    path = make_checkpoint(variant, Path(args.directory), seed=args.seed)
    print(f"Florence-2 {variant.name} checkpoint with RANDOM weights written to {path} (marked random in "
          f"florence2_bench.json; load it with --model-path {path})")
    return 0


# ------------------------------------------------------------------------------------- parser


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (exit 2) like every other bad input."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description=(
        "Benchmark Florence-2 models: accuracy, latency (per stage), throughput, memory and energy, "
        "across variants, tasks, precisions, batch sizes and devices."))
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run a sweep and write a run directory", description=(
        "Run a sweep (a matrix of settings) and write results.jsonl, env.json and report.html. "
        "Axis flags take comma-separated lists and replace the sweep file's axis. Without pretrained weights "
        "(--model-path, HF cache or hub) the exact architecture runs with random weights: speed and memory "
        "are faithful, accuracy is not measured, and every record says so."))
    r.add_argument("--sweep", default="smoke", help="shipped sweep name (smoke, cpu-full, gpu-full, procurement) "
                   "or a TOML file (default: smoke)")
    r.add_argument("--variants", help="e.g. base,large (see `variants`)")
    r.add_argument("--tasks", help="task tokens or bare names, e.g. '<CAPTION>,<OD>' or caption,od")
    r.add_argument("--dtypes", help="fp32, fp16, bf16")
    r.add_argument("--batch-sizes", help="e.g. 1,8,32")
    r.add_argument("--devices", help="cpu, cuda, cuda:N, mps")
    r.add_argument("--attn", help="attention implementation: eager, sdpa")
    r.add_argument("--compile", help="decoder steps: false, true (torch.compile, with --cache static), graphs "
                   "(compiled and replayed as CUDA graphs; CUDA, --cache static)")
    r.add_argument("--compile-vision", help="vision tower + projector: false, true (torch.compile), graphs (CUDA)")
    r.add_argument("--preprocess", help="host (the processor on the CPU), device (resize + normalise on the "
                   "cell's device)")
    r.add_argument("--prefetch", help="true,false: prepare the next batch on a background thread while this "
                   "one runs (throughput from wall time)")
    r.add_argument("--num-beams", help="e.g. 1,3 (model card: 3)")
    r.add_argument("--cache", help="KV cache: dynamic, static")
    r.add_argument("--channels-last", help="true,false: vision tower in channels_last")
    r.add_argument("--quant", help="none, int8-dynamic (CPU, transformers), int8-weights (openvino)")
    r.add_argument("--backends", help="runtimes: transformers (default), openvino (CPU; optional extra "
                   "'openvino'); each runs the axis values it accepts (README: Backends)")
    r.add_argument("--scenarios", help="single-stream (batch 1 only), offline, server (docs/scenarios.md); "
                   "default: the sweep's, else single-stream at batch 1 and offline above")
    r.add_argument("--server-qps", help="server scenario: target requests/s (Poisson arrivals), or auto: the highest "
                   "QPS whose p99 stays within --latency-bound-ms (capacity search)")
    r.add_argument("--max-queue-delay-ms", type=float, help="server scenario: how long the dynamic batcher waits for "
                   "a fuller batch (default 5)")
    r.add_argument("--latency-bound-ms", type=float, help="server scenario: p99 bound a run must meet to be valid "
                   "(required with --server-qps auto)")
    r.add_argument("--weights", choices=None, help="auto (default), pretrained, random")
    r.add_argument("--model-path", help="a local Florence-2 checkpoint directory (implies --weights pretrained and "
                   "variant 'custom' unless --variants names the registry entry it is)")
    r.add_argument("--trust-remote-code", action="store_true", help="allow an original checkpoint's own code")
    r.add_argument("--allow-pickle", action="store_true", help="allow pickle (*.bin) weights")
    r.add_argument("--dataset", help="synthetic-smoke (default), a fetched dataset, NAME:N, or coco-json:PATH")
    r.add_argument("--limit", type=int, help="at most N images")
    r.add_argument("--max-new-tokens", type=int, help="override the generation cap (random mode: forced count)")
    r.add_argument("--out", help="run directory (default: runs/<sweep>-<time>)")
    r.add_argument("--resume", action="store_true", help="continue a run directory: cells whose latest record is ok "
                   "or skipped are not run again, failed ones are retried; refused if the sweep differs from the "
                   "one recorded in env.json")
    r.add_argument("--extend", action="store_true", help="with --resume: accept a different sweep (e.g. more axis "
                   "values) and add its cells to the run directory")
    r.add_argument("--quiet", action="store_true", help="no progress bar; one line per cell (for CI logs)")
    r.add_argument("--executor", default="local", help="local (default) or ray")
    r.add_argument("--ray-address", default=os.environ.get("RAY_ADDRESS"), help="Ray cluster (default: RAY_ADDRESS)")
    r.set_defaults(func=cmd_run)

    rp = sub.add_parser(
        "report",
        help="render one HTML report from one or more run directories",
        description=REPORT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rp.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    rp.add_argument("-o", "--output", help="HTML file (default: RUN_DIR/report.html of the first run)")
    rp.add_argument("--latency-bound-ms", type=float, metavar="MS",
                    help="bound on request latency: p90 of single-stream cells, p99 of server cells; offline cells "
                         "never meet it (they are judged on throughput only)")
    rp.add_argument("--accuracy-floor", type=float, metavar="X",
                    help="accuracy floor on each task's headline metric (a ceiling for error rates such as CER)")
    rp.add_argument("--demand-qps", type=float, metavar="Q",
                    help="images per second to serve: the capacity planner gives, per device kind, the devices "
                         "needed at its best valid server setting (ceil(Q / capacity)) and their cost")
    rp.add_argument("--prices", metavar="FILE",
                    help="TOML price table: [gpu] \"exact GPU name\" = {usd_per_hour, source}, [cpu] "
                         "usd_per_vcpu_hour and source (default: bench/data/prices.toml, an example)")
    rp.add_argument("--baseline", metavar="DIR",
                    help="a baseline run directory: the regression check of `compare BASELINE RUN_DIR`, near the top")
    rp.add_argument("--title", help="page title")
    rp.set_defaults(func=cmd_report)

    c = sub.add_parser("compare", help="compare two run directories; exit 1 on a significant regression")
    c.add_argument("baseline", metavar="BASELINE_DIR")
    c.add_argument("current", metavar="CURRENT_DIR")
    c.add_argument("--fail-on", help="thresholds, e.g. latency_p50=5%%,accuracy=-0.5")
    c.add_argument("--markdown", help="also write a markdown summary (for CI)")
    c.set_defaults(func=cmd_compare)

    h = sub.add_parser("history", help="track runs over time: add, check the newest, find steps, trend report",
                       description=(
        "A history directory keeps one file per run (commit, date, machine class, records). Runs are only "
        "compared within a machine class: CPU model and cores, GPU, torch and transformers major versions. "
        "docs/history.md explains the statistics."))
    hs = h.add_subparsers(dest="action", required=True, metavar="ACTION")
    fail_on = "thresholds as for compare, e.g. latency_p50=5%%,accuracy=-0.5 (default: compare's)"
    ha = hs.add_parser("add", help="add a run directory or a pytest-benchmark JSON file (twice: no-op)")
    ha.add_argument("source", metavar="RUN_DIR|BENCH.json")
    ha.add_argument("--history", required=True, metavar="DIR", help="the history directory (created if missing)")
    ha.add_argument("--commit", help="the commit measured (default: git.commit of env.json / commit_info.id)")
    ha.add_argument("--date", help="ISO date or time of the run (default: its own start time)")
    hc = hs.add_parser("check", help="judge the newest run against its class's previous runs; exit 1 on a regression")
    hc.add_argument("history", metavar="DIR")
    hc.add_argument("--fail-on", help=fail_on)
    hc.add_argument("--markdown", help="also write a markdown summary (e.g. $GITHUB_STEP_SUMMARY)")
    hc.add_argument("--baseline-runs", type=int, metavar="K",
                    help="how many previous runs of the class give the baseline median (default 10, at least 3)")
    hst = hs.add_parser("steps", help="list every step over the whole history with the first commit after it")
    hst.add_argument("history", metavar="DIR")
    hst.add_argument("--fail-on", help=fail_on)
    hr = hs.add_parser("report", help="write the trend report (self-contained HTML)")
    hr.add_argument("history", metavar="DIR")
    hr.add_argument("-o", "--output", required=True, metavar="FILE.html")
    hr.add_argument("--fail-on", help=fail_on)
    hr.add_argument("--title", help="page title")
    h.set_defaults(func=cmd_history)

    s = sub.add_parser("score", help="score predictions made elsewhere with the same metric code")
    s.add_argument("--task", required=True)
    s.add_argument("--dataset", required=True)
    s.add_argument("--predictions", required=True, help="JSONL predictions (format in the README)")
    s.add_argument("--json", help="also write the metrics as JSON")
    s.set_defaults(func=cmd_score)

    e = sub.add_parser("export", help="export a run directory's records as CSV or Parquet (flattened columns)")
    e.add_argument("run_dir", metavar="RUN_DIR")
    e.add_argument("file", metavar="FILE.csv|FILE.parquet")
    e.set_defaults(func=cmd_export)

    sub.add_parser("variants", help="list the variant registry with parameter counts").set_defaults(func=cmd_variants)

    d = sub.add_parser("datasets", help="list, fetch or verify datasets")
    d.add_argument("action", choices=("list", "fetch", "verify"))
    d.add_argument("name", nargs="?")
    d.add_argument("--cache-dir", help="default: $FLORENCE2_BENCH_DATA or ~/.cache/florence2-bench/datasets")
    d.set_defaults(func=cmd_datasets)

    sub.add_parser("env", help="print the environment fingerprint").set_defaults(func=cmd_env)

    t = sub.add_parser("make-tiny-checkpoint", help="write a complete, tiny, random Florence-2 checkpoint")
    t.add_argument("directory", metavar="DIR")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=cmd_make_tiny)

    m = sub.add_parser("make-checkpoint", help="write a Florence-2 checkpoint of a variant's real size with random "
                       "weights, marked random (for other tools to run exactly the model measured here)")
    m.add_argument("directory", metavar="DIR")
    m.add_argument("--variant", default="base", help="a registered variant, e.g. base, large (see `variants`)")
    m.add_argument("--seed", type=int, default=0)
    m.set_defaults(func=cmd_make_checkpoint)
    return p


EXIT_USAGE, EXIT_CRASH = 2, 3  # 0 and 1 are what the commands return (README: exit codes)


def main(argv: list[str] | None = None) -> int:
    _quiet_libraries()
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        with _one_line_warnings():
            return args.func(args)
    except UsageError as exc:
        print(f"{PROG}: error: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; finished cells are in results.jsonl (use --resume)", file=sys.stderr)
        return 130
    except Exception as exc:  # the last resort: a bug, never mistaken for "regression" or "failed cell"
        path = _write_traceback(argv)
        print(f"{PROG}: internal error: {type(exc).__name__}: {_one_line(str(exc))}; full traceback in {path}",
              file=sys.stderr)
        return EXIT_CRASH


def _one_line(text: str, limit: int = 500) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _write_traceback(argv: list[str] | None) -> Path:
    """The current exception's full traceback in a file of its own (the terminal gets one line)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    fd, name = tempfile.mkstemp(prefix=f"{PROG}-crash-{stamp}-", suffix=".txt")
    with os.fdopen(fd, "w") as fh:
        fh.write(f"{PROG} {' '.join(sys.argv[1:] if argv is None else argv)}\n\n{traceback.format_exc()}")
    return Path(name)


@contextlib.contextmanager
def _one_line_warnings() -> Iterator[None]:
    """Warnings print as one ``florence2-bench: warning: ...`` line, not Python's two-line format."""
    original = warnings.formatwarning
    warnings.formatwarning = lambda message, *args, **kwargs: f"{PROG}: warning: {_one_line(str(message))}\n"
    try:
        yield
    finally:
        warnings.formatwarning = original
