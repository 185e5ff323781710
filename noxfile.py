"""Sessions for users and CI. Every session installs the project with the CPU build of torch
(pinned below), so CI never downloads a multi-GB CUDA wheel; on GPU machines install the CUDA
build of torch yourself and run with `--no-venv` or `-R` to reuse it (see README)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.default_venv_backend = "venv"

# The CPU build of torch: `pip install torch==2.13.0` takes it from local disk on this project's
# machines. Override with FLORENCE2_BENCH_TORCH (e.g. "torch" on a CUDA machine).
TORCH = os.environ.get("FLORENCE2_BENCH_TORCH", "torch==2.13.0")


def install(session: nox.Session, *extras: str) -> None:
    session.install(TORCH)
    spec = f".[{','.join(extras)}]" if extras else "."
    session.install("-e", spec)


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (tiny checkpoints only; minutes on a 2-core CPU). Ray is installed so the
    distributed executor is tested against a local Ray instance, MLPerf LoadGen so the second load
    generator is tested against the builtin one, and OpenVINO so the second backend is tested against
    transformers."""
    install(session, "test", "ray", "mlperf", "openvino")
    session.run("python", "-m", "pytest", "-q", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "bench", "tests", "noxfile.py")


@nox.session
def bench(session: nox.Session) -> None:
    """The main job: the default (smoke) sweep, offline, on this machine. Extra args go to `run`."""
    install(session)
    session.run("florence2-bench", "run", *session.posargs)


@nox.session
def perf(session: nox.Session) -> None:
    """Model-card snippet vs the harness's best setting: prints `speedup: N.NNx`. OpenVINO is installed:
    the CPU defaults include its settings."""
    install(session, "openvino")
    session.run("python", "-m", "bench.tools.perf", *session.posargs)


@nox.session
def scale(session: nox.Session) -> None:
    """The scale benchmark (bench/tools/scale.py): report, compare, export and history timed on synthetic run
    directories of 1k to 43k cells (100k for compare and export) and a 2,000-run history made from a real
    tiny run; prints growth exponents and peak RSS, writes runs/scale/scale.json. Takes an hour or more on a
    busy 2-core machine. Extra args go to the tool (e.g. `-- --sizes 1000,10000`, or
    `-- --commands compare,export --sizes 100000` for compare and export at 100k alone)."""
    install(session, "test")
    session.run("python", "-m", "bench.tools.scale", *session.posargs)


@nox.session
def gpu_check(session: nox.Session) -> None:
    """On one GPU: base and large, fp32/fp16/bf16, batch 1/8/32; fails unless every figure is plausible."""
    install(session)
    session.run("python", "-m", "bench.tools.gpucheck", *session.posargs)


def regression_plan(posargs: list[str], environ: Mapping[str, str]) -> tuple[str, list[tuple[list[str], tuple[int, ...]]]]:
    """The run directory and the commands of `nox -s regression`, each with the exit codes that let
    the session go on. Arguments: `[OUT] [--history DIR] [--commit SHA] [run options...]`.

    Without --history: run the smoke sweep into OUT and compare it with reports/baselines/smoke-cpu.
    With --history DIR: run the sweep (a failed cell is still recorded), add it to the history, write
    the trend report OUT/trends.html, then check the newest run; its markdown goes to
    $GITHUB_STEP_SUMMARY when set, else OUT/history-check.md. The check comes last: its exit 1 fails
    the session after everything else was written.
    """
    args = list(posargs)
    out = args.pop(0) if args and not args[0].startswith("-") else "runs/regression-current"
    options: dict[str, str] = {}
    for name in ("--history", "--commit"):
        if name in args:
            at = args.index(name)
            if at + 1 >= len(args):
                raise ValueError(f"{name} needs a value")
            options[name] = args[at + 1]
            del args[at : at + 2]
    sweep = ["florence2-bench", "run", "--sweep", "smoke", "--weights", "random", "--out", out, "--quiet", *args]
    history = options.get("--history")
    if history is None:
        compare = ["florence2-bench", "compare", "reports/baselines/smoke-cpu", out, "--markdown", f"{out}/compare.md"]
        return out, [(sweep, (0,)), (compare, (0,))]
    commit = ["--commit", options["--commit"]] if "--commit" in options else []
    markdown = environ.get("GITHUB_STEP_SUMMARY") or f"{out}/history-check.md"
    return out, [
        (sweep, (0, 1)),
        (["florence2-bench", "history", "add", out, "--history", history, *commit], (0,)),
        (["florence2-bench", "history", "report", history, "-o", f"{out}/trends.html"], (0,)),
        (["florence2-bench", "history", "check", history, "--markdown", markdown], (0,)),
    ]


@nox.session
def regression(session: nox.Session) -> None:
    """Run the smoke sweep and compare it with the committed baseline (exit 1 on a regression), or with
    `-- --history DIR` add it to a history, write its trend report and check it (docs/ci.md)."""
    try:
        out, commands = regression_plan(session.posargs, os.environ)
    except ValueError as exc:
        session.error(str(exc))
    install(session)
    shutil.rmtree(out, ignore_errors=True)
    for argv, codes in commands:
        session.run(*argv, success_codes=codes)


@nox.session
def benchmarks(session: nox.Session) -> None:
    """pytest-benchmark suites of the tiny-checkpoint pipeline (JSON under .benchmarks/)."""
    install(session, "test")
    session.run("python", "-m", "pytest", "tests/benchmarks", "-p", "no:cacheprovider", "-o", "addopts=",
                "-s", "--benchmark-enable", "--benchmark-autosave", *session.posargs)
