"""The hostile probe of issue 21: deterministic cases against every command, one line per case.

    python scripts/probe_hostile.py [--keep DIR] [--only SUBSTRING]

Each case runs in a sandbox of its own (``CASE/work`` is where the tool may write; everything else in
``CASE``, a ``victim`` folder and files beside the work folder, must come out unchanged) and is judged on:

- the exit code is one the case allows (bad input: 2; never 3, never a traceback);
- an exit 2 ends with one ``florence2-bench: error:`` line;
- nothing outside ``CASE/work`` was written, changed or deleted, and no ``*.tmp`` file is left anywhere;
- the case's own check (a record not doubled, a plan without negative devices, ...).

Output: ``ok|FAIL  class  case: exit N[; why]``, then a count per class; exit 1 when a case failed.
Commands run in-process (``bench.cli.main``); full disks are injected through the writer seams, a missing
LoadGen through ``sys.modules`` (as tests/test_loadgen.py does). Classes beyond issue 21's: the ``--answer``
JSON (never NaN or Infinity), the load generator and server settings, stored records with the newer fields
wrong-typed, and ``env.json``'s ``host_load`` of the wrong shape.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import sys
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the hostile-file builders the fault tests use (tests/hostile.py)
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from hostile import bench_json, edit_records  # noqa: E402

from bench import cli  # noqa: E402
from bench.accuracy import fetch  # noqa: E402
from bench.core import paths  # noqa: E402
from bench.core.errors import UsageError  # noqa: E402
from bench.report import answer, report  # noqa: E402
from bench.report.question import Question  # noqa: E402
from bench.results import store  # noqa: E402
from bench.run import sweep  # noqa: E402

BASELINE = ROOT / "reports" / "baselines" / "smoke-cpu"
ENOSPC = OSError(28, "No space left on device")


@dataclass
class Case:
    klass: str
    name: str
    build: Callable[[Path], list[str] | Callable[[], int]]  # argv for the CLI, or an in-process action
    exits: tuple[int, ...] = (2,)
    check: Callable[[Path, str, str], str | None] | None = None  # (work, stdout, stderr) -> problem or None
    needle: str = ""  # what the error line must contain


@dataclass
class Shared:
    tiny: Path
    finished: Path
    sweep_file: Path
    cases: list[Case] = field(default_factory=list)


S: Shared  # set by main()


# ------------------------------------------------------------------------------------------ helpers


def sweep_toml(path: Path, **matrix) -> Path:
    axes = {"variants": ["base"], "tasks": ["<CAPTION>"], "batch_sizes": [1], "num_beams": [1], **matrix}
    lines = ['name = "probe"', *(f"{k} = {json.dumps(v)}" for k, v in axes.items()),
             f"model_path = {json.dumps(str(S.tiny))}", 'weights = "pretrained"', 'dataset = "synthetic-smoke"',
             "limit = 1", "max_new_tokens = 2", "energy_idle_s = 0.0", "examples = 1", "[repetition]",
             "warmup = 0", "min_iterations = 1", "max_iterations = 1", "min_duration_s = 0.0"]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_copy(work: Path, name: str = "run", source: Path | None = None) -> Path:
    return shutil.copytree(source or BASELINE, work / name, symlinks=True)


def manifest(sandbox: Path, name: object = "d", file_name: object = "src.txt", requires: object = None) -> Path:
    work = sandbox / "work"
    folder = work / "manifests"
    folder.mkdir(exist_ok=True)
    (work / "src.txt").write_text("data")
    text = (f"name = {json.dumps(name)}\ndescription = \"d\"\nlicense = \"x\"\nformat = \"x\"\nsubset = \"x\"\n"
            + (f"requires = {json.dumps(requires)}\n" if requires is not None else "")
            + f"[[files]]\nname = {json.dumps(file_name)}\nurl = \"file://{work / 'src.txt'}\"\n")
    (folder / "d.toml").write_text(text)
    os.environ[fetch.MANIFEST_ENV] = str(folder)
    return folder


def coco(work: Path, file_name: object, image_dir: Path | None = None) -> str:
    from PIL import Image

    data = work / "data"
    data.mkdir(exist_ok=True)
    Image.new("RGB", (64, 48), (10, 90, 200)).save(data / "1.png")
    doc = {"images": [{"id": 1, "file_name": file_name, "width": 64, "height": 48}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 30, 20]}],
           "categories": [{"id": 1, "name": "box"}]}
    (data / "boxes.json").write_text(json.dumps(doc))
    return f"coco-json:{data / 'boxes.json'}" + (f"@{image_dir}" if image_dir else "")


def tiny_run(work: Path, *args: str) -> list[str]:
    return ["run", "--sweep", str(sweep_toml(work / "s.toml")), "--out", str(work / "out"), "--quiet", *args]


def resumed(work: Path) -> Path:
    return run_copy(work, "resumed", S.finished)


def history_of(work: Path, n: int = 1) -> Path:
    history = work / "h"
    for i in range(n):
        path = bench_json(work, datetime=f"2026-11-2{i}T08:00:00Z", **{"commit_info.id": f"c{i}"})
        with quiet():
            assert cli.main(["history", "add", str(path), "--history", str(history)]) == 0
    return history


def edit_newest_entry(history: Path, change) -> Path:
    newest = sorted(history.glob("run-*.json"))[-1]
    entry = json.loads(newest.read_text())
    change(entry)
    newest.write_text(json.dumps(entry))
    return history


@contextlib.contextmanager
def quiet():
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def raises_usage(action: Callable[[], object]) -> Callable[[], int]:
    """An in-process action judged like a command: UsageError is exit 2, success 0, anything else 3."""

    def run() -> int:
        try:
            action()
        except UsageError as exc:
            print(f"florence2-bench: error: {exc}", file=sys.stderr)
            return 2
        return 0

    return run


def enospc(*_args):
    raise ENOSPC


def count_entries(n: int) -> Callable[[Path, str, str], str | None]:
    def check(work: Path, out: str, err: str) -> str | None:
        found = len(list((work / "work" / "h").glob("run-*.json")))
        return None if found == n else f"{found} history entries, {n} expected"

    return check


def unchanged(relative: str, source: Path | None = None) -> Callable[[Path, str, str], str | None]:
    """The finished run's results.jsonl is byte for byte what it was (nothing cut, appended or mixed)."""

    def check(work: Path, out: str, err: str) -> str | None:
        before = ((source or S.finished) / store.RESULTS).read_bytes()
        return None if (work / "work" / relative).read_bytes() == before else f"{relative} changed"

    return check


# ------------------------------------------------------------------------------------------ cases


def add(klass: str, name: str, build, exits=(2,), check=None, needle="") -> None:
    S.cases.append(Case(klass, name, build, exits, check, needle))


def paths_cases() -> None:
    k = "paths"
    for name in ["../../../escaped.txt", "../escaped.txt", "/tmp/probe-abs.txt", "..", ".", ".hidden", "a/b",
                 "a\\b", "x\ny", "C:evil", "", "a" * 300, 5]:
        add(k, f"manifest file name {name!r:.30}", lambda w, n=name: raises_usage(
            lambda: (manifest(w, file_name=n), fetch.fetch("d", cache_dir=w / "work" / "cache",
                                                           log=lambda m: None))), needle="file name")
    for name in ["./../victim", "../victim", "/abs", "a/b", "..", ""]:
        add(k, f"manifest dataset name {name!r}", lambda w, n=name: raises_usage(
            lambda: (manifest(w, name=n), fetch.fetch(n or "d", cache_dir=w / "work" / "cache",
                                                      log=lambda m: None))), needle="")
    for req in (["../x"], ["/x"], [".."]):
        add(k, f"manifest requires {req!r}", lambda w, r=req: raises_usage(
            lambda: (manifest(w, requires=r), fetch.fetch("d", cache_dir=w / "work" / "cache", log=lambda m: None))),
            needle="required dataset")
    for label, file_name in [("absolute outside", "{victim}/secret.png"), ("climbing ..", "../../victim/secret.png"),
                             ("deep climb", "a/../../../victim/secret.png"), ("/etc/hostname", "/etc/hostname"),
                             ("empty", ""), ("a number", 5), ("null", None), ("NUL byte", "1.png\0x")]:
        add(k, f"coco file_name {label}", lambda w, f=file_name: tiny_run(
            w / "work", "--dataset", coco(w / "work", f.format(victim=w / "victim") if isinstance(f, str) else f)),
            needle="file_name")
    add(k, "coco file_name a link inside the image folder to outside", lambda w: (
        (w / "work" / "data").mkdir(parents=True), (w / "work" / "data" / "l.png").symlink_to(w / "victim" / "secret.png"),
        tiny_run(w / "work", "--dataset", coco(w / "work", "l.png")))[-1], needle="outside")
    add(k, "coco file_name outside with --allow-outside-images reads it", lambda w: tiny_run(
        w / "work", "--dataset", coco(w / "work", "../../victim/secret.png"), "--tasks", "od",
        "--allow-outside-images"), exits=(0,))
    for target in (store.RESULTS, store.ENV, store.LOCK):
        add(k, f"resume with {target} a link outside", lambda w, t=target: (
            (resumed(w / "work") / t).unlink(missing_ok=True),
            (w / "work" / "resumed" / t).symlink_to(w / "victim" / "file.txt"),
            ["run", "--sweep", str(S.sweep_file), "--out", str(w / "work" / "resumed"), "--resume", "--quiet"])[-1],
            needle="symbolic link")
    add(k, "fresh run with results.jsonl a link to an empty file", lambda w: (
        (w / "work" / "out").mkdir(parents=True),
        (w / "work" / "out" / store.RESULTS).symlink_to(w / "victim" / "empty"),
        tiny_run(w / "work"))[-1], needle="symbolic link")
    add(k, "report.html a link outside", lambda w: (
        (run_copy(w / "work") / store.REPORT).symlink_to(w / "victim" / "file.txt"),
        ["report", str(w / "work" / "run")])[-1], needle="symbolic link")
    add(k, "report -o onto a link outside", lambda w: (
        run_copy(w / "work"), (w / "work" / "r.html").symlink_to(w / "victim" / "file.txt"),
        ["report", str(w / "work" / "run"), "-o", str(w / "work" / "r.html")])[-1], needle="symbolic link")
    add(k, "examples/ a link to a folder outside", lambda w: (
        (w / "work" / "out").mkdir(parents=True), (w / "work" / "out" / "examples").symlink_to(w / "victim"),
        tiny_run(w / "work"))[-1], exits=(0, 1, 2))
    for verb in ("report", "compare", "export", "history", "resume"):
        add(k, f"results.jsonl a directory: {verb}", lambda w, v=verb: _results_dir(w, v), needle="is a directory")


def _results_dir(w: Path, verb: str) -> list[str]:
    run = w / "work" / "run"
    (run / store.RESULTS).mkdir(parents=True)
    return {"report": ["report", str(run)], "compare": ["compare", str(run), str(run)],
            "export": ["export", str(run), str(w / "work" / "x.csv")],
            "history": ["history", "add", str(run), "--history", str(w / "work" / "h")],
            "resume": ["run", "--sweep", str(S.sweep_file), "--out", str(run), "--resume", "--quiet"]}[verb]


def doubled_cases() -> None:
    k = "doubled"

    def locked(w: Path) -> list[str]:
        run = run_copy(w / "work")
        holder = store.run_lock(run)
        holder.__enter__()
        HELD.append(holder)
        return ["history", "add", str(run), "--history", str(w / "work" / "h")]

    add(k, "history add of a run still writing (lock held)", locked, needle="is being written")

    def add_thrice(w: Path) -> Callable[[], int]:
        run = run_copy(w / "work")
        return lambda: max(cli.main(["history", "add", str(s), "--history", str(w / "work" / "h")])
                           for s in (run, f"{run}/", w / "work" / "." / "run"))

    add(k, "history add of one run three ways", add_thrice, exits=(0,), check=count_entries(1))
    add(k, "report RUN ./RUN/ counts once", lambda w: (
        run_copy(w / "work"), ["report", str(w / "work" / "run"), f"{w / 'work' / 'run'}/", "-o",
                               str(w / "work" / "r.html")])[-1], exits=(0,),
        check=lambda w, o, e: None if "named twice" in e else "no warning that RUN was named twice")
    add(k, "compare RUN ./RUN/ is the same directory", lambda w: (
        run_copy(w / "work"), ["compare", str(w / "work" / "run"), f"{w / 'work' / 'run'}/"])[-1], exits=(0,))
    for label, env in [("missing", None), ("not JSON", b"{"), ("a list", b"[]"), ("sweep a list", b'{"sweep": [1]}'),
                       ("sweep a string", b'{"sweep": "x"}'), ("no sweep", b'{"git": {"commit": "a"}}'),
                       ("not UTF-8", b'{"sweep": "\xff"}')]:
        def build(w: Path, env=env) -> list[str]:
            run = resumed(w / "work")
            (run / store.ENV).unlink()
            if env is not None:
                (run / store.ENV).write_bytes(env)
            return ["run", "--sweep", str(sweep_toml(w / "work" / "o.toml", num_beams=[2])), "--out", str(run),
                    "--resume", "--quiet"]

        add(k, f"resume with env.json {label}", build, needle="missing or unreadable",
            check=unchanged("resumed/results.jsonl"))
    add(k, "resume with another sweep and a torn tail changes nothing", lambda w: (
        resumed(w / "work"), (w / "work" / "resumed" / store.RESULTS).open("ab").write(b'{"torn'),
        ["run", "--sweep", str(sweep_toml(w / "work" / "o.toml", num_beams=[2])), "--out",
         str(w / "work" / "resumed"), "--resume", "--quiet"])[-1], needle="different sweep",
        check=lambda w, o, e: None if (w / "work" / "resumed" / store.RESULTS).read_bytes().endswith(b'{"torn')
        else "the torn tail was cut before the resume was accepted")


HELD: list = []


def verdict_cases() -> None:
    k = "verdicts"
    for status in ("skipped",):
        add(k, f"compare with every current cell {status}", lambda w, s=status: (
            run_copy(w / "work", "base"), edit_records(run_copy(w / "work", "cur"), lambda r: {**r, "status": s}),
            ["compare", str(w / "work" / "base"), str(w / "work" / "cur")])[-1], needle="nothing judged")
    add(k, "compare with every cell skipped on both sides", lambda w: (
        edit_records(run_copy(w / "work", "base"), lambda r: {**r, "status": "skipped"}),
        edit_records(run_copy(w / "work", "cur"), lambda r: {**r, "status": "skipped"}),
        ["compare", str(w / "work" / "base"), str(w / "work" / "cur")])[-1], needle="nothing judged")
    add(k, "compare with one current cell skipped still judges the rest", lambda w: (
        run_copy(w / "work", "base"), _skip_first(run_copy(w / "work", "cur")),
        ["compare", str(w / "work" / "base"), str(w / "work" / "cur")])[-1], exits=(0, 1),
        check=lambda w, o, e: None if "baseline ok, current skipped" in o else "the skipped cell is not listed")
    for value in (float("nan"), 0.0, -1.0, float("inf")):
        add(k, f"history check, newest benchmark p50 {value}", lambda w, v=value: (
            history_of(w / "work", 4), edit_newest_entry(w / "work" / "h", lambda e: (
                e["records"][0]["latency_ms"].update(p50=v), e["records"][0].update(samples_ms=[v] * 3))),
            ["history", "check", str(w / "work" / "h")])[-1], needle="nothing judged",
            check=lambda w, o, e: None if "not a positive finite number" in o else "the invalid value is not listed")
    add(k, "history check with too few earlier runs is not judged yet (exit 0)", lambda w: (
        history_of(w / "work", 2), ["history", "check", str(w / "work" / "h")])[-1], exits=(0,),
        check=lambda w, o, e: None if "NOT JUDGED" in o else "no NOT JUDGED line")
    for capacity in (-3.0, 5e-324, 0.0, 1e-300, 1e-7, float("nan")):
        add(k, f"capacity_qps {capacity} plans no devices", lambda w, c=capacity: _capacity(w, c), exits=(0,))


def _skip_first(run: Path) -> Path:
    first = []
    return edit_records(run, lambda r: {**r, "status": "skipped"} if not first and not first.append(1) else r)


def _capacity(w: Path, capacity: float) -> Callable[[], int]:
    run = edit_records(run_copy(w / "work"), lambda r: {**r, "scenario": "server", "capacity_qps": capacity,
                                                        "server": {"target_qps": "auto", "valid": True}})

    def action() -> int:
        rows = [r for run_ in report.load_runs([run], report.load_prices(None)) for r in run_.rows]
        plans = answer.answer(rows, Question(demand_qps=50.0))
        bad = [p for p in plans if p.option is not None or p.devices is not None]
        if bad:
            print(f"florence2-bench: error: planned {bad[0].devices} devices", file=sys.stderr)
            return 1
        return cli.main(["report", str(run), "--demand-qps", "50", "-o", str(w / "work" / "r.html")])

    return action


def crash_cases() -> None:
    k = "crashes"
    for date in ("9999-12-31T23:00:00-05:00", "0001-01-01T00:00:00+05:00", "9999-99-99", "2026-13-01", "nan",
                 "x" * 500, "2026-01-01T25:00"):
        add(k, f"history add --date {date:.30}", lambda w, d=date: [
            "history", "add", str(run_copy(w / "work")), "--history", str(w / "work" / "h"), "--date", d],
            needle="date")
    pytest_cases = {"machine_info a string": {"machine_info": "m"}, "cpu a string": {"machine_info.cpu": "x86"},
                    "cpu a list": {"machine_info.cpu": [1]}, "commit_info a string": {"commit_info": "c"},
                    "commit_info.id a number": {"commit_info.id": 5}, "datetime a number": {"datetime": 5},
                    "benchmarks an object": {"benchmarks": {}}, "a benchmark a string": {"benchmarks": ["b"]},
                    "stats a string": {"benchmarks.0.stats": "s"},
                    "median NaN": {"benchmarks.0.stats.median": float("nan")},
                    "median a string": {"benchmarks.0.stats.median": "x"},
                    "median zero": {"benchmarks.0.stats.median": 0},
                    "data strings": {"benchmarks.0.stats.data": ["x"]},
                    "data negative": {"benchmarks.0.stats.data": [-1.0]},
                    "data infinite": {"benchmarks.0.stats.data": [float("inf")]},
                    "rounds a string": {"benchmarks.0.stats.rounds": "3"},
                    "extra_info a list": {"benchmarks.0.extra_info": [1]},
                    "cpu count a string": {"machine_info.cpu.count": "2"},
                    "florence2_bench env a list": {"machine_info.florence2_bench": [1]}}
    for label, changes in pytest_cases.items():
        add(k, f"pytest-benchmark {label}", lambda w, c=changes: [
            "history", "add", str(bench_json(w / "work", **c)), "--history", str(w / "work" / "h")],
            needle="pytest-benchmark")
    env_cases = {"git a string": {"git": "abc"}, "git a list": {"git": [1]}, "cpu.model a list": {"cpu": {"model": [1]}},
                 "cpu a string": {"cpu": "x"}, "sweep a list": {"sweep": [1]}, "gpu.names a string": {"gpu": {"names": "H"}},
                 "libraries a list": {"libraries": [1]}, "timestamp a number": {"timestamp_utc": 5},
                 "resumes a string": {"resumes": "r"}}
    for label, change in env_cases.items():
        for verb in ("history add", "report", "compare"):
            add(k, f"env.json {label}: {verb}", lambda w, c=change, v=verb: _env_case(w, c, v), exits=(0, 2))
    stored = {"samples_ms strings": lambda e: e["records"][0].update(samples_ms=["x"]),
              "date overflowing UTC": lambda e: e.update(date="9999-12-31T23:00:00-05:00"),
              "machine a list": lambda e: e.update(machine=[1]), "records an object": lambda e: e.update(records={}),
              "run_id a number": lambda e: e.update(run_id=5), "commit with a newline": lambda e: e.update(commit="a\nOK"),
              "env a list": lambda e: e.update(env=[1]), "latency a string table": lambda e: e["records"][0].update(
                  latency_ms="x")}
    for label, change in stored.items():
        add(k, f"stored history entry {label}: history steps", lambda w, c=change: (
            history_of(w / "work", 2), edit_newest_entry(w / "work" / "h", c),
            ["history", "steps", str(w / "work" / "h")])[-1], exits=(0,),
            check=lambda w, o, e: None if "not a history entry" in e else "the damaged entry was not named")
        add(k, f"stored history entry {label}: history report", lambda w, c=change: (
            history_of(w / "work", 2), edit_newest_entry(w / "work" / "h", c),
            ["history", "report", str(w / "work" / "h"), "-o", str(w / "work" / "t.html")])[-1], exits=(0,))
    for label, config in [("vision_config 5", {"vision_config": 5}), ("vision_config a string", {"vision_config": "x"}),
                          ("vision_config a list", {"vision_config": []}), ("text_config 5", {"text_config": 5})]:
        add(k, f"config.json {label}", lambda w, c=config: _model(w, c), needle="accepted")
    add(k, "full disk: report.html", lambda w: raises_usage(lambda: report.build_report(
        [run_copy(w / "work")], w / "work" / "run" / "report.html", writer=enospc)), needle="No space left")
    add(k, "full disk: results.jsonl append", lambda w: raises_usage(lambda: store.append(
        run_copy(w / "work"), store.records(BASELINE)[0], writer=enospc)),
        needle="No space left", check=unchanged("run/results.jsonl", BASELINE))
    add(k, "full disk: env.json", lambda w: raises_usage(lambda: paths.write_atomic(
        w / "work" / "env.json", b"{}", writer=enospc)), needle="No space left")
    add(k, "full disk: make-tiny-checkpoint", lambda w: raises_usage(lambda: _tiny_full(w)), needle="No space left",
        check=lambda w, o, e: "half checkpoint left" if (w / "work" / "ckpt").exists() else None)
    add(k, "full disk: datasets fetch", lambda w: raises_usage(lambda: (manifest(w), fetch.fetch(
        "d", cache_dir=w / "work" / "cache", log=lambda m: None, writer=enospc))), needle="No space left",
        check=lambda w, o, e: "a dataset folder was left" if (w / "work" / "cache" / "d").exists() else None)


def _tiny_full(w: Path) -> None:
    from bench.backends.transformers.checkpoints import make_tiny_checkpoint

    def save(model, processor, directory):
        (directory / "config.json").write_text("{}")
        raise ENOSPC

    make_tiny_checkpoint(w / "work" / "ckpt", save=save)


def _model(w: Path, config: dict) -> list[str]:
    model = shutil.copytree(S.tiny, w / "work" / "model")
    (model / "config.json").write_text(json.dumps({"model_type": "florence2", **config}))
    return ["run", "--sweep", str(sweep_toml(w / "work" / "s.toml")), "--model-path", str(model), "--out",
            str(w / "work" / "out")]


def _env_case(w: Path, change: dict, verb: str) -> list[str]:
    run = run_copy(w / "work")
    env = json.loads((run / store.ENV).read_text())
    (run / store.ENV).write_text(json.dumps({**env, **change}))
    return {"history add": ["history", "add", str(run), "--history", str(w / "work" / "h")],
            "report": ["report", str(run)], "compare": ["compare", str(run), str(run)]}[verb]


def silent_cases() -> None:
    k = "silent"

    def batch(w: Path) -> Callable[[], int]:
        def action() -> int:
            config = sweep.override(sweep.load_sweep("smoke"), batch_sizes="1,2", variants="base", tasks="caption")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                sweep.validate_scenarios(config)
            cells = [(c.batch_size, c.scenario) for c in sweep.expand(config)]
            ok = cells == [(1, "single-stream"), (2, "offline")] and caught
            return 0 if ok else 1

        return action

    add(k, "--batch-sizes 1,2 on the smoke sweep makes batch 2 offline, with a warning", batch, exits=(0,))
    add(k, "--scenarios single-stream --batch-sizes 4,8 is refused", lambda w: tiny_run(
        w / "work", "--scenarios", "single-stream", "--batch-sizes", "4,8"), needle="single-stream")
    for item in ("throughput=500%", "throughput=100%", "throughput=1.5", "latency=-5%", "accuracy.bogus=-1",
                 "accuracy.=-1", "accuracy=5", "latency_p50=nan%", "speed=5%"):
        add(k, f"--fail-on {item}", lambda w, i=item: (run_copy(w / "work"), [
            "compare", str(w / "work" / "run"), str(w / "work" / "run"), "--fail-on", i])[-1], needle="--fail-on")
    for label, text in [("cpu key misspelt", '[cpu]\nusd_per_vcpu_hr = 1\nusd_per_vcpu_hour = 1\nsource = "s"\n'),
                        ("gpu key misspelt", '[gpu]\n"H100" = {usd_per_hr = 1, usd_per_hour = 2, source = "s"}\n'),
                        ("energy key misspelt", '[cpu]\nusd_per_vcpu_hour = 1\nsource = "s"\n[energy]\n'
                                                'usd_per_kwh = 0.1\nsource = "s"\nusd_kwh = 1\n'),
                        ("unknown section", '[cpu]\nusd_per_vcpu_hour = 1\nsource = "s"\n[tpu]\nx = 1\n')]:
        add(k, f"price table {label}", lambda w, t=text: (run_copy(w / "work"), (w / "work" / "p.toml").write_text(t), [
            "report", str(w / "work" / "run"), "-o", str(w / "work" / "r.html"), "--prices",
            str(w / "work" / "p.toml")])[-1], needle="price table")
    for label, commit in [("newline", "abc\nOK: 0 regressed"), ("carriage return", "abc\rOK"), ("escape", "a\x1b[2Jb"),
                          ("tab", "a\tb"), ("space", "a b"), ("300 characters", "a" * 300), ("NUL", "a\0b")]:
        add(k, f"history add --commit with a {label}", lambda w, c=commit: [
            "history", "add", str(run_copy(w / "work")), "--history", str(w / "work" / "h"), "--commit", c],
            needle="bad --commit", check=lambda w, o, e: "an entry was written" if (w / "work" / "h").exists()
            and list((w / "work" / "h").glob("run-*")) else None)
    for label, rows in [("empty", ""), ("blank lines only", "\n\n  \n"), ("rows for other images only",
                                                                          '{"image_id": 999, "text": "a"}\n')]:
        add(k, f"score a predictions file: {label}", lambda w, r=rows: (
            (w / "work" / "p.jsonl").write_text(r), ["score", "--task", "caption", "--dataset", "synthetic-smoke:2",
                                                     "--predictions", str(w / "work" / "p.jsonl")])[-1],
            needle="no prediction row")
    for size in (10_001, 1_000_000, 50_000_000):
        add(k, f"score a caption of {size} characters", lambda w, n=size: (
            (w / "work" / "p.jsonl").write_text(json.dumps({"image_id": 1, "text": "a" * n}) + "\n"),
            ["score", "--task", "caption", "--dataset", "synthetic-smoke:2", "--predictions",
             str(w / "work" / "p.jsonl")])[-1], needle="at most 10000")
    add(k, "score an <OD> label of 1 MB", lambda w: (
        (w / "work" / "p.jsonl").write_text(json.dumps({"image_id": 1, "label": "a" * 1_000_000,
                                                        "bbox_xyxy": [1, 1, 5, 5]}) + "\n"),
        ["score", "--task", "od", "--dataset", "synthetic-smoke:2", "--predictions", str(w / "work" / "p.jsonl")])[-1],
        needle="at most 10000")


# ------------------------------------------------------------------------------------------ new surfaces


def strict_json(path: Path) -> str | None:
    """None when ``path`` is JSON without NaN or Infinity (what json.dumps(allow_nan=False) accepts)."""
    def refuse(constant: str):
        raise ValueError(f"{constant} in the JSON")

    try:
        data = json.loads(path.read_text(), parse_constant=refuse)
        json.dumps(data, allow_nan=False)
    except (OSError, ValueError) as exc:
        return f"{path.name}: {exc}"
    return None


def server_run(work: Path, change=lambda r: None) -> Path:
    """The finished tiny run as a server capacity search, every new server field present, then ``change``."""
    def edit(r: dict) -> dict:
        r = {**r, "scenario": "server", "capacity_qps": 5.0,
             "server": {"target_qps": "auto", "valid": True, "latency_bound_ms": 1000.0, "latency_percentile": 0.99,
                        "percentile_ms": 100.0, "percentile_ci_ms": [90.0, 110.0], "capacity_bracket": [5.0, 6.0],
                        "achieved_qps": 5.0, "early_stopping": {"percentile": 0.99, "met": True},
                        "curve": [{"target_qps": 5.0, "p99": 100.0, "valid": True}]},
             "flags": [{"code": "probe", "message": "a flag"}]}
        change(r)
        return r

    return edit_records(run_copy(work, "run", S.finished), edit)


def answer_argv(w: Path, *extra: str, answer: str = "a.json") -> list[str]:
    return ["report", str(w / "work" / "run"), "-o", str(w / "work" / "r.html"), "--answer",
            str(w / "work" / answer), *extra]


def answer_written(w: Path, out: str, err: str) -> str | None:
    return strict_json(w / "work" / "a.json")


def answer_cases() -> None:
    k = "answer"
    nan, inf = float("nan"), float("inf")
    add(k, "--answer a directory", lambda w: (server_run(w / "work"), (w / "work" / "a.json").mkdir(),
                                              answer_argv(w))[-1], needle="directory")
    add(k, "--answer a link outside", lambda w: (
        server_run(w / "work"), (w / "work" / "a.json").symlink_to(w / "victim" / "file.txt"), answer_argv(w))[-1],
        needle="symbolic link")
    add(k, "--answer a dangling link", lambda w: (
        server_run(w / "work"), (w / "work" / "a.json").symlink_to(w / "victim" / "absent.json"),
        answer_argv(w))[-1], needle="symbolic link")
    add(k, "--answer inside a missing folder is created", lambda w: (
        server_run(w / "work"), answer_argv(w, answer="new/deeper/a.json"))[-1], exits=(0,),
        check=lambda w, o, e: strict_json(w / "work" / "new" / "deeper" / "a.json"))
    add(k, "--answer whose parent is a file", lambda w: (
        server_run(w / "work"), (w / "work" / "f").write_text("x"), answer_argv(w, answer="f/a.json"))[-1],
        needle="is a file")
    add(k, "--answer on a full disk", lambda w: raises_usage(lambda: report.build_report(
        [server_run(w / "work")], w / "work" / "r.html", answer=w / "work" / "a.json", writer=enospc)),
        needle="No space left",
        check=lambda w, o, e: "an answer file was left" if (w / "work" / "a.json").exists() else None)
    for value in ("0", "-1", "inf", "nan", "-inf", "1e400", "1e308", "x"):  # 1e308: over BOUNDS' 1e6
        add(k, f"--demand-qps {value}", lambda w, v=value: (server_run(w / "work"), answer_argv(
            w, f"--demand-qps={v}"))[-1], needle="demand" if value != "x" else "")
        add(k, f"--latency-bound-ms {value} with --answer", lambda w, v=value: (server_run(w / "work"), answer_argv(
            w, f"--latency-bound-ms={v}"))[-1], needle="bound" if value != "x" else "")
    for value in ("1e-300", "5e-324", "10"):
        add(k, f"--demand-qps {value} answers in finite JSON", lambda w, v=value: (
            server_run(w / "work"), answer_argv(w, "--demand-qps", v))[-1], exits=(0,), check=answer_written)
    server_fields = {
        "capacity_bracket a string": {"capacity_bracket": "5-6"}, "capacity_bracket 3 long": {
            "capacity_bracket": [1, 2, 3]}, "capacity_bracket empty": {"capacity_bracket": []},
        "capacity_bracket NaN": {"capacity_bracket": [nan, nan]}, "capacity_bracket negative": {
            "capacity_bracket": [-5.0, -1.0]}, "capacity_bracket reversed": {"capacity_bracket": [6.0, 5.0]},
        "capacity_bracket strings": {"capacity_bracket": ["5", "6"]}, "capacity_bracket a dict": {
            "capacity_bracket": {"a": 1}}, "percentile_ci_ms reversed": {"percentile_ci_ms": [110.0, 90.0]},
        "percentile_ci_ms strings": {"percentile_ci_ms": ["a", "b"]}, "percentile_ci_ms NaN": {
            "percentile_ci_ms": [nan, inf]}, "percentile_ci_ms a number": {"percentile_ci_ms": 5},
        "latency_percentile 1.5": {"latency_percentile": 1.5}, "latency_percentile -1": {"latency_percentile": -1},
        "latency_percentile 0": {"latency_percentile": 0}, "latency_percentile NaN": {"latency_percentile": nan},
        "latency_percentile a string": {"latency_percentile": "p99"}, "latency_bound_ms NaN": {
            "latency_bound_ms": nan}, "percentile_ms infinite": {"percentile_ms": inf},
        "early_stopping a list": {"early_stopping": [1]}, "curve a string": {"curve": "x"},
        "curve NaN steps": {"curve": [{"target_qps": nan, "p99": nan}]}, "achieved_qps NaN": {"achieved_qps": nan},
        "valid a string": {"valid": "no"}, "target_qps NaN": {"target_qps": nan}}
    for label, change in server_fields.items():
        for bound in ((), ("--latency-bound-ms", "500")):
            add(k, f"server {label}{' with a bound' if bound else ''}", lambda w, c=change, b=bound: (
                server_run(w / "work", lambda r: r["server"].update(c)), answer_argv(w, "--demand-qps", "12", *b))[-1],
                exits=(0,), check=answer_written)
    records = {
        "flags a string": {"flags": "slow"}, "flags a dict": {"flags": {"code": "x"}},
        "flags entries strings": {"flags": ["x", 5, None]}, "flags a 1 MB message": {
            "flags": [{"code": "big", "message": "m" * 1_000_000}]},
        "flags HTML": {"flags": [{"code": "<script>alert(1)</script>", "message": "<img src=x onerror=alert(1)>"}]},
        "flags code a list": {"flags": [{"code": [1], "message": {"a": 1}}]},
        "capacity_qps NaN": {"capacity_qps": nan}, "capacity_qps a string": {"capacity_qps": "5"},
        "capacity_qps infinite": {"capacity_qps": inf}, "p99 NaN": {"latency_ms": {"p50": nan, "p99": nan}},
        "batch_size NaN": {"batch_size": nan}, "variant NaN": {"variant": nan}, "server a list": {"server": [1]},
        "samples_ms NaN": {"samples_ms": [nan, inf, -1.0]}}
    for label, change in records.items():
        add(k, f"record {label}", lambda w, c=change: (
            server_run(w / "work", lambda r: r.update(c)), answer_argv(w, "--demand-qps", "12"))[-1],
            exits=(0,), check=answer_written)
    add(k, "record flags HTML is escaped in the report", lambda w: (
        server_run(w / "work", lambda r: r.update(records["flags HTML"])), answer_argv(w))[-1], exits=(0,),
        check=lambda w, o, e: "unescaped <script>" if "<script>alert(1)" in (w / "work" / "r.html").read_text()
        else strict_json(w / "work" / "a.json"))


def loadgen_cases() -> None:
    k = "loadgen"
    for name in ("bogus", "MLPERF", "", "builtin,bogus", "../x", "mlperf;rm"):
        add(k, f"--load-generator {name!r}", lambda w, n=name: tiny_run(w / "work", "--load-generator", n),
            needle="load")
    add(k, "--load-generator mlperf with the package hidden: a skipped cell", lambda w: _hidden(w), exits=(0,),
        check=lambda w, o, e: None if _statuses(w / "work" / "out") == ["skipped"] else
        f"statuses {_statuses(w / 'work' / 'out')}, a skipped cell expected")
    for value in ("0", "1", "1.5", "-1", "nan", "inf", "x"):
        add(k, f"--latency-percentile {value}", lambda w, v=value: tiny_run(
            w / "work", "--scenarios", "server", "--server-qps", "auto", "--latency-bound-ms", "1000",
            "--latency-percentile", v), needle="latency_percentile" if value != "x" else "")
    add(k, "--latency-percentile without a server cell", lambda w: tiny_run(w / "work", "--latency-percentile", "0.9"),
        needle="server")
    for value in ("0", "-1", "x", "1.5", "1000000000", "99999999999999999999", ""):
        add(k, f"--threads {value!r}", lambda w, v=value: tiny_run(w / "work", "--threads", v), needle="threads")
    for label, text in [("prep_workers a string", 'prep_workers = "x"'), ("prep_workers 0", "prep_workers = 0"),
                        ("prep_workers true", "prep_workers = true"), ("max_requests 0", "max_requests = 0"),
                        ("max_requests a string", 'max_requests = "many"'),
                        ("max_duration_s inf", "max_duration_s = inf"), ("max_duration_s nan", "max_duration_s = nan"),
                        ("min_duration_s -1", "min_duration_s = -1"), ("confidence 1.0", "confidence = 1.0"),
                        ("confidence 0", "confidence = 0"), ("latency_percentile 1", "latency_percentile = 1"),
                        ("seed a string", 'seed = "s"'), ("max_queue_delay_ms inf", "max_queue_delay_ms = inf"),
                        ("unknown key", "bogus = 1"), ("qps a list", "qps = [1]"), ("server a string", None)]:
        add(k, f"TOML [server] {label}", lambda w, t=text: _server_toml(w, t), needle="server")
    add(k, "resume with records whose cell_id climbs out: logs stay in loadgen/<hex>", lambda w: _climbing_ids(w),
        exits=(0, 1), check=_loadgen_names)
    for kind in ("a link outside", "a file", "a cell's folder a link outside"):
        add(k, f"run directory whose loadgen/ is {kind}", lambda w, kd=kind: _loadgen_dir(w, kd), exits=(0, 2),
            check=_loadgen_names, needle="load generator log folder")


def _statuses(out: Path) -> list[str]:
    return [r.status for r in store.records(out)] if (out / store.RESULTS).exists() else []


def _hidden(w: Path) -> Callable[[], int]:
    from bench.scenarios import mlperf

    def action() -> int:
        saved = sys.modules.get(mlperf.MODULE, False)
        sys.modules[mlperf.MODULE] = None  # type: ignore[assignment]  # `import mlperf_loadgen` now fails
        try:
            return cli.main(tiny_run(w / "work", "--load-generator", "mlperf"))
        finally:
            if saved is False:
                sys.modules.pop(mlperf.MODULE, None)
            else:
                sys.modules[mlperf.MODULE] = saved

    return action


def _server_toml(w: Path, line: str | None) -> list[str]:
    """A server sweep whose [server] table holds ``line`` (None: ``server`` a string, not a table)."""
    path = sweep_toml(w / "work" / "s.toml", scenarios=["server"])
    head = 'name = "probe"\n'
    text = path.read_text()
    if line is None:
        text = text.replace(head, head + 'server = "fast"\n', 1)
    else:
        qps = "" if line.startswith("qps") else 'qps = "auto"\n'
        text += f"[server]\n{qps}latency_bound_ms = 1000.0\n{line}\n"
    path.write_text(text)
    return ["run", "--sweep", str(path), "--out", str(w / "work" / "out"), "--quiet"]


def _loadgen_names(w: Path, out: str, err: str) -> str | None:
    """Every folder under any run's loadgen/ is a 16-hex cell id, and nothing is outside work/."""
    for folder in (w / "work").rglob("loadgen"):
        if folder.is_dir() and not folder.is_symlink():
            for child in folder.iterdir():
                if not re.fullmatch(r"[0-9a-f]{16}", child.name):
                    return f"a LoadGen log folder named {child.name!r}"
    return None


def _climbing_ids(w: Path) -> Callable[[], int]:
    run = resumed(w / "work")
    edit_records(run, lambda r: {**r, "cell_id": "../../../victim/x", "status": "error"})
    return ["run", "--sweep", str(S.sweep_file), "--out", str(run), "--resume", "--extend", "--quiet",
            "--load-generator", "mlperf"]


def _loadgen_dir(w: Path, kind: str) -> list[str]:
    out = w / "work" / "out"
    out.mkdir(parents=True)
    if kind == "a file":
        (out / "loadgen").write_text("x")
    elif kind.startswith("a cell's"):
        (out / "loadgen").mkdir()
        for cell in sweep.expand(sweep.override(sweep.load_sweep(str(S.sweep_file)), load_generator="mlperf")):
            (out / "loadgen" / cell.cell_id).symlink_to(w / "victim")
    else:
        (out / "loadgen").symlink_to(w / "victim")
    return tiny_run(w / "work", "--load-generator", "mlperf")


STORED = {"per_token_ms a list": lambda r: r.update(per_token_ms=[1, 2]),
          "per_token_ms NaN": lambda r: r.update(per_token_ms={"p50": float("nan"), "tokens_per_s": "x"}),
          "loadgen a string": lambda r: r.update(loadgen="x"), "loadgen a list": lambda r: r.update(loadgen=[1]),
          "flags a dict": lambda r: r.update(flags={"code": "x"}), "flags strings": lambda r: r.update(flags=["x"]),
          "settings.threads x": lambda r: r["settings"].update(threads="x"),
          "settings a list": lambda r: r.update(settings=[1]), "timing.load_s x": lambda r: r["timing"].update(load_s="x"),
          "timing a string": lambda r: r.update(timing="t"),
          "server.early_stopping a list": lambda r: r.update(server={"early_stopping": [1], "valid": "x"}),
          "load_generator a number": lambda r: r.update(load_generator=5),
          "threads a dict": lambda r: r.update(threads={"a": 1})}


def stored_cases() -> None:
    k = "stored"
    for label, change in STORED.items():
        for verb in ("report", "compare", "export", "history add", "history check", "history steps",
                     "history report"):
            add(k, f"record {label}: {verb}", lambda w, c=change, v=verb: _stored(w, c, v), exits=(0, 1, 2))


def _stored(w: Path, change, verb: str) -> list[str] | Callable[[], int]:
    run = edit_records(run_copy(w / "work", "run", S.finished), lambda r: (change(r), r)[1])
    base = run_copy(w / "work", "base", S.finished)
    h = str(w / "work" / "h")
    if verb.startswith("history ") and verb != "history add":
        def action() -> int:
            with quiet():
                cli.main(["history", "add", str(base), "--history", h, "--date", "2026-11-01T00:00:00Z"])
                cli.main(["history", "add", str(run), "--history", h])
            extra = ["-o", str(w / "work" / "t.html")] if verb == "history report" else []
            return cli.main(["history", verb.split()[1], h, *extra])

        return action
    return {"report": ["report", str(run), "-o", str(w / "work" / "r.html")],
            "compare": ["compare", str(base), str(run)], "export": ["export", str(run), str(w / "work" / "x.csv")],
            "history add": ["history", "add", str(run), "--history", h]}[verb]


def host_load_cases() -> None:
    k = "host_load"
    shapes = {"a string": "busy", "a list of strings": ["a", "b"], "negative cores": {"start": [1.0, 1.0, 1.0],
                                                                                        "cores": -4},
              "start strings": {"start": ["x"], "cores": 2}, "start NaN": {"start": [float("nan")], "cores": 2},
              "cores a string": {"start": [9.0], "end": "x", "cores": "2"}, "end a dict": {"start": [1.0],
                                                                                          "end": {"a": 1}, "cores": 0},
              "start a bool": {"start": [True], "cores": 1}}
    for label, value in shapes.items():
        for verb in ("report", "compare", "history add", "resume"):
            add(k, f"env.json host_load {label}: {verb}", lambda w, v=value, vb=verb: _host_load(w, v, vb),
                exits=(0, 2))


def _host_load(w: Path, value, verb: str) -> list[str]:
    run = run_copy(w / "work", "run", S.finished)
    env = json.loads((run / store.ENV).read_text())
    env["host_load"] = value
    if verb == "resume":
        env["resumes"] = [{"host_load": value}]
    (run / store.ENV).write_text(json.dumps(env))
    return {"report": ["report", str(run)], "compare": ["compare", str(run), str(run)],
            "history add": ["history", "add", str(run), "--history", str(w / "work" / "h")],
            "resume": ["run", "--sweep", str(S.sweep_file), "--out", str(run), "--resume", "--quiet"]}[verb]


# ------------------------------------------------------------------------------------------ judging


def tree(folder: Path, skip: Path) -> dict[str, str]:
    """Every file and link under ``folder`` except under ``skip``, with a digest of its content."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path == skip or skip in path.parents:
            continue
        if path.is_symlink():
            out[str(path)] = "link:" + os.readlink(path)
        elif path.is_file():
            out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            out[str(path)] = "dir"
    return out


ERROR_LINE = re.compile(r"florence2-bench( [a-z-]+)*: error: ")  # ours, or argparse's naming the subcommand


def judge(case: Case, sandbox: Path) -> tuple[bool, int, str]:
    from PIL import Image

    work, victim = sandbox / "work", sandbox / "victim"
    work.mkdir(parents=True)
    victim.mkdir()
    (victim / "file.txt").write_bytes(b"precious\nno newline")
    (victim / "empty").write_bytes(b"")
    Image.new("RGB", (64, 48), (200, 10, 10)).save(victim / "secret.png")
    before = tree(sandbox.parent, work)  # the whole probe root outside this case's work folder
    out, err = io.StringIO(), io.StringIO()
    code: int
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("default")
        try:
            built = case.build(sandbox)
            code = built() if callable(built) else cli.main(built)
        except Exception as exc:  # a crash of the probe's own setup or of an in-process action
            code, err_text = 3, f"{type(exc).__name__}: {exc}"
            print(err_text, file=sys.stderr)
    while HELD:
        HELD.pop().__exit__(None, None, None)
    os.environ.pop(fetch.MANIFEST_ENV, None)
    stdout, stderr = out.getvalue(), err.getvalue()
    problems = []
    if code not in case.exits:
        problems.append(f"exit {code}, expected {'/'.join(map(str, case.exits))}")
    if "Traceback" in stderr or "internal error" in stderr:
        problems.append("a crash: " + " ".join(stderr.split())[-200:])
    lines = stderr.strip().splitlines()
    if code == 2:
        if not lines or not ERROR_LINE.match(lines[-1]):
            problems.append("exit 2 without a one-line error")
        elif case.needle and case.needle not in lines[-1]:
            problems.append(f"error line lacks {case.needle!r}: {lines[-1][:160]}")
    after = tree(sandbox.parent, work)
    changed = sorted(set(before.items()) ^ set(after.items()))
    if changed:
        problems.append(f"written outside its folder: {changed[0][0]}")
    temps = [p for p in sandbox.rglob("*.tmp")]
    if temps:
        problems.append(f"a temporary file left: {temps[0]}")
    if case.check and not problems:
        problem = case.check(sandbox, stdout, stderr)
        if problem:
            problems.append(problem)
    shown = lines[-1][:140] if lines else ""
    return not problems, code, "; ".join(problems) or shown


def setup(root: Path) -> Shared:
    from bench.backends.transformers.checkpoints import make_tiny_checkpoint

    cli._quiet_libraries()
    with quiet():
        tiny = make_tiny_checkpoint(root / "tiny")
    global S
    S = Shared(tiny, root / "finished", root / "s.toml")
    sweep_toml(S.sweep_file)
    with quiet():
        code = cli.main(["run", "--sweep", str(S.sweep_file), "--out", str(S.finished), "--quiet"])
    if code != 0:
        raise SystemExit(f"probe setup: the tiny run failed (exit {code})")
    return S


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--keep", help="a folder to keep the sandboxes in (default: a temporary one, removed)")
    p.add_argument("--only", default="", help="run only the cases whose class or name contains this")
    args = p.parse_args(argv)
    root = Path(args.keep or tempfile.mkdtemp(prefix="probe-hostile-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        setup(root / "shared")
        for make in (paths_cases, doubled_cases, verdict_cases, crash_cases, silent_cases, answer_cases,
                     loadgen_cases, stored_cases, host_load_cases):
            make()
        cases = [c for c in S.cases if args.only in f"{c.klass} {c.name}"]
        counts: Counter = Counter()
        failed = 0
        for n, case in enumerate(cases):
            ok, code, note = judge(case, root / "cases" / f"{n:03d}")
            counts[(case.klass, ok)] += 1
            failed += not ok
            print(f"{'ok  ' if ok else 'FAIL'}  {case.klass:9s} {case.name}: exit {code}; {note}", flush=True)
        print(f"\n{len(cases)} cases, {len(cases) - failed} ok, {failed} failed")
        for klass in dict.fromkeys(c.klass for c in cases):
            print(f"  {klass}: {counts[(klass, True)]} ok, {counts[(klass, False)]} failed")
        return 1 if failed else 0
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
