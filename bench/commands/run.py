"""``run``: run a sweep and write a run directory (records, environment, report)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

from bench.core.errors import UsageError
from bench.core.inputs import bounded
from bench.core.interrupts import RESUME_ADVICE
from bench.core.paths import confined
from bench.report.summary import summary_table

INTERRUPTED = RESUME_ADVICE  # what Ctrl-C or SIGTERM says (bench.cli): the run goes on with --resume


def _server_flags(r: argparse.ArgumentParser) -> None:
    """The server scenario's flags: its target rate and batcher, and the bound a valid run meets."""
    r.add_argument("--server-qps", type=_qps, help="server scenario: target requests/s (Poisson arrivals), or auto: the highest "
                   "QPS whose chosen percentile stays within --latency-bound-ms (capacity search)")
    r.add_argument("--max-queue-delay-ms", type=bounded("max_queue_delay_ms"), help="server scenario: how long the dynamic batcher waits for "
                   "a fuller batch (default 5)")
    r.add_argument("--latency-bound-ms", type=bounded("latency_bound_ms"), help="server scenario: bound on the --latency-percentile a run "
                   "must meet to be valid, by MLPerf's early stopping (required with --server-qps auto)")
    r.add_argument("--latency-percentile", type=bounded("latency_percentile"), help="server scenario: the percentile judged against the bound, "
                   "e.g. 0.9 (default 0.99; needs 44 requests per run at 0.9, 459 at 0.99)")


def setup_arguments(subparsers: Any) -> argparse.ArgumentParser:
    r = subparsers.add_parser("run", help="run a sweep and write a run directory", description=(
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
    r.add_argument("--quant", help="none, int8-dynamic (CPU: int8 weights, activations quantised per call), "
                                   "int8-weights (openvino: int8 weights only)")
    r.add_argument("--backends", help="runtimes: transformers (default), openvino (CPU; optional extra "
                   "'openvino'); each runs the axis values it accepts (README: Backends)")
    _backend_setting_flags(r)
    r.add_argument("--threads", help="torch intra-op threads per cell, e.g. 1,2; auto (default): torch's own "
                   "(one per physical core, or OMP_NUM_THREADS); more than the usable cores is allowed, with a warning")
    r.add_argument("--scenarios", help="single-stream (batch 1 only), offline, server (docs/scenarios.md); "
                   "default: the sweep's, else single-stream at batch 1 and offline above")
    r.add_argument("--load-generator", help="who issues the requests: builtin (default), mlperf (the official MLPerf "
                   "LoadGen; pip install -e '.[mlperf]'); builtin,mlperf makes a cell for each")
    _server_flags(r)
    r.add_argument("--weights", choices=None, help="auto (default), pretrained, random")
    r.add_argument("--model-path", help="a local Florence-2 checkpoint directory (implies --weights pretrained and "
                   "variant 'custom' unless --variants names the registry entry it is)")
    r.add_argument("--trust-remote-code", action="store_true", help="allow an original checkpoint's own code")
    r.add_argument("--allow-pickle", action="store_true", help="allow pickle (*.bin) weights")
    r.add_argument("--dataset", help="synthetic-smoke (default), a fetched dataset, NAME:N, or coco-json:PATH")
    r.add_argument("--allow-outside-images", action="store_true", help="coco-json:PATH: read images whose "
                   "file_name (absolute or ../) lies outside the image folder (refused by default)")
    r.add_argument("--limit", type=bounded("limit"), help="at most N images")
    r.add_argument("--max-new-tokens", type=bounded("max_new_tokens"), help="override the generation cap (random mode: forced count)")
    r.add_argument("--out", help="run directory (default: runs/<sweep>-<time>)")
    r.add_argument("--resume", action="store_true", help="continue a run directory: cells whose latest record is ok "
                   "or skipped are not run again, failed ones are retried; refused if the sweep differs from the "
                   "one recorded in env.json")
    r.add_argument("--extend", action="store_true", help="with --resume: accept a different sweep (e.g. more axis "
                   "values) and add its cells to the run directory")
    r.add_argument("--quiet", action="store_true", help="no progress bar; one line per cell (for CI logs)")
    r.add_argument("--executor", default="local", help="local (default) or ray")
    r.add_argument("--ray-address", default=os.environ.get("RAY_ADDRESS"), help="Ray cluster (default: RAY_ADDRESS)")
    return r


def run(args: argparse.Namespace) -> int:
    from bench.results import store
    from bench.run import sweep

    config = sweep.load_sweep(args.sweep)
    config = sweep.override(config, variants=args.variants, tasks=args.tasks, dtypes=args.dtypes,
                            batch_sizes=args.batch_sizes, devices=args.devices, attn=args.attn,
                            compile=args.compile, num_beams=args.num_beams, cache=args.cache,
                            channels_last=args.channels_last, quant=args.quant, scenarios=args.scenarios,
                            compile_vision=args.compile_vision, preprocess=args.preprocess, prefetch=args.prefetch,
                            threads=args.threads, load_generator=args.load_generator,
                            backends=args.backends)
    config = _server_overrides(config, args)
    config = _backend_overrides(config, args)
    updates = {k: v for k, v in (("weights", args.weights), ("model_path", args.model_path),
                                 ("dataset", args.dataset), ("limit", args.limit),
                                 ("max_new_tokens", args.max_new_tokens)) if v is not None}
    if args.trust_remote_code:
        updates["trust_remote_code"] = True
    if args.allow_pickle:
        updates["allow_pickle"] = True
    if args.allow_outside_images:
        updates["allow_outside_images"] = True
    if updates.get("model_path"):
        if "weights" not in updates and config.weights == "auto":
            updates["weights"] = "pretrained"
        if args.variants is None:  # the checkpoint's own config.json is the architecture
            updates["variants"] = ["custom"]
    config = dataclasses.replace(config, **updates)
    out = Path(args.out) if args.out else confined("runs", f"{config.name}-{_timestamp()}", "run directory")
    summary = sweep.run_sweep(config, out, resume=args.resume, quiet=args.quiet, executor=args.executor,
                              ray_address=args.ray_address, extend=args.extend)
    records = list(store.latest_by_cell(store.records(out)).values())
    print(summary_table(records))
    report = _write_report(out, config.server)
    print(f"\nrun directory: {out}\n  results: {out / store.RESULTS}\n  environment: {out / store.ENV}\n"
          f"  report: {report}")
    if summary.skipped_resumed:
        print(f"  resumed: {summary.skipped_resumed} cell(s) already done were skipped")
    failed = [r for r in records if r.status in ("error", "oom")]
    if failed:
        print(f"{len(failed)} cell(s) failed; see the error column above and {out / store.RESULTS}", file=sys.stderr)
    return 1 if failed else 0


def _server_overrides(config, args: argparse.Namespace):
    """``--server-qps`` and friends replace the sweep's [server] settings; they need a server cell."""
    flags = {"qps": args.server_qps, "max_queue_delay_ms": args.max_queue_delay_ms,
             "latency_bound_ms": args.latency_bound_ms, "latency_percentile": args.latency_percentile}
    given = {k: v for k, v in flags.items() if v is not None}
    if not given:
        return config
    from bench.scenarios import takes_load

    if not takes_load(config.scenarios or ()):
        raise UsageError(f"--{'server-qps' if 'qps' in given else next(iter(given)).replace('_', '-')} applies to "
                         "the server scenario, which this run has not; accepted: add server to --scenarios")
    return dataclasses.replace(config, server={**config.server, **given})


BACKEND_FLAG = "backend_setting"  # the argparse dest of --NAME-FIELD: backend_setting:NAME:FIELD


def _backend_setting_flags(r: argparse.ArgumentParser) -> None:
    """--NAME-FIELD for every field of every registered backend's settings (``Backend.settings_type``)."""
    from bench.backends.registry import BACKENDS

    for backend in BACKENDS.values():
        for f in dataclasses.fields(backend.settings_type) if backend.settings_type else ():
            r.add_argument(f"--{backend.name}-{f.name.replace('_', '-')}", metavar=f.name.upper(),
                           dest=f"{BACKEND_FLAG}:{backend.name}:{f.name}",
                           help=f"backend {backend.name}: {f.metadata.get('help', f.name)} ([backend.{backend.name}] "
                                f"{f.name})")


def _backend_overrides(config, args: argparse.Namespace):
    """``--openvino-streams`` and friends replace the sweep's [backend.NAME] settings; they need that backend."""
    given: dict[str, dict[str, str]] = {}
    for dest, value in vars(args).items():
        if dest.startswith(f"{BACKEND_FLAG}:") and value is not None:
            _, name, key = dest.split(":")
            given.setdefault(name, {})[key] = value
    for name, table in given.items():
        if name not in config.backends:
            flag = f"--{name}-{next(iter(table)).replace('_', '-')}"
            raise UsageError(f"{flag} applies to backend {name}, which this run has not; accepted: add {name} to "
                             "--backends")
    return dataclasses.replace(config, backend={**config.backend, **{
        name: {**config.backend.get(name, {}), **table} for name, table in given.items()}})


def _qps(text: str) -> float | str:
    """``--server-qps``: ``auto`` (the capacity search) or a load within ``inputs.BOUNDS["qps"]``."""
    return text if text == "auto" else bounded("qps")(text)


def _timestamp() -> str:
    import time

    return time.strftime("%Y%m%d-%H%M%S")


def _write_report(out: Path, server: dict[str, Any]) -> Path:
    """The run's own report asks the run's own question: its [server] bound at its percentile, when it has one
    (the sweep's settings, plain JSON: read whether or not the run has a server cell, which a bound alone
    does not make valid ``ServerSettings``)."""
    from bench.report.question import PERCENTILE_DEFAULT
    from bench.report.report import build_report
    from bench.results import dig

    return build_report([out], out / "report.html", latency_bound_ms=dig(server, "latency_bound_ms"),
                        latency_percentile=dig(server, "latency_percentile") or PERCENTILE_DEFAULT)
