"""Bounds before work and the process's edges (issue 28, items 4 and 5).

Bounds: every number from outside has one stated range (``bench.core.inputs.BOUNDS``), a sweep's size is
refused from its axis lengths before any cell is made, and no JSON or TOML reader follows nesting past
``inputs.MAX_NESTING``. Edges: signals, a closed or full stdout, a deleted working folder, no temp
folder, a non-UTF-8 locale or path: each is one line and an exit code that keeps its meaning.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from bench import cli, commands
from bench.core import inputs, interrupts
from bench.core.errors import UsageError
from bench.run import sweep
from bench.scenarios import mlperf

# ------------------------------------------------------------------------------------- bounds


def _outside(bound: inputs.Bound) -> list[float]:
    """Values just outside a bound, and absurd ones."""
    step = 1 if bound.integer else bound.high * 1e-3
    below = bound.low if bound.low_open else bound.low - step
    return [below, bound.high + step, 2**80, -(2**80)] + ([] if bound.integer else [float("nan"), float("inf")])


@pytest.mark.parametrize("name", sorted(inputs.BOUNDS))
def test_every_bound_accepts_its_ends_and_refuses_outside_them(name):
    bound = inputs.BOUNDS[name]
    low = bound.low + (1 if bound.integer else bound.high * 1e-3) if bound.low_open else bound.low
    for value in (low, bound.high):
        inputs.check_bound(name, int(value) if bound.integer else value)
    for value in _outside(bound):
        with pytest.raises(UsageError, match=rf"bad {name} .*; accepted: an? (integer|number) >"):
            inputs.check_bound(name, value)
    parse = inputs.bounded(name)
    assert parse(str(int(bound.high) if bound.integer else bound.high)) == bound.high
    for text in ("abc", str(2**80 if bound.integer else "1e300")):
        with pytest.raises(argparse.ArgumentTypeError, match="accepted: "):
            parse(text)


def _one_line(capsys, argv: list[str]) -> tuple[int, str]:
    rc = cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return rc, err[0]


@pytest.mark.parametrize("argv, named", [
    (["make-checkpoint", "DIR", "--seed", str(2**80)], f"bad seed {2**80}"),
    (["make-tiny-checkpoint", "DIR", "--seed", "-1"], "bad seed -1"),
    (["run", "--limit", "0"], "bad limit 0"),
    (["run", "--max-new-tokens", "100000"], "bad max_new_tokens 100000"),
    (["run", "--latency-percentile", "1"], "bad latency_percentile 1"),
    (["run", "--latency-bound-ms", "nan"], "bad latency_bound_ms nan"),
    (["run", "--max-queue-delay-ms", "-1"], "bad max_queue_delay_ms -1"),
    (["run", "--server-qps", "1e12"], "bad qps 1e12"),
    (["report", "RUN", "--demand-qps", "inf"], "bad demand_qps inf"),
    (["history", "check", "H", "--baseline-runs", str(2**70)], "bad baseline_runs"),
])
def test_numeric_flags_are_refused_outside_their_range_before_any_work(tmp_path, capsys, argv, named):
    argv = [str(tmp_path / a) if a in ("DIR", "RUN", "H") else a for a in argv]
    rc, line = _one_line(capsys, argv)
    assert rc == 2 and named in line and "accepted:" in line
    assert not (tmp_path / "DIR").exists()


def _sweep_file(tmp_path, text: str):
    path = tmp_path / "s.toml"
    path.write_text('dataset = "synthetic-smoke"\nlimit = 1\n' + text)
    return path


@pytest.mark.parametrize("toml, named", [
    ("batch_sizes = [9223372036854775808]", "bad batch_sizes value 9223372036854775808"),
    ("max_new_tokens = 9223372036854775807", "bad max_new_tokens 9223372036854775807"),
    ("num_beams = [0]", "bad num_beams value 0"),
    ("threads = [100000]", "bad threads value 100000; accepted: auto or an integer >= 1 and <= 1,024"),
    ("examples = 100000", "bad examples 100000"),
    ("energy_idle_s = 1e9", "bad energy_idle_s 1000000000.0"),
    ('scenarios = ["server"]\n[server]\nqps = 1e12', "bad [server] qps"),
    ('scenarios = ["server"]\n[server]\nqps = 1.0\nmax_requests = 9223372036854775807', "bad [server] max_requests"),
    ("[repetition]\nmax_iterations = 9223372036854775807", "bad [repetition] max_iterations"),
    ("[repetition]\nmin_duration_s = 1e300", "bad [repetition] min_duration_s"),
])
def test_sweep_file_values_are_refused_outside_their_range(tmp_path, capsys, toml, named):
    rc, line = _one_line(capsys, ["run", "--sweep", str(_sweep_file(tmp_path, toml)), "--out", str(tmp_path / "r")])
    assert rc == 2 and named in line and "accepted: " in line
    assert not (tmp_path / "r").exists()


def test_a_huge_batch_size_flag_is_refused_before_anything_is_built(tmp_path, capsys):
    rc, line = _one_line(capsys, ["run", "--batch-sizes", "9223372036854775808", "--out", str(tmp_path / "r")])
    assert rc == 2 and "bad batch_sizes value 9223372036854775808; accepted: an integer >= 1 and <= 4,096" in line
    assert not (tmp_path / "r").exists()


def test_a_sweep_too_large_is_refused_from_its_axis_lengths_before_expanding(tmp_path, capsys, monkeypatch):
    big = _sweep_file(tmp_path, "\n".join(
        f"{axis} = [{', '.join(str(i + 1) for i in range(1000))}]" for axis in ("batch_sizes", "threads")
    ) + "\nvariants = [" + ", ".join(f'"v{i}"' for i in range(1000)) + "]\n")
    monkeypatch.setattr(sweep, "expand", lambda config: pytest.fail("expanded"))
    rc, line = _one_line(capsys, ["run", "--sweep", str(big), "--out", str(tmp_path / "r")])
    assert rc == 2 and "up to 1,000,000,000 cells" in line and f"at most {inputs.MAX_CELLS:,} cells" in line
    config = sweep.override(sweep.SweepConfig(), batch_sizes=",".join(map(str, range(1, 1001))),
                            num_beams=",".join(map(str, range(1, 65))), threads=",".join(map(str, range(1, 1001))))
    with pytest.raises(UsageError, match="up to 64,000,000 cells"):
        sweep.validate(config)


def test_a_sweep_at_the_cell_limit_is_accepted_by_the_count():
    lengths = {"batch_sizes": 100, "threads": inputs.MAX_CELLS // 100}
    inputs.check_cell_count(lengths)
    with pytest.raises(UsageError, match="cells"):
        inputs.check_cell_count({**lengths, "num_beams": 2})


# ------------------------------------------------------------------------------------ nesting


def _deep_json(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [inputs.MAX_NESTING + 1, 2000, 100_000])
def test_json_and_toml_nested_too_deep_are_a_value_error_never_recursion(depth):
    with pytest.raises(inputs.NestingError, match=f"nested deeper than {inputs.MAX_NESTING}"):
        inputs.parse_json(_deep_json(depth))
    with pytest.raises(inputs.NestingError):
        inputs.parse_json('{"a": ' * depth + "1" + "}" * depth)
    with pytest.raises(inputs.NestingError):
        inputs.parse_toml("a = " + _deep_json(depth))
    assert inputs.parse_json(_deep_json(inputs.MAX_NESTING)) == json.loads(_deep_json(inputs.MAX_NESTING))


def test_a_sweep_nested_2000_deep_is_one_line(tmp_path, capsys):
    rc, line = _one_line(capsys, ["run", "--sweep", str(_sweep_file(tmp_path, "a = " + _deep_json(2000)))])
    assert rc == 2 and "nested deeper than" in line


def _readers(tmp_path, deep: str):
    """Each reader of a file from outside, given a document nested 100,000 deep: the argv that reads it."""
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "config.json").write_text(deep)
    (tmp_path / "pred.jsonl").write_text(deep + "\n")
    (tmp_path / "coco.json").write_text(deep)
    (tmp_path / "prices.toml").write_text("a = " + deep)
    (tmp_path / "history").mkdir()
    (tmp_path / "history" / "run-x.json").write_text(deep)
    (tmp_path / "bench.json").write_text(deep)
    return {
        "checkpoint config": ["run", "--model-path", str(tmp_path / "ck")],
        "predictions": ["score", "--task", "caption", "--dataset", "synthetic-smoke",
                        "--predictions", str(tmp_path / "pred.jsonl")],
        "coco annotations": ["run", "--dataset", f"coco-json:{tmp_path / 'coco.json'}"],
        "history entry": ["history", "check", str(tmp_path / "history")],
        "pytest-benchmark file": ["history", "add", str(tmp_path / "bench.json"), "--history", str(tmp_path / "h")],
    }


def test_every_reader_of_outside_json_refuses_deep_nesting_in_one_line(tmp_path, capsys):
    for what, argv in _readers(tmp_path, _deep_json(100_000)).items():
        rc, line = _one_line(capsys, argv)
        assert rc == 2, (what, line)


def test_a_price_table_nested_too_deep_is_one_line(tmp_path):
    from bench.report.prices import load_prices

    path = tmp_path / "p.toml"
    path.write_text("a = " + _deep_json(2000))
    with pytest.raises(UsageError, match="nested deeper than"):
        load_prices(path)


def test_damaged_run_files_nested_too_deep_are_ignored_with_a_warning(tmp_path):
    from bench.results import store

    (tmp_path / store.ENV).write_text(_deep_json(100_000))
    with pytest.warns(UserWarning, match="nested deeper than"):
        assert store.read_env(tmp_path) == {}
    assert store.parse_line(_deep_json(100_000)) is None


# ------------------------------------------------------------------------------- sweep paths


def test_a_sweep_from_a_pipe_is_read_not_taken_for_a_sweep_name():
    read, write = os.pipe()
    os.write(write, b'name = "from-a-pipe"\nlimit = 1\n')
    os.close(write)
    try:
        assert sweep.load_sweep(f"/dev/fd/{read}").name == "from-a-pipe"
    finally:
        os.close(read)


def test_a_sweep_file_without_a_suffix_in_a_folder_is_a_file(tmp_path):
    (tmp_path / "mysweep").write_text('name = "plain"\n')
    assert sweep.load_sweep(str(tmp_path / "mysweep")).name == "plain"
    with pytest.raises(UsageError, match="unknown sweep 'mysweep'"):
        sweep.load_sweep("mysweep")


def test_the_readme_states_every_bound_as_the_code_checks_it():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    rows = {line.split("|")[1].strip(" `"): line.split("|")[3].strip() for line in readme.splitlines()
            if line.startswith("| `") and line.count("|") == 4}
    assert {name: rows.get(name) for name in inputs.BOUNDS} == {n: b.describe() for n, b in inputs.BOUNDS.items()}
    assert f"over {inputs.MAX_CELLS:,} cells" in readme and f"deeper than {inputs.MAX_NESTING} levels" in readme


# ------------------------------------------------------------------------------ process edges

ROOT = Path(__file__).parents[1]
TESTS = Path(__file__).parent


def _bench(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """The command line in a process of its own (exit paths that only a real process shows)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **kwargs.pop("env", {})}
    return subprocess.run([sys.executable, "-m", "bench", *args], env=env, timeout=120, **kwargs)


def _err_lines(stderr: bytes) -> list[str]:
    return stderr.decode("utf-8", "replace").strip().splitlines()


@pytest.fixture
def regressed(tmp_path):
    """A baseline and a current run 30% slower: `compare` exits 1."""
    import test_compare

    return test_compare.pair(tmp_path, seed=1, scale=1.3)


def test_compare_into_a_closed_pipe_keeps_its_exit_1_and_writes_its_files(regressed, tmp_path):
    md = tmp_path / "summary.md"
    proc = subprocess.Popen([sys.executable, "-m", "bench", "compare", *map(str, regressed), "--markdown", str(md)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    proc.stdout.close()  # the reader is gone before a line is written (`| head -0`)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and _err_lines(err) == [] and md.read_text()


def test_compare_onto_a_full_device_keeps_its_exit_1_and_says_the_output_was_lost(regressed):
    with open("/dev/full", "w") as full:
        result = _bench("compare", *map(str, regressed), stdout=full, stderr=subprocess.PIPE)
    err = _err_lines(result.stderr)
    assert result.returncode == 1 and len(err) == 1 and "output to stdout was lost (No space left on device)" in err[0]


def test_an_ascii_locale_prints_what_is_not_ascii_escaped(regressed, tmp_path):
    out = tmp_path / "ré.html"
    result = _bench("report", str(regressed[1]), "-o", str(out), capture_output=True,
                    env={"PYTHONIOENCODING": "ascii", "LANG": "C", "LC_ALL": "C"})
    assert result.returncode == 0, result.stderr
    assert b"r\\xe9.html" in result.stdout and out.exists()


class _BrokenPipe(io.StringIO):
    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        raise BrokenPipeError(32, "Broken pipe")


@pytest.mark.parametrize("status, code", [("ok", 0), ("error", 1)])
def test_a_run_into_a_broken_pipe_writes_its_report_and_keeps_its_exit_code(tmp_path, monkeypatch, capsys,
                                                                            status, code):
    import test_compare

    records = [test_compare.record("<CAPTION>", [100.0, 110.0], status=status)]
    monkeypatch.setattr(sweep, "run_sweep", lambda config, out, **kw: (
        test_compare.write_run(out, records), sweep.RunSummary(records, 0))[1])
    monkeypatch.setattr(sys, "stdout", _BrokenPipe())
    assert cli.main(["run", "--out", str(tmp_path / "run")]) == code
    assert (tmp_path / "run" / "report.html").stat().st_size
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("command, signal_raised, code, advice", [
    ("run", KeyboardInterrupt, 130, interrupts.RESUME_ADVICE),
    ("run", interrupts.Terminated, 143, interrupts.RESUME_ADVICE),
    ("report", KeyboardInterrupt, 130, cli.INTERRUPTED),
])
def test_an_interrupted_command_gives_its_own_advice_and_exit_code(tmp_path, monkeypatch, capsys, command,
                                                                   signal_raised, code, advice):
    def stopped(*args, **kwargs):
        raise signal_raised()

    monkeypatch.setattr(sweep, "run_sweep", stopped)
    monkeypatch.setattr(commands.report, "run", stopped)
    rc, line = _one_line(capsys, [command, "--out" if command == "run" else str(tmp_path), str(tmp_path / "r")])
    assert rc == code and line == f"florence2-bench: interrupted; {advice}"
    assert command == "run" or "--resume" not in line


def _pipe_readers(pid: int, inode: str) -> int:
    """How many of the process's descriptors lead to the pipe (0 once it is gone)."""
    def target(fd: Path) -> str | None:
        try:
            return os.readlink(fd)
        except OSError:  # closed while we looked
            return None

    try:
        return sum(1 for fd in Path(f"/proc/{pid}/fd").iterdir() if target(fd) == inode)
    except OSError:
        return 0


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to see the process wait")
@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_while_a_run_waits_on_its_sweep_file_is_exit_130_or_143_with_the_advice(signum, code):
    read, write = os.pipe()
    inode = os.readlink(f"/proc/self/fd/{read}")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "bench", "run", "--sweep", f"/dev/fd/{read}"], pass_fds=(read,),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 60
        while _pipe_readers(proc.pid, inode) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # the sweep file is open (a second descriptor on the pipe): it waits for it
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        os.close(read)
        os.close(write)
    assert proc.returncode == code
    assert _err_lines(err) == [f"florence2-bench: interrupted; {interrupts.RESUME_ADVICE}"]


_LOADGEN_SCRIPT = """
import os, signal, sys
from pathlib import Path
import test_loadgen as t
from bench.core.measure import RepetitionPolicy
from bench.scenarios import ServerSettings, get_load_generator

class Signalled(t.SleepingPipeline):
    def run_batch(self, samples):
        if len(self.batch_sizes) == 3:
            os.kill(os.getpid(), getattr(signal, sys.argv[2]))
        return super().run_batch(samples)

scenario = sys.argv[1]
server = ServerSettings(qps=5.0, min_duration_s=60.0) if scenario == "server" else None
run = t.scenario_input(Path(sys.argv[3]), 1, server=server, policy=RepetitionPolicy(
    warmup=1, min_iterations=600, min_duration_s=0.0, max_iterations=600, cv_threshold=0.5))
run.pipeline = Signalled()
try:
    get_load_generator("mlperf").measure(scenario, run)
except KeyboardInterrupt as exc:
    print(type(exc).__name__, len(run.pipeline.batch_sizes))
"""


@pytest.mark.skipif(mlperf.import_loadgen() is None, reason="needs the mlperf extra")
@pytest.mark.parametrize("scenario, signame, raised", [("single-stream", "SIGINT", "KeyboardInterrupt"),
                                                       ("offline", "SIGTERM", "Terminated")])
def test_a_signal_in_a_loadgen_test_ends_it_early_and_is_raised_after_it(tmp_path, scenario, signame, raised):
    """Ctrl-C inside LoadGen's C++ test once aborted the process (std::bad_alloc, exit 134): the test now
    ends early (the queries left are answered unserved) and the signal is raised once it has returned."""
    result = subprocess.run([sys.executable, "-c", _LOADGEN_SCRIPT, scenario, signame, str(tmp_path)],
                            capture_output=True, timeout=120, env={**os.environ, "PYTHONPATH": f"{ROOT}:{TESTS}"})
    assert result.returncode == 0, result.stderr[-2000:]
    name, batches = result.stdout.decode().split()
    assert name == raised and int(batches) < 10  # of 600: the pipeline stopped running at once
    assert b"terminate called" not in result.stderr


@pytest.mark.skipif(mlperf.import_loadgen() is None, reason="needs the mlperf extra")
def test_a_loadgen_server_test_that_keeps_its_schedule_ends_the_process_after_the_grace(tmp_path):
    result = subprocess.run([sys.executable, "-c", _LOADGEN_SCRIPT, "server", "SIGINT", str(tmp_path)],
                            capture_output=True, timeout=120, env={**os.environ, "PYTHONPATH": f"{ROOT}:{TESTS}"})
    assert result.returncode == 130
    assert _err_lines(result.stderr)[-1] == f"florence2-bench: interrupted; {interrupts.RESUME_ADVICE}"


def test_a_deleted_working_folder_is_one_line_exit_2(tmp_path):
    gone = tmp_path / "gone"
    gone.mkdir()
    result = subprocess.run(["sh", "-c", f'cd "{gone}" && rmdir "{gone}" && exec "{sys.executable}" -m bench variants'],
                            capture_output=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    err = _err_lines(result.stderr)
    assert result.returncode == 2 and len(err) == 1 and "current folder cannot be read" in err[0]


def test_an_argument_that_is_not_utf8_is_one_line_exit_2(capsys):
    rc, line = _one_line(capsys, ["report", "/tmp/run-\udcff"])
    assert rc == 2 and "argument '/tmp/run-\\xff' is not UTF-8" in line


def _crash(monkeypatch):
    def boom(args):
        raise RuntimeError("boom ×")

    monkeypatch.setattr(commands.variants, "run", boom)


def test_a_crash_without_a_temp_folder_writes_its_traceback_in_the_working_folder(tmp_path, monkeypatch, capsys):
    _crash(monkeypatch)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-temp"))
    monkeypatch.chdir(tmp_path)
    rc, line = _one_line(capsys, ["variants"])
    assert rc == 3 and "internal error: RuntimeError: boom ×; full traceback in" in line
    crash = Path(line.rsplit(" in ", 1)[1])
    assert crash.parent == tmp_path and "boom ×" in crash.read_text(encoding="utf-8")


def test_a_crash_that_cannot_be_written_anywhere_is_still_one_line_exit_3(monkeypatch, capsys):
    _crash(monkeypatch)

    def nowhere(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", nowhere)
    rc, line = _one_line(capsys, ["variants"])
    assert rc == 3 and "boom ×" in line and "the traceback could not be saved (PermissionError" in line


def test_a_data_folder_setting_that_is_a_file_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    from bench.accuracy.fetch import DATA_ENV

    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "afile"))
    rc, line = _one_line(capsys, ["datasets", "list"])
    assert rc == 2 and f"{DATA_ENV}={tmp_path / 'afile'} is not a folder" in line


def test_an_output_under_a_dangling_link_says_it_is_a_dangling_link(regressed, tmp_path, capsys):
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    rc, line = _one_line(capsys, ["report", str(regressed[1]), "-o", str(tmp_path / "link" / "r.html")])
    assert rc == 2 and f"{tmp_path / 'link'} is a dangling link (to {tmp_path / 'nowhere'})" in line


@pytest.mark.parametrize("name, damage, named", [
    ("tokenizer_config.json", lambda p: p.write_text("{"), "is not valid JSON"),
    ("generation_config.json", lambda p: p.write_text("[1]"), "holds a JSON list"),
    ("processor_config.json", lambda p: p.write_bytes(b"\xff{}"), "is not valid JSON"),
    ("model.safetensors", lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "truncated"),
    ("model.safetensors", lambda p: p.write_bytes(b"\xff" * 64), "a header of"),
])
def test_a_damaged_checkpoint_file_is_one_line_exit_2_before_any_cell(tiny_checkpoint, tmp_path, capsys, name,
                                                                      damage, named):
    import shutil

    copy = tmp_path / "ck"
    shutil.copytree(tiny_checkpoint, copy)
    damage(copy / name)
    rc, line = _one_line(capsys, ["run", "--model-path", str(copy), "--limit", "1", "--out", str(tmp_path / "r")])
    assert rc == 2 and f"{copy / name} " in line and named in line
    assert not (tmp_path / "r").exists()


def test_two_trend_reports_to_one_file_at_once_both_succeed(tmp_path):
    import history_synth

    history = history_synth.write(history_synth.history(6, 1), tmp_path / "h")
    out = tmp_path / "same.html"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-m", "bench", "history", "report", str(history), "-o", str(out)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env) for _ in range(2)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    for p in procs:
        p.stderr.close()
    assert [rc for rc, _ in results] == [0, 0], results
    assert out.read_text().rstrip().endswith("</html>")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h", "same.html"]  # no temporary file left
