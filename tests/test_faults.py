"""Fault injection on the tiny checkpoint: kills at random points, writes torn at every byte, concurrent
runs, hostile records, and bad inputs. A run directory must end with every cell exactly once; a bad
input must end in one stderr line naming it, and exit code 2; a bug in exit code 3, never 1."""

from __future__ import annotations

import base64
import io
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import warnings
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hostile import bench_env, bench_json, bench_process, edit_records, hostile_records
from sweep_helpers import write_sweep

from bench import cli
from bench.core import host
from bench.regression import compare, comparison
from bench.report import answer, examples, report
from bench.report.question import Question
from bench.results import Example, store
from bench.run import sweep

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "reports" / "baselines" / "smoke-cpu"


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines() if path.exists() else []


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def _ids(run: Path) -> Counter:
    return Counter(r.cell_id for r in store.records(run))


@pytest.fixture(scope="module")
def sweep_file(tiny_checkpoint, tmp_path_factory) -> Path:
    """Two cells (<CAPTION>, <OD>), one model load."""
    return write_sweep(tmp_path_factory.mktemp("sweep") / "s.toml", tiny_checkpoint, tasks=["<CAPTION>", "<OD>"])


@pytest.fixture(scope="module")
def finished_run(sweep_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    assert cli.main(["run", "--sweep", str(sweep_file), "--out", str(out), "--quiet"]) == 0
    return out


# ------------------------------------------------------------------------------------- kills


def test_kills_at_random_points_then_resume_record_every_cell_exactly_once(tiny_checkpoint, tmp_path):
    sweep_file = write_sweep(tmp_path / "s.toml", tiny_checkpoint, tasks=["<CAPTION>", "<OD>", "<OCR>"],
                             batch_sizes=[1, 2])
    expected = {c.cell_id for c in sweep.expand(sweep.load_sweep(str(sweep_file)))}
    assert len(expected) == 6
    out, results = tmp_path / "run", tmp_path / "run" / store.RESULTS
    rng = random.Random(14)  # the kill points are random but reproducible
    kills = 0
    for attempt, where in enumerate(("between cells", "mid-cell")):
        before = len(_lines(results))
        proc = bench_process("run", "--sweep", sweep_file, "--out", out, "--quiet", *(["--resume"] if attempt else []),
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            target, deadline = before + rng.randint(1, 2), time.monotonic() + 240
            while len(_lines(results)) < target and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            if where == "mid-cell":
                time.sleep(rng.uniform(0.05, 0.5))
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                kills += 1
        finally:
            proc.kill()
            proc.wait()
    assert kills >= 1, "every run ended before it could be killed"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a torn tail is possible (and repaired)
        before = [r.to_dict() for r in store.records(out)]  # the JSON: one is written back torn
    assert 1 <= len(before) < len(expected)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        store.repair_tail(results)  # should a kill have torn a write itself
    with results.open("a") as fh:  # a write torn by a crash: part of a line, no newline
        fh.write(json.dumps(before[0])[:40])
    with pytest.warns(UserWarning, match="torn line"):
        assert cli.main(["run", "--sweep", str(sweep_file), "--out", str(out), "--resume", "--quiet"]) == 0
    after = [r.to_dict() for r in store.records(out)]
    counts = Counter(r["cell_id"] for r in after)
    assert set(counts) == expected and set(counts.values()) == {1}
    assert {r["status"] for r in after} == {"ok"}
    assert after[: len(before)] == before  # what the killed runs finished was kept, not re-run


def test_a_write_torn_at_any_byte_keeps_every_complete_record(finished_run, tmp_path, monkeypatch):
    """Every prefix of the last record: --resume's notion of "done" and the tail repair agree, so the cell
    ends exactly once (kept when its JSON was complete, even without the newline; re-run otherwise)."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)  # thousands of rewrites; durability is not tested here
    lines = (finished_run / store.RESULTS).read_bytes().splitlines(keepends=True)
    head, last = b"".join(lines[:-1]), lines[-1]
    ids = [json.loads(line)["cell_id"] for line in lines]
    rerun = store.Record(**json.loads(last))
    with tempfile.TemporaryDirectory(dir=_memory_fs() or tmp_path) as scratch:
        _every_cut(Path(scratch), head, last, ids, rerun)


def _memory_fs() -> str | None:
    """A RAM-backed folder where there is one: these thousands of small writes take ~10 us there, ~3 ms on disk."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def _every_cut(run: Path, head: bytes, last: bytes, ids: list[str], rerun: store.Record) -> None:
    results = run / store.RESULTS
    for cut in range(len(last) + 1):
        results.write_bytes(head + last[:cut])
        complete = cut >= len(last) - 1  # the JSON is whole; at most the newline is missing
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the torn line is reported; here it is expected
            assert (ids[-1] in store.finished_cells(run)) is complete, cut
            if not complete:
                store.append(run, rerun)  # what --resume does with an unfinished cell
            store.repair_tail(results)  # what a resume does first
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # nothing unreadable is left
            assert [r.cell_id for r in store.records(run)] == ids, cut
        if complete:
            assert results.read_bytes() == head + last


@pytest.mark.parametrize("cut", ["torn", "no newline"])
def test_resume_after_a_torn_last_write(finished_run, sweep_file, tmp_path, cut):
    run = shutil.copytree(finished_run, tmp_path / "run")
    results = run / store.RESULTS
    original = results.read_bytes()
    lines = original.splitlines(keepends=True)
    last = lines[-1]
    results.write_bytes(b"".join(lines[:-1]) + last[: len(last) // 2 if cut == "torn" else len(last) - 1])
    args = ["run", "--sweep", str(sweep_file), "--out", str(run), "--resume", "--quiet"]
    if cut == "torn":
        with pytest.warns(UserWarning, match="torn line"):
            assert cli.main(args) == 0
    else:
        assert cli.main(args) == 0
        assert results.read_bytes() == original  # the finished cell was kept, not lost and not re-run
    assert set(_ids(run).values()) == {1} and len(_ids(run)) == len(lines)


# -------------------------------------------------------------------------------- concurrency


def test_two_runs_into_one_out_run_each_cell_once(sweep_file, tmp_path):
    out = tmp_path / "run"
    procs = [bench_process("run", "--sweep", sweep_file, "--out", out, "--quiet", stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE, text=True) for _ in range(2)]
    ends = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert sorted(code for code, _ in ends) == [0, 2]
    [loser] = [err for code, err in ends if code == 2]
    assert "in use by another run (pid" in loser or "already holds results" in loser
    assert len(loser.strip().splitlines()) == 1
    assert set(_ids(out).values()) == {1} and len(_ids(out)) == 2
    assert (out / store.REPORT).is_file() and not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))


def test_a_locked_out_is_refused_naming_the_holder_and_a_killed_holder_frees_it(sweep_file, tmp_path, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from bench.results import store; "
         "lock = store.run_lock(Path(sys.argv[1])); lock.__enter__(); print('locked', flush=True); time.sleep(600)",
         str(out)], env=bench_env(), cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        args = ["run", "--sweep", str(sweep_file), "--out", str(out), "--quiet"]
        assert cli.main(args) == 2
        line = _one_line(capsys)
        assert f"in use by another run (pid {holder.pid} " in line and "accepted" in line
        assert not (out / store.RESULTS).exists()
        holder.kill()  # SIGKILL: the kernel drops the lock with the process
        holder.wait()
        assert cli.main(args) == 0
    finally:
        holder.kill()
        holder.wait()
    assert len(_ids(out)) == 2


# ------------------------------------------------------------------------ the cases


def _other_device() -> str:
    import torch

    return "mps" if torch.cuda.is_available() else "cuda"


def test_repeated_axis_values_make_one_cell_and_resume_appends_nothing(tiny_checkpoint, tmp_path, capsys):
    device = _other_device()  # not available here: its cell is a skipped record
    sweep_file = write_sweep(tmp_path / "s.toml", tiny_checkpoint, tasks=["<CAPTION>", "caption"],
                             devices=["cpu", device, "cpu"])
    out = tmp_path / "run"
    args = ["run", "--sweep", str(sweep_file), "--out", str(out), "--quiet"]
    with pytest.warns(UserWarning, match="repeated") as caught:
        assert cli.main(args) == 0
    assert {str(w.message).split(" ignored")[0] for w in caught if w.category is not host.BusyHostWarning} == {
        "repeated tasks value 'caption'", "repeated devices value 'cpu'"}  # a busy machine may add its own
    first = (out / store.RESULTS).read_bytes()
    assert sorted(r.status for r in store.records(out)) == ["ok", "skipped"]
    for _ in range(2):  # neither the ok nor the skipped cell is appended again
        with pytest.warns(UserWarning, match="repeated"):
            assert cli.main([*args, "--resume"]) == 0
        assert (out / store.RESULTS).read_bytes() == first
    assert "resumed: 2 cell(s)" in capsys.readouterr().out


def _png(path: Path, width: int, height: int) -> Path:
    """A PNG whose header declares width x height (the pixels are not valid: only the header is read)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) +
                     chunk(b"IEND", b""))
    return path


def _coco(tmp: Path, images: list[dict] | None = None, annotations: list[dict] | None = None) -> str:
    """A boxes-only COCO file over two real 64x48 images; returns its coco-json dataset name."""
    from PIL import Image

    for i in (1, 2):
        Image.new("RGB", (64, 48), (40 * i, 90, 200)).save(tmp / f"{i}.png")
    doc = {
        "images": images or [{"id": i, "file_name": f"{i}.png", "width": 64, "height": 48} for i in (1, 2)],
        "annotations": annotations or [{"id": i, "image_id": i, "category_id": 1, "bbox": [4, 4, 30, 20]}
                                       for i in (1, 2)],
        "categories": [{"id": 1, "name": "box"}],
    }
    (tmp / "boxes.json").write_text(json.dumps(doc))
    return f"coco-json:{tmp / 'boxes.json'}"


def test_a_cell_without_usable_data_is_skipped_and_the_sweep_goes_on(sweep_file, tmp_path):
    out = tmp_path / "run"
    args = ["run", "--sweep", str(sweep_file), "--dataset", _coco(tmp_path), "--tasks", "caption,od,ocr",
            "--out", str(out), "--quiet"]
    assert cli.main(args) == 0
    records = {r.task: r for r in store.records(out)}
    assert records["<OD>"].status == "ok"
    for task in ("<CAPTION>", "<OCR>"):
        assert records[task].status == "skipped"
        assert f"no image usable for {task}" in records[task].error
    assert (out / store.REPORT).is_file()


def test_resume_refuses_another_sweep_unless_extending(finished_run, tiny_checkpoint, tmp_path, capsys):
    run = shutil.copytree(finished_run, tmp_path / "run")
    env, results = (run / store.ENV).read_bytes(), (run / store.RESULTS).read_bytes()
    wider = write_sweep(tmp_path / "wider.toml", tiny_checkpoint, tasks=["<CAPTION>", "<OD>", "<OCR>"])
    args = ["run", "--sweep", str(wider), "--out", str(run), "--resume", "--quiet"]
    assert cli.main(args) == 2
    line = _one_line(capsys)
    assert "different sweep: tasks" in line and '"<OCR>"' in line and "--extend" in line
    assert (run / store.ENV).read_bytes() == env and (run / store.RESULTS).read_bytes() == results
    assert cli.main([*args, "--extend"]) == 0
    records = store.records(run)
    assert [r.task for r in records] == ["<CAPTION>", "<OD>", "<OCR>"]  # only the new cell ran
    recorded = store.read_env(run)
    assert recorded["sweep"]["tasks"] == ["<CAPTION>", "<OD>", "<OCR>"]
    assert recorded["resumes"][-1]["previous_sweep"]["tasks"] == ["<CAPTION>", "<OD>"]
    assert cli.main(args) == 0  # the extended sweep is now the recorded one


def test_unreadable_lines_are_skipped_with_a_count_by_report_compare_and_export(finished_run, tmp_path, capsys):
    run = shutil.copytree(finished_run, tmp_path / "run")
    first, second = (run / store.RESULTS).read_bytes().splitlines(keepends=True)
    junk = [b"[1, 2]\n", b'"a string"\n', b"\xff\xfe not utf-8\n", b'{"cell_id": 5, "status": "ok"}\n',
            b'{"cell_id": "x", "status": "ok", "latency_ms": [1]}\n']
    (run / store.RESULTS).write_bytes(first + b"".join(junk) + second)
    for args in (["report", str(run)], ["compare", str(run), str(run)],
                 ["export", str(run), str(tmp_path / "x.csv")]):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert cli.main(args) == 0, args
        warned = {str(w.message) for w in caught if "unreadable" in str(w.message)}
        assert len(warned) == 1 and "skipped 5 unreadable line(s) (line 2, 3, 4, 5, 6)" in warned.pop(), args
    assert "internal error" not in capsys.readouterr().err
    assert len((tmp_path / "x.csv").read_text().splitlines()) == 3  # header + the two records
    for damaged in (b"[1, 2]", b"\xff\xfe", b'{"cpu": '):  # env.json: a list, not UTF-8, torn
        (run / store.ENV).write_bytes(damaged)
        with pytest.warns(UserWarning, match="env.json: ignored"):
            assert cli.main(["compare", str(run), str(run)]) == 0
            assert cli.main(["report", str(run)]) == 0
    assert "internal error" not in capsys.readouterr().err


def test_a_crash_is_exit_3_with_a_traceback_file_never_1(finished_run, monkeypatch, capsys):
    def bug(*args, **kwargs):
        raise ZeroDivisionError("a bug in compare")

    monkeypatch.setattr(compare, "compare_dirs", bug)
    assert cli.main(["compare", str(finished_run), str(finished_run)]) == 3  # 1 would read as "regression"
    line = _one_line(capsys)
    assert line.startswith("florence2-bench: internal error: ZeroDivisionError: a bug in compare; full traceback in ")
    path = Path(line.rsplit(" ", 1)[1])
    try:
        text = path.read_text()
        assert "Traceback" in text and "compare_dirs" in text and "ZeroDivisionError" in text
    finally:
        path.unlink()


def test_report_never_allocates_the_canvas_a_record_declares(tmp_path):
    example = {"width": 60000, "height": 60000, "image_file": "examples/missing.png",
               "answer": {"bboxes": [[10, 10, 1e300, 50000]], "labels": ["x"]}}
    started = time.perf_counter()
    uri, note = examples._draw_example(tmp_path, Example.from_dict(example))
    assert time.perf_counter() - started < 5
    from PIL import Image

    img = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert img.size == (examples.THUMB_WIDTH, examples.THUMB_WIDTH) and "blank canvas" in note
    for width, height in ((1e-300, 5), (-5, 5), (float("inf"), 5), (10**12, 10**12), ("60000", 1)):
        assert examples._draw_example(tmp_path, Example.from_dict({"width": width, "height": height}))[0] is None


def test_schema_2_server_records_are_well_formed():
    """The store's shape checks accept what the server scenario writes (nested run settings, the curve)."""
    step = {"target_qps": 2.0, "achieved_qps": 1.9, "p50": 80.0, "p90": 95.0, "p99": 120.0, "n_requests": 40,
            "batch_size_mean": 1.4, "valid": True, "invalid_reason": None}
    record = {"cell_id": "s", "status": "ok", "scenario": "server", "capacity_qps": 2.0,
              "timing": {"clock": "CpuClock", "server_run": {"min_duration_s": 10.0, "min_requests": 8, "seed": 0}},
              "server": {"target_qps": 2.0, "valid": True, "curve": [step, step]}}
    assert store.parse_line(json.dumps(record)) == record
    record["server"]["curve"] = [[step]]
    assert store.parse_line(json.dumps(record)) is None


def _unescaped_pipes(line: str) -> int:
    return sum(1 for i, ch in enumerate(line) if ch == "|" and (i == 0 or line[i - 1] != "\\"))


def test_markdown_labels_cannot_break_out_of_their_code_span_or_row(finished_run, tmp_path):
    hostile = tmp_path / "hostile"
    shutil.copytree(finished_run, hostile)
    records = [json.loads(line) for line in (hostile / store.RESULTS).read_text().splitlines()]
    records[0]["variant"] = "ba`se` | **x**\n<script>"
    (hostile / store.RESULTS).write_text("".join(json.dumps(r) + "\n" for r in records))
    md = compare.compare_dirs(hostile, hostile).to_markdown()
    assert "``ba`se` \\| **x** <script> <CAPTION> fp32 bs1 cpu single-stream``" in md
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(table) > 2 and len({_unescaped_pipes(line) for line in table}) == 1
    assert comparison._md_code("`x`") == "`` `x` ``" and comparison._md("a_b*c") == "a\\_b\\*c"


@pytest.mark.parametrize("seed", [1, 2])
def test_hostile_record_values_never_crash_report_or_compare(seed, tmp_path, capsys):
    run = tmp_path / "hostile"
    run.mkdir()
    records = hostile_records(seed, BASELINE)
    (run / store.RESULTS).write_text("".join(json.dumps(r) + "\n" for r in records))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert len(store.records(run)) == len(records)  # all pass the store's checks: the report sees them
        warnings.simplefilter("ignore")
        assert cli.main(["report", str(run)]) == 0
        assert cli.main(["compare", str(run), str(run), "--markdown", str(tmp_path / "c.md")]) == 0
    assert "internal error" not in capsys.readouterr().err


# ------------------------------------------------------------------------------- bad inputs


def _edited(tmp: Path, tiny: Path, old: str, new: str) -> list[str]:
    """A run of the tiny sweep file with one line of it replaced."""
    path = write_sweep(tmp / "edited.toml", tiny)
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return ["run", "--sweep", str(path), "--out", str(tmp / "run")]


def _tiny_run(tmp: Path, tiny: Path, *args: str) -> list[str]:
    return ["run", "--sweep", str(write_sweep(tmp / "s.toml", tiny)), "--out", str(tmp / "run"), "--quiet", *args]


def _file(tmp: Path, name: str = "afile", data: bytes = b"x") -> Path:
    (tmp / name).write_bytes(data)
    return tmp / name


def _read_only_out(tmp: Path, tiny: Path) -> list[str]:
    if os.geteuid() == 0:  # root writes through permissions: a kernel file system refuses it
        if not Path("/sys").is_dir():
            pytest.skip("no read-only place for root here")
        place = Path("/sys/florence2-bench-test-out")
    else:
        (tmp / "ro").mkdir()
        (tmp / "ro").chmod(0o500)
        place = tmp / "ro" / "out"
    return ["run", "--sweep", str(write_sweep(tmp / "s.toml", tiny)), "--out", str(place)]


def _model(tmp: Path, tiny: Path, config: bytes) -> list[str]:
    model = shutil.copytree(tiny, tmp / "model")
    (model / "config.json").write_bytes(config)
    path = write_sweep(tmp / "s.toml", model)
    return ["run", "--sweep", str(path), "--out", str(tmp / "run")]


def _coco_run(tmp: Path, tiny: Path, **doc) -> list[str]:
    return _tiny_run(tmp, tiny, "--dataset", _coco(tmp, **doc))


def _bomb_run(tmp: Path, tiny: Path) -> list[str]:
    _png(tmp / "huge.png", 20000, 20000)
    images = [{"id": 1, "file_name": "huge.png", "width": 20000, "height": 20000}]
    return _coco_run(tmp, tiny, images=images, annotations=[{"id": 1, "image_id": 1, "bbox": [0, 0, 5, 5]}])


def _other_sweep_resume(tmp: Path, tiny: Path, finished: Path) -> list[str]:
    run = shutil.copytree(finished, tmp / "resumed")
    other = write_sweep(tmp / "other.toml", tiny, num_beams=[2])
    return ["run", "--sweep", str(other), "--out", str(run), "--resume"]


def _unreachable_ray(tmp: Path, tiny: Path) -> list[str]:
    pytest.importorskip("ray", reason="the optional ray extra is not installed")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return _tiny_run(tmp, tiny, "--executor", "ray", "--ray-address", f"127.0.0.1:{port}")


def _prices(tmp: Path, finished: Path, data: bytes) -> list[str]:
    return ["report", str(finished), "-o", str(tmp / "r.html"), "--prices", str(_file(tmp, "p.toml", data))]


def _predictions(tmp: Path, rows: str) -> list[str]:
    return ["score", "--task", "od", "--dataset", "synthetic-smoke:2", "--predictions", str(_file(tmp, "p.jsonl",
                                                                                                  rows.encode()))]


def _corrupt_ready(tmp: Path) -> list[str]:
    (tmp / "cache" / "coco-val2017").mkdir(parents=True)
    (tmp / "cache" / "coco-val2017" / "READY").write_text('{"members": ')
    return ["datasets", "verify", "coco-val2017", "--cache-dir", str(tmp / "cache")]


# (case, argv builder taking (tmp, tiny checkpoint, finished run), what the one line must contain)
BAD_INPUTS = {
    "out is a file": (lambda t, k, f: _tiny_run(t, k, "--out", str(_file(t))), "is a file, not a directory"),
    "out under a file": (lambda t, k, f: _tiny_run(t, k, "--out", str(_file(t) / "run")),
                         "a part of its path is a file"),
    "out in a read-only place": (lambda t, k, f: _read_only_out(t, k), "florence2-bench-test-out"),
    "toml list axis as a scalar": (lambda t, k, f: _edited(t, k, "batch_sizes = [1]", "batch_sizes = 1"),
                                   "bad batch_sizes = 1; accepted: a list of integers"),
    "toml limit as a string": (lambda t, k, f: _edited(t, k, "limit = 2", 'limit = "2"'),
                               "bad limit = '2'; accepted: an integer"),
    "toml not utf-8": (lambda t, k, f: ["run", "--sweep", str(_file(t, "s.toml", b'name = "\xff"\n'))],
                       "is not UTF-8 text"),
    "toml booleans as strings": (lambda t, k, f: _edited(t, k, "limit = 2", 'limit = 2\nchannels_last = ["yes"]'),
                                 "bad channels_last = [\"yes\"]; accepted: a list of booleans"),
    "toml compile mode": (lambda t, k, f: _edited(t, k, "limit = 2", 'limit = 2\ncompile = ["yes"]'),
                          "unknown compile 'yes'; accepted: false, true, graphs"),
    "toml repetition value type": (lambda t, k, f: _edited(t, k, "warmup = 0", 'warmup = "1"'),
                                   "[repetition]: bad warmup = '1'; accepted: an integer"),
    "toml nan": (lambda t, k, f: _edited(t, k, "energy_idle_s = 0.0", "energy_idle_s = nan"),
                 "bad energy_idle_s = NaN; accepted: a finite number"),
    "toml empty task list": (lambda t, k, f: _edited(t, k, 'tasks = ["<CAPTION>"]', "tasks = []"),
                             "tasks list is empty"),
    "sweep path is a directory": (lambda t, k, f: ["run", "--sweep", str(_dir(t, "d.toml"))], "is a directory"),
    "max-new-tokens negative": (lambda t, k, f: _tiny_run(t, k, "--max-new-tokens", "-5"), "bad max_new_tokens -5"),
    "max-new-tokens zero": (lambda t, k, f: _tiny_run(t, k, "--max-new-tokens", "0"), "bad max_new_tokens 0"),
    "limit not an integer": (lambda t, k, f: ["run", "--limit", "abc"], "invalid int value: 'abc'"),
    "unknown flag": (lambda t, k, f: ["run", "--bogus"], "unrecognized arguments: --bogus"),
    "unknown executor": (lambda t, k, f: _tiny_run(t, k, "--executor", "dask"), "unknown executor 'dask'"),
    "extend without resume": (lambda t, k, f: _tiny_run(t, k, "--extend"), "accepted: --resume --extend"),
    "coco image without size": (lambda t, k, f: _coco_run(t, k, images=[{"id": 1, "file_name": "1.png"}]),
                                "has width None and height None"),
    "coco non-numeric bbox": (lambda t, k, f: _coco_run(t, k, annotations=[{"id": 7, "image_id": 1,
                                                                             "bbox": ["a", 1, 2, 3]}]),
                              "annotation id 7 has bbox"),
    "coco box with negative width": (lambda t, k, f: _coco_run(t, k, annotations=[{"id": 8, "image_id": 1,
                                                                                    "bbox": [30, 4, -20, 5]}]),
                                     "width and height >= 0"),
    "declared 20000x20000 image": (lambda t, k, f: _bomb_run(t, k), "could be decompression bomb"),
    "config.json is a list": (lambda t, k, f: _model(t, k, b"[1, 2]"), "holds a JSON list"),
    "config.json not utf-8": (lambda t, k, f: _model(t, k, b'{"model_type": "\xff"}'), "is not valid JSON"),
    "resume with another sweep": (lambda t, k, f: _other_sweep_resume(t, k, f), "different sweep: num_beams"),
    "unreachable ray address": (lambda t, k, f: _unreachable_ray(t, k), "cannot reach the Ray cluster"),
    "report of a non-run directory": (lambda t, k, f: ["report", str(t)], "not a run directory"),
    "report output under a file": (lambda t, k, f: ["report", str(f), "-o", str(_file(t) / "r.html")],
                                   "a part of its folder is a file"),
    "prices not utf-8": (lambda t, k, f: _prices(t, f, b'[cpu]\nusd_per_vcpu_hour = 1\nsource = "\xff"\n'), "is not UTF-8 text"),
    "prices energy not a number": (lambda t, k, f: _prices(t, f, b'[cpu]\nusd_per_vcpu_hour = 1\nsource = "s"\n[energy]\nusd_per_kwh = "x"\n'),
                                   "usd_per_kwh is 'x'"),
    "compare a missing directory": (lambda t, k, f: ["compare", str(f), str(t / "nowhere")], "does not exist"),
    "compare unknown metric": (lambda t, k, f: ["compare", str(f), str(f), "--fail-on", "speed=5%"],
                               "unknown metric in --fail-on item 'speed=5%'"),
    "compare markdown under a file": (lambda t, k, f: ["compare", str(f), str(f), "--markdown",
                                                       str(_file(t) / "c.md")], "a part of its folder is a file"),
    "predictions with x2 < x1": (lambda t, k, f: _predictions(t, '{"image_id": 1, "label": "a", '
                                                                 '"bbox_xyxy": [50, 5, 10, 40]}\n'),
                                 "p.jsonl:1: \"bbox_xyxy\" [50, 5, 10, 40] has x2 < x1"),
    "predictions path is a directory": (lambda t, k, f: ["score", "--task", "od", "--dataset", "synthetic-smoke",
                                                         "--predictions", str(t)], "Is a directory"),
    "export to a directory": (lambda t, k, f: ["export", str(f), str(_dir(t, "x.csv"))], "is a directory"),
    "export to an unknown format": (lambda t, k, f: ["export", str(f), str(t / "x.xlsx")], "'.xlsx'"),
    "corrupt READY file": (lambda t, k, f: _corrupt_ready(t), "corrupt READY file"),
    "fetch an unknown dataset": (lambda t, k, f: ["datasets", "fetch", "nope"], "unknown dataset manifest 'nope'"),
    "history report under a file": (lambda t, k, f: ["history", "report", str(t), "-o", str(_file(t) / "h.html")],
                                    "a part of its folder is a file"),
    "tiny checkpoint under a file": (lambda t, k, f: ["make-tiny-checkpoint", str(_file(t) / "ckpt")],
                                     "a part of its folder is a file"),
}


def _dir(tmp: Path, name: str) -> Path:
    (tmp / name).mkdir()
    return tmp / name


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_and_exit_2(case, tiny_checkpoint, finished_run, tmp_path, capsys):
    build, expected = BAD_INPUTS[case]
    argv = build(tmp_path, tiny_checkpoint, finished_run)
    capsys.readouterr()
    assert cli.main(argv) == 2
    line = _one_line(capsys)
    assert line.startswith("florence2-bench") and expected in line, line
    assert "Traceback" not in line


# ------------------------------------------------------------------- issue 21: hostile files and paths
# Each class of the hostile probe (scripts/probe_hostile.py runs these and more): writes outside where they
# belong, data doubled or mixed, verdicts over nothing, crashes where one line is due, silent acceptance.


def _run_copy(tmp: Path) -> Path:
    """A finished run directory (the committed smoke baseline), copied: report, compare and history read it."""
    return shutil.copytree(BASELINE, tmp / "run")


def _locked_add(tmp: Path) -> list[str]:
    run = _run_copy(tmp)
    holder = store.run_lock(run)
    holder.__enter__()  # held until the process ends: this test process is the "run still writing"
    _HELD.append(holder)
    return ["history", "add", str(run), "--history", str(tmp / "h")]


_HELD: list[Any] = []


@pytest.fixture(autouse=True)
def _release_held_locks():
    yield
    while _HELD:
        _HELD.pop().__exit__(None, None, None)


def _coco_outside(tmp: Path, tiny: Path, name: str) -> list[str]:
    from PIL import Image

    (tmp / "data").mkdir()
    Image.new("RGB", (64, 48)).save(tmp / "secret.png")
    dataset = _coco(tmp / "data", images=[{"id": 1, "file_name": name.format(tmp=tmp), "width": 64, "height": 48}],
                    annotations=[{"id": 1, "image_id": 1, "bbox": [1, 1, 5, 5]}])
    return _tiny_run(tmp, tiny, "--dataset", dataset)


def _skipped_current(tmp: Path) -> list[str]:
    base = shutil.copytree(BASELINE, tmp / "base")
    cur = edit_records(shutil.copytree(BASELINE, tmp / "cur"), lambda r: {**r, "status": "skipped", "error": "no GPU"})
    return ["compare", str(base), str(cur)]


def _resume_without_env(tmp: Path, tiny: Path, finished: Path, env: bytes | None) -> list[str]:
    run = shutil.copytree(finished, tmp / "resumed")
    if env is None:
        (run / store.ENV).unlink()
    else:
        (run / store.ENV).write_bytes(env)
    other = write_sweep(tmp / "other.toml", tiny, num_beams=[2])
    return ["run", "--sweep", str(other), "--out", str(run), "--resume", "--quiet"]


HOSTILE = {
    # paths: writes and reads outside where they belong
    "coco file_name absolute outside the image folder": (
        lambda t, k, f: _coco_outside(t, k, "{tmp}/secret.png"), "--allow-outside-images"),
    "coco file_name climbing with ..": (lambda t, k, f: _coco_outside(t, k, "../secret.png"), "outside"),
    "results.jsonl is a directory": (lambda t, k, f: ["report", str(_dir(_dir(t, "r"), store.RESULTS).parent)],
                                     "is a directory"),
    # data doubled or mixed
    "history add of a run still writing": (lambda t, k, f: _locked_add(t), "is being written"),
    "resume without env.json": (lambda t, k, f: _resume_without_env(t, k, f, None), "missing or unreadable"),
    "resume with env.json not JSON": (lambda t, k, f: _resume_without_env(t, k, f, b"{"), "missing or unreadable"),
    "resume with env.json sweep a list": (lambda t, k, f: _resume_without_env(t, k, f, b'{"sweep": [1]}'),
                                          "missing or unreadable"),
    # verdicts over nothing
    "compare with every current cell skipped": (lambda t, k, f: _skipped_current(t), "nothing judged"),
    # crashes that must be one line
    "history add date beyond year 9999 in UTC": (
        lambda t, k, f: ["history", "add", str(_run_copy(t)), "--history", str(t / "h"), "--date",
                         "9999-12-31T23:00:00-05:00"], "outside the dates UTC can hold"),
    "history add date before year 1 in UTC": (
        lambda t, k, f: ["history", "add", str(_run_copy(t)), "--history", str(t / "h"), "--date",
                         "0001-01-01T00:00:00+05:00"], "outside the dates UTC can hold"),
    "pytest-benchmark cpu a string": (lambda t, k, f: ["history", "add", str(bench_json(t, **{
        "machine_info.cpu": "x86"})), "--history", str(t / "h")], "machine_info.cpu is a str"),
    "pytest-benchmark commit_info a string": (lambda t, k, f: ["history", "add", str(bench_json(t, commit_info="c")),
                                                               "--history", str(t / "h")], "commit_info is a str"),
    "pytest-benchmark NaN median": (lambda t, k, f: ["history", "add", str(bench_json(t, **{
        "benchmarks.0.stats.median": float("nan")})), "--history", str(t / "h")], "stats.median is nan"),
    "pytest-benchmark negative round time": (lambda t, k, f: ["history", "add", str(bench_json(t, **{
        "benchmarks.0.stats.data": [0.01, -1]})), "--history", str(t / "h")], "stats.data"),
    "config.json vision_config a number": (lambda t, k, f: _model(t, k, b'{"model_type": "florence2", '
                                                                        b'"vision_config": 5}'), "vision_config is 5"),
    # silently accepted before
    "fail-on a throughput gate that can never fail": (
        lambda t, k, f: ["compare", str(f), str(f), "--fail-on", "throughput=500%"], "could never fail"),
    "fail-on an unknown accuracy metric": (
        lambda t, k, f: ["compare", str(f), str(f), "--fail-on", "accuracy.bogus=-1"], "unknown accuracy metric"),
    "price table with an unknown key": (lambda t, k, f: _prices(t, f, b'[cpu]\nusd_per_vcpu_hr = 1\n'
                                                                      b'usd_per_vcpu_hour = 1\nsource = "s"\n'),
                                        "unknown key(s) usd_per_vcpu_hr"),
    "history add commit with a newline": (lambda t, k, f: ["history", "add", str(_run_copy(t)), "--history",
                                                           str(t / "h"), "--commit", "abc\nOK: 0 regressed"],
                                          "bad --commit"),
    "history add commit with a control character": (lambda t, k, f: ["history", "add", str(_run_copy(t)),
                                                                     "--history", str(t / "h"), "--commit", "a\x1bb"],
                                                    "bad --commit"),
    "score an empty predictions file": (lambda t, k, f: _predictions(t, ""), "no prediction row"),
    "score a caption of 50 MB": (lambda t, k, f: ["score", "--task", "caption", "--dataset", "synthetic-smoke:2",
                                                  "--predictions", str(_file(t, "p.jsonl", json.dumps(
                                                      {"image_id": 1, "text": "a" * 50_000_000}).encode()))],
                                 "at most 10000"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_input_is_one_line_and_exit_2(case, tiny_checkpoint, finished_run, tmp_path, capsys):
    build, expected = HOSTILE[case]
    argv = build(tmp_path, tiny_checkpoint, finished_run)
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a damaged file may also be named in a warning line
        assert cli.main(argv) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("florence2-bench: error:") and expected in line, line


def test_an_image_outside_its_folder_is_read_only_with_the_flag(tiny_checkpoint, tmp_path):
    argv = _coco_outside(tmp_path, tiny_checkpoint, "../secret.png")
    assert cli.main([*argv, "--tasks", "od", "--allow-outside-images", "--weights", "random"]) == 0
    assert {r.status for r in store.records(tmp_path / "run")} == {"ok"}


@pytest.mark.parametrize("name", ["../../../escaped.txt", "/tmp/abs.txt", "..", ".hidden", "a/b", "a\\b", "x\n"])
def test_a_manifest_file_name_that_is_not_plain_writes_nothing(name, tmp_path, monkeypatch):
    from bench.accuracy import fetch

    (tmp_path / "m").mkdir()
    (tmp_path / "src.txt").write_text("data")
    (tmp_path / "m" / "d.toml").write_text(
        f'name = "d"\ndescription = "d"\nlicense = "x"\nformat = "x"\nsubset = "x"\n'
        f'[[files]]\nname = {json.dumps(name)}\nurl = "file://{tmp_path / "src.txt"}"\n')
    monkeypatch.setenv(fetch.MANIFEST_ENV, str(tmp_path / "m"))
    before = sorted(p for p in tmp_path.rglob("*"))
    with pytest.raises(cli.UsageError, match="file name"):
        fetch.fetch("d", cache_dir=tmp_path / "deep" / "cache", log=lambda m: None)
    assert sorted(p for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("name", ["./../victim", "../victim", "a/b", ""])
def test_a_manifest_named_outside_the_cache_deletes_nothing(name, tmp_path, monkeypatch):
    from bench.accuracy import fetch

    (tmp_path / "m").mkdir()
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "keep.txt").write_text("mine")
    (tmp_path / "m" / "d.toml").write_text(f'name = {json.dumps(name)}\ndescription = "d"\nlicense = "x"\n'
                                           'format = "x"\nsubset = "x"\n')
    monkeypatch.setenv(fetch.MANIFEST_ENV, str(tmp_path / "m"))
    with pytest.raises(cli.UsageError, match="dataset name"):
        fetch.fetch(name, cache_dir=tmp_path / "cache", log=lambda m: None)
    assert (tmp_path / "victim" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("target", [store.RESULTS, store.ENV, store.REPORT])
def test_a_symlink_in_the_run_directory_is_refused_and_its_target_untouched(target, sweep_file, finished_run,
                                                                            tmp_path, capsys):
    run = shutil.copytree(finished_run, tmp_path / "run", symlinks=True)
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious line\nno newline at the end")
    (run / target).unlink()
    (run / target).symlink_to(victim)
    if target == store.REPORT:
        argv = ["report", str(run)]
    else:  # a resume must refuse before the tail repair (or anything else) touches the link's target
        argv = ["run", "--sweep", str(sweep_file), "--out", str(run), "--resume", "--quiet"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main(argv) == 2
    assert "symbolic link" in capsys.readouterr().err
    assert victim.read_bytes() == b"precious line\nno newline at the end"


def test_a_refused_resume_changes_nothing_in_the_run_directory(finished_run, tiny_checkpoint, tmp_path, capsys):
    run = shutil.copytree(finished_run, tmp_path / "run")
    with (run / store.RESULTS).open("ab") as fh:
        fh.write(b'{"torn')
    before = (run / store.RESULTS).read_bytes()
    other = write_sweep(tmp_path / "other.toml", tiny_checkpoint, num_beams=[2])
    assert cli.main(["run", "--sweep", str(other), "--out", str(run), "--resume", "--quiet"]) == 2
    assert (run / store.RESULTS).read_bytes() == before  # the torn tail is cut only once the resume is accepted


def test_a_run_is_added_to_a_history_once_and_reported_once_however_spelled(tmp_path, capsys, monkeypatch):
    run = _run_copy(tmp_path)
    for spelling in (run, Path(f"{run}/"), tmp_path / "." / "run"):
        assert cli.main(["history", "add", str(spelling), "--history", str(tmp_path / "h")]) == 0
    assert len(list((tmp_path / "h").glob("run-*.json"))) == 1
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match="named twice"):
        assert cli.main(["report", "run", "./run/", str(run), "-o", str(tmp_path / "r.html")]) == 0
    html = (tmp_path / "r.html").read_text()
    assert "Florence-2 benchmark: run<" in html and "benchmark: run, " not in html


@pytest.mark.parametrize("value", [float("nan"), 0.0, -5.0, float("inf")])
def test_a_newest_benchmark_with_invalid_times_is_listed_not_judged(value, tmp_path, capsys):
    history = tmp_path / "h"
    for n in range(4):
        stats = {"median": 0.01, "mean": 0.01, "stddev": 0.001, "rounds": 3, "data": [0.01, 0.011, 0.009]}
        path = bench_json(tmp_path, datetime=f"2026-11-2{n}T08:00:00Z", **{"commit_info.id": f"c{n}",
                                                                         "benchmarks.0.stats": stats})
        assert cli.main(["history", "add", str(path), "--history", str(history)]) == 0
    newest = sorted(history.glob("run-*.json"))[-1]
    entry = json.loads(newest.read_text())
    entry["records"][0]["latency_ms"]["p50"] = value  # a stored file written by an older version, or edited
    entry["records"][0]["samples_ms"] = [value * 1000] * 3
    newest.write_text(json.dumps(entry))
    capsys.readouterr()
    assert cli.main(["history", "check", str(history)]) == 2
    captured = capsys.readouterr()
    assert "not a positive finite number" in captured.out and "nothing judged" in captured.err


def test_a_stored_entry_of_the_wrong_shape_never_breaks_later_commands(tmp_path, capsys):
    history = tmp_path / "h"
    assert cli.main(["history", "add", str(_run_copy(tmp_path)), "--history", str(history)]) == 0
    good = next(history.glob("run-*.json"))
    bad = json.loads(good.read_text())
    bad["records"][0]["samples_ms"] = ["x"]
    bad["date"] = "9999-12-31T23:00:00-05:00"
    (history / "run-99990101T000000Z-bad-0000000000000000.json").write_text(json.dumps(bad))
    for argv in (["history", "steps", str(history)], ["history", "report", str(history), "-o", str(tmp_path / "t.html")]):
        with pytest.warns(UserWarning, match="not a history entry"):
            assert cli.main(argv) == 0, argv
    assert cli.main(["history", "add", str(bench_json(tmp_path)), "--history", str(history)]) == 0
    with pytest.warns(UserWarning, match="not a history entry"):
        assert cli.main(["history", "steps", str(history)]) == 0
    captured = capsys.readouterr()
    assert "in 2 run(s)" in captured.out and "internal error" not in captured.err


@pytest.mark.parametrize("env_change", [{"git": "abc"}, {"cpu": {"model": ["a", "b"]}}, {"sweep": [1, 2]},
                                        {"gpu": {"names": "H100"}}, {"timestamp_utc": 5}])
def test_env_json_fields_of_the_wrong_type_are_dropped_where_read(env_change, tmp_path, capsys):
    run = _run_copy(tmp_path)
    env = json.loads((run / store.ENV).read_text())
    (run / store.ENV).write_text(json.dumps({**env, **env_change}))
    with pytest.warns(UserWarning, match="wrong type"):
        env = store.read_env(run)
    assert all(env.get(k) != v for k, v in env_change.items())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main(["report", str(run)]) == 0
        assert cli.main(["compare", str(run), str(run)]) in (0, 1)
        assert cli.main(["history", "add", str(run), "--history", str(tmp_path / "h"), "--commit", "c1",
                         "--date", "2026-01-01"]) == 0
        assert cli.main(["history", "steps", str(tmp_path / "h")]) == 0
    assert "internal error" not in capsys.readouterr().err


@pytest.mark.parametrize("capacity", [-3.0, 5e-324, 0.0, 1e-300])
def test_an_invalid_capacity_never_plans_devices(capacity, tmp_path, capsys):
    run = _run_copy(tmp_path)
    edit_records(run, lambda r: {**r, "scenario": "server", "capacity_qps": capacity,
                             "server": {"target_qps": "auto", "valid": True, "latency_bound_ms": 1000.0}})
    assert cli.main(["report", str(run), "--demand-qps", "50", "-o", str(tmp_path / "r.html")]) == 0
    rows = [r for run_ in report.load_runs([run], report.load_prices(None)) for r in run_.rows]
    plans = answer.answer(rows, Question(demand_qps=50.0))
    assert plans and all(p.option is None and p.devices is None and p.usd_per_month is None for p in plans)
    assert all("not a rate" in p.note or "no valid" in p.note or "no server" in p.note for p in plans), plans


def test_a_demand_that_needs_a_billion_devices_is_not_planned(tmp_path):
    run = _run_copy(tmp_path)
    edit_records(run, lambda r: {**r, "scenario": "server", "capacity_qps": 1e-5,
                             "server": {"target_qps": "auto", "valid": True, "latency_bound_ms": 1000.0}})
    rows = [r for run_ in report.load_runs([run], report.load_prices(None)) for r in run_.rows]
    plans = answer.answer(rows, Question(demand_qps=1e5))
    assert plans and all(p.option is None and "not planned" in p.note for p in plans), plans


def _enospc(*args):
    raise OSError(28, "No space left on device")


def test_a_full_disk_is_one_line_naming_the_path_and_leaves_no_temporary(finished_run, tmp_path, capsys):
    from bench.backends.transformers import checkpoints
    from bench.core import paths

    run = shutil.copytree(finished_run, tmp_path / "run")
    with pytest.raises(cli.UsageError, match=r"cannot write .*report.html: No space left"):
        report.build_report([run], run / "report.html", writer=_enospc)
    with pytest.raises(cli.UsageError, match=r"cannot write .*results.jsonl: No space left"):
        store.append(run, store.records(run)[0], writer=_enospc)
    with pytest.raises(cli.UsageError, match=r"cannot write .*out.bin: No space left"):
        paths.write_atomic(tmp_path / "out.bin", b"x" * 100, writer=_enospc)

    def half_then_full(model, processor, directory):
        (directory / "config.json").write_text("{}")
        _enospc()

    with pytest.raises(cli.UsageError, match=r"cannot write .*ckpt: No space left"):
        checkpoints.make_tiny_checkpoint(tmp_path / "ckpt", save=half_then_full)
    assert not (tmp_path / "ckpt").exists()
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert (run / store.RESULTS).read_bytes() == (finished_run / store.RESULTS).read_bytes()


def test_a_full_disk_during_datasets_fetch_leaves_no_staging(tmp_path, monkeypatch):
    from bench.accuracy import fetch

    (tmp_path / "m").mkdir()
    (tmp_path / "src.txt").write_text("data")
    (tmp_path / "m" / "d.toml").write_text(
        'name = "d"\ndescription = "d"\nlicense = "x"\nformat = "x"\nsubset = "x"\n'
        f'[[files]]\nname = "src.txt"\nurl = "file://{tmp_path / "src.txt"}"\n')
    monkeypatch.setenv(fetch.MANIFEST_ENV, str(tmp_path / "m"))
    with pytest.raises(cli.UsageError, match="No space left"):
        fetch.fetch("d", cache_dir=tmp_path / "cache", log=lambda m: None, writer=_enospc)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [".d.lock", fetch.DOWNLOADS]
    assert fetch.fetch("d", cache_dir=tmp_path / "cache", log=lambda m: None).joinpath("src.txt").read_text() == "data"


def test_batch_sizes_no_asked_scenario_runs_are_made_offline_with_a_warning():
    config = sweep.load_sweep("smoke")
    config = sweep.override(config, batch_sizes="1,2", variants="base", tasks="caption")
    with pytest.warns(UserWarning, match="batch size 2: no scenario of"):
        sweep.validate_scenarios(config)
    assert [(c.batch_size, c.scenario) for c in sweep.expand(config)] == [(1, "single-stream"), (2, "offline")]


# -------------------------------------------------------- newer surfaces: the answer JSON, the load generator


def test_a_full_disk_while_writing_the_answer_leaves_no_answer_file(finished_run, tmp_path):
    run = shutil.copytree(finished_run, tmp_path / "run")
    with pytest.raises(cli.UsageError, match=r"cannot write .*a.json: No space left"):
        report.build_report([run], tmp_path / "r.html", answer=tmp_path / "a.json", writer=_enospc)
    assert not (tmp_path / "a.json").exists()
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def _refuse_constant(name: str):
    raise ValueError(f"{name} in the answer JSON")


@pytest.mark.parametrize(("server", "answered"), [
    ({"capacity_bracket": [float("nan"), float("inf")], "percentile_ci_ms": [110.0, 90.0]}, True),
    ({"capacity_bracket": "5-6", "percentile_ci_ms": ["a", "b"], "latency_percentile": 1.5,
      "percentile_ms": float("inf"), "early_stopping": [1]}, False),  # an unreadable record: no answer, no crash
    ({
      "curve": [{"target_qps": float("nan"), "p99": float("nan")}]}, True)])
def test_hostile_server_fields_give_an_answer_json_without_nan(server, answered, finished_run, tmp_path):
    run = edit_records(shutil.copytree(finished_run, tmp_path / "run"), lambda r: {
        **r, "scenario": "server", "capacity_qps": 5.0,
        "server": {"target_qps": "auto", "valid": True, "latency_bound_ms": 1000.0, **server}})
    for bound in ([], ["--latency-bound-ms", "500"]):
        argv = ["report", str(run), "-o", str(tmp_path / "r.html"), "--answer", str(tmp_path / "a.json"),
                "--demand-qps", "12", *bound]
        assert cli.main(argv) == 0
        data = json.loads((tmp_path / "a.json").read_text(), parse_constant=_refuse_constant)
        json.dumps(data, allow_nan=False)
        if answered and not bound:  # the cell's own bound: its capacity, whatever its other fields hold
            assert data["answers"] and all(a["capacity_qps"] == 5.0 for a in data["answers"])


@pytest.mark.parametrize("kind", ["a link", "a file", "a cell's folder a link"])
def test_a_load_generator_log_folder_leading_elsewhere_is_refused(kind, sweep_file, tmp_path, capsys):
    victim = tmp_path / "victim"
    victim.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    logs = out / "loadgen"
    if kind == "a file":
        logs.write_text("x")
    elif kind == "a link":
        logs.symlink_to(victim)
    else:
        logs.mkdir()
        for cell in sweep.expand(sweep.load_sweep(str(sweep_file))):
            (logs / cell.cell_id).symlink_to(victim)
    capsys.readouterr()
    assert cli.main(["run", "--sweep", str(sweep_file), "--out", str(out), "--quiet"]) == 2
    assert "load generator log folder" in _one_line(capsys)
    assert list(victim.iterdir()) == []


@pytest.mark.parametrize("value", ["1000000000", "1025", "0"])
def test_a_thread_count_beyond_any_machine_is_refused(value):
    with pytest.raises(cli.UsageError, match=r"bad threads value .*accepted: auto or an integer >= 1 and <= 1,024"):
        host.parse_threads(value)
