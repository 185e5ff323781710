"""The generated fault matrix (issue 28): every kind of path the door knows (``bench.core.paths.KINDS``) in every
hostile state: a symbolic link to a file outside, a hard link to it, a FIFO, a directory, an unreadable file,
garbage and a truncated (empty) file; a read kind also deeply nested (JSON past ``MAX_NESTING``) and huge (a sparse
file of 1 TiB); a written kind also under two writers at once; the run directory's appended files also under a
SIGKILL of a real run at a random point, then ``--resume``. Each case ends in one UsageError line (exit 2) or a correct success
where the state is harmless; the file outside is never touched; nothing waits (an alarm fails a hang).

Two layers: the door's own operation for the kind's ``op`` (generated from the registry alone), and the
code that touches that kind (``EXERCISE``: one entry per kind, which a new kind must add; its states are
generated)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import signal
import stat
import subprocess
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
from hostile import bench_process
from sweep_helpers import write_sweep

from bench import cli
from bench.core import inputs, paths
from bench.core.errors import UsageError
from bench.report import prices
from bench.results import store
from bench.run import sweep

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "reports" / "baselines" / "smoke-cpu"
SECRET = b"outside: never to be touched\nno newline at the end"
HANG_S = 10


def _symlink(path: Path, outside: Path) -> None:
    path.symlink_to(outside / "secret" if not _is_tree(path) else outside)


def _hard_link(path: Path, outside: Path) -> None:
    os.link(outside / "secret", path)


def _fifo(path: Path, outside: Path) -> None:
    os.mkfifo(path)


def _directory(path: Path, outside: Path) -> None:
    path.mkdir()


def _unreadable(path: Path, outside: Path) -> None:
    path.write_bytes(b"unreadable")
    path.chmod(0)


def _garbage(path: Path, outside: Path) -> None:
    path.write_bytes(bytes(range(256)) * 4 + b"\xff\xfe{\"torn")


def _truncated(path: Path, outside: Path) -> None:
    path.write_bytes(b"")


def _deeply_nested(path: Path, outside: Path) -> None:
    depth = 1000 * inputs.MAX_NESTING  # past the bound and past Python's recursion limit
    path.write_text("[" * depth + "]" * depth)


def _huge(path: Path, outside: Path) -> None:
    path.write_bytes(b"{")
    os.truncate(path, 1 << 40)  # 1 TiB, sparse: costs no disk, but reading it whole would never end


STATES: dict[str, Callable[[Path, Path], None]] = {
    "symlink to outside": _symlink, "hard link": _hard_link, "FIFO": _fifo, "directory": _directory,
    "unreadable": _unreadable, "garbage": _garbage, "truncated": _truncated,
    "deeply nested": _deeply_nested, "huge": _huge}
READ_ONLY_STATES = {"deeply nested", "huge"}  # what a file the tool reads may be; a written file is the tool's own


def _states(op: str) -> list[str]:
    return [s for s in STATES if op == "read" or s not in READ_ONLY_STATES]


CASES = [(kind, state) for kind, k in paths.KINDS.items() for state in _states(k.op)]
# states the door must refuse, per operation (any other state: refused or a correct success)
MUST_REFUSE = {
    "read": {"symlink to outside", "FIFO", "directory", "huge"},
    "append": {"symlink to outside", "hard link", "FIFO", "directory"},
    "lock": {"symlink to outside", "hard link", "FIFO", "directory"},
    "replace": {"symlink to outside", "FIFO", "directory"},
    "tree": {"symlink to outside", "FIFO"},
}
_TREE: set[Path] = set()


def _is_tree(path: Path) -> bool:
    return path in _TREE


@contextmanager
def _no_hang() -> Iterator[None]:
    def hang(*_):
        raise TimeoutError(f"waited more than {HANG_S} s: a hang")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(HANG_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _outside(tmp: Path) -> Path:
    outside = tmp / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(SECRET)
    return outside


def _untouched(outside: Path) -> None:
    assert (outside / "secret").read_bytes() == SECRET
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]


def _place(path: Path, state: str, outside: Path, tree: bool) -> None:
    if os.path.lexists(path):
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    if tree:
        _TREE.add(path)
    STATES[state](path, outside)


def _refused_or_ok(act: Callable[[], object]) -> str:
    try:
        act()
    except UsageError as exc:
        assert "\n" not in str(exc).strip(), exc
        return "refused"
    return "ok"


def _outcome(act: Callable[[], object]) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with _no_hang():
            return _refused_or_ok(act)


def _skip_meaningless(op: str, state: str) -> None:
    if state == "hard link" and op == "tree":
        pytest.skip("a folder cannot be hard-linked")


# ------------------------------------------------------------------------------ layer 1: the door itself

DOOR_OPS: dict[str, Callable[[Path, str], object]] = {
    "read": lambda p, what: paths.read_bytes(p, what),
    "append": lambda p, what: paths.append_line(p, "a line", what),
    "lock": lambda p, what: os.close(paths.open_lock(p, what)),
    "replace": lambda p, what: paths.write_atomic(p, b"new", what=what),
    "tree": lambda p, what: paths.make_dir(p, what),
}


def test_every_kind_has_a_known_operation_and_an_exercise():
    assert {k.op for k in paths.KINDS.values()} <= set(paths.OPS) == set(DOOR_OPS) == set(MUST_REFUSE)
    assert set(EXERCISE) == set(paths.KINDS), "a new path kind needs its entry in EXERCISE"


@pytest.mark.parametrize(("kind", "state"), CASES)
def test_the_door_refuses_each_hostile_state_of_each_kind(kind, state, tmp_path):
    op = paths.KINDS[kind].op
    _skip_meaningless(op, state)
    outside = _outside(tmp_path)
    path = tmp_path / "inside" / "target"
    _place(path, state, outside, tree=op == "tree")
    outcome = _outcome(lambda: DOOR_OPS[op](path, kind))
    if state in MUST_REFUSE[op]:
        assert outcome == "refused", (kind, state)
    if outcome == "ok" and op == "replace":
        assert path.read_bytes() == b"new" and not path.is_symlink()
    _untouched(outside)


def _enospc(*args):
    raise OSError(28, "No space left on device")


FULL_DISK: dict[str, Callable[[Path, str], object]] = {
    "append": lambda p, what: paths.append_line(p, "a line", what, writer=_enospc),
    "replace": lambda p, what: paths.write_atomic(p, b"new", what=what, writer=_enospc),
}


@pytest.mark.parametrize("kind", [k for k, v in paths.KINDS.items() if v.op in FULL_DISK])
def test_a_full_disk_under_each_written_kind_is_one_line_and_keeps_the_file(kind, tmp_path):
    path = tmp_path / "target"
    path.write_bytes(b"before\n")
    with pytest.raises(UsageError, match=r"cannot write .*target: No space left"):
        FULL_DISK[paths.KINDS[kind].op](path, kind)
    assert path.read_bytes() == b"before\n" and sorted(p.name for p in tmp_path.iterdir()) == ["target"]


# ------------------------------------------------------------------------------ layer 2: the code that touches it

def _run(tmp: Path) -> Path:
    return shutil.copytree(BASELINE, tmp / "run")


def _record(run: Path) -> store.Record:
    return store.records(BASELINE)[0]


def _results(tmp):
    run = _run(tmp)
    return run / store.RESULTS, lambda: store.append(run, _record(run))


def _progress(tmp):
    run = _run(tmp)
    return run / store.PROGRESS, lambda: store.append_progress(run, "cell done")


def _run_lock(tmp):
    run = _run(tmp)

    def act():
        with store.run_lock(run):
            pass
    return run / store.LOCK, act


def _env(tmp):
    run = _run(tmp)
    return run / store.ENV, lambda: store.write_env(run, {**store.read_env(run), "hostname": "h"})


def _example(tmp):
    from bench.accuracy.data import load_samples
    from bench.run import runner

    run = _run(tmp)
    return run / "examples" / "synthetic-smoke" / "000001.png", lambda: runner._examples(
        run, "synthetic-smoke", load_samples("synthetic-smoke", 1), {}, {})


def _loadgen(tmp, folder: bool):
    run, private = _run(tmp), tmp / "private"
    private.mkdir()
    (private / "mlperf_log_detail.txt").write_text(":::MLLOG {}\n")
    cell = run / "loadgen" / "cell"
    return (cell if folder else cell / "mlperf_log_detail.txt"), lambda: paths.move_in(private, cell,
                                                                                         "load generator log")


def _run_directory(tmp):  # the folder `run` makes under ./runs (an --out the user names may be a link)
    return tmp / "runs" / "smoke-1", lambda: paths.make_dir(tmp / "runs" / "smoke-1", "run directory")


def _history_entry(tmp):
    run, history = _run(tmp), tmp / "h"
    assert cli.main(["history", "add", str(run), "--history", str(history)]) == 0
    entry = next(history.glob("run-*.json"))
    return entry, lambda: _exit_2_or_0(["history", "add", str(run), "--history", str(history)])


def _history_lock(tmp):
    run, history = _run(tmp), tmp / "h"
    history.mkdir()
    return history / ".lock", lambda: _exit_2_or_0(["history", "add", str(run), "--history", str(history)])


def _output(tmp):
    run = _run(tmp)
    out = tmp / "o" / "x.csv"
    return out, lambda: _exit_2_or_0(["export", str(run), str(out)])


def _exit_2_or_0(argv: list[str]) -> None:
    code = cli.main(argv)
    assert code in (0, 2), code
    if code == 2:
        raise UsageError("exit 2")


def _checkpoint(tmp):
    from transformers import Florence2ForConditionalGeneration  # noqa: F401 - imported here, not timed

    from bench.backends.transformers import checkpoints

    def save(model, processor, directory):
        (directory / "config.json").write_text("{}")

    return tmp / "ckpt", lambda: checkpoints.make_tiny_checkpoint(tmp / "ckpt", save=save)


def _fetch(tmp, where: Callable[[Path], Path], digest_first: bool = False):
    from bench.accuracy import fetch

    (tmp / "m").mkdir()
    (tmp / "src.txt").write_text("data")
    (tmp / "m" / "d.toml").write_text('name = "d"\ndescription = "d"\nlicense = "x"\nformat = "x"\nsubset = "x"\n'
                                      f'[[files]]\nname = "src.txt"\nurl = "file://{tmp / "src.txt"}"\n')
    cache = tmp / "cache"
    downloads = cache / fetch.DOWNLOADS / "d"
    downloads.mkdir(parents=True)
    if digest_first:  # a finished download whose digest file is the hostile one
        (downloads / "src.txt").write_text("data")
    os.environ[fetch.MANIFEST_ENV] = str(tmp / "m")
    return where(cache), lambda: fetch.fetch("d", cache_dir=cache, log=lambda m: None)


def _ir(tmp, folder_itself: bool):
    from bench.backends.openvino import backend

    root = tmp / "ir"
    folder = root / "part-0123"
    folder.mkdir(parents=True)
    xml, weights = b"<net/>", b"\0" * 16
    (folder / backend.IR_FILE).write_bytes(xml)
    (folder / backend.IR_FILE).with_suffix(".bin").write_bytes(weights)
    (folder / backend.KEY_FILE).write_text(json.dumps({"xml_sha256": hashlib.sha256(xml).hexdigest(),
                                                       "bin_sha256": hashlib.sha256(weights).hexdigest()}))
    fake_ov = SimpleNamespace(Core=lambda: SimpleNamespace(read_model=lambda x, w: "model"), Tensor=lambda a: a)

    def act():  # what OpenVINOBackend.ir does: read it verified, else discard it (then it converts again)
        try:
            backend.read_ir(fake_ov, folder)
        except (UsageError, ValueError, UnicodeDecodeError):
            backend.discard(folder, root)
            raise UsageError("discarded") from None
    return (folder if folder_itself else folder / backend.IR_FILE), act


def _input(tmp):  # a file the user names (a pytest-benchmark JSON): read through paths.open_input
    run = tmp / "bench.json"
    return run, lambda: _exit_2_or_0(["history", "add", str(run), "--history", str(tmp / "h")])


EXERCISE: dict[str, Callable[[Path], tuple[Path, Callable[[], object]]]] = {
    "results file": _results,
    "progress log": _progress,
    "run lock": _run_lock,
    "environment file": _env,
    "example image": _example,
    "load generator log": lambda t: _loadgen(t, folder=False),
    "load generator log folder": lambda t: _loadgen(t, folder=True),
    "run directory": _run_directory,
    "history entry": _history_entry,
    "history lock": _history_lock,
    "output": _output,
    "checkpoint": _checkpoint,
    "dataset lock": lambda t: _fetch(t, lambda c: c / ".d.lock"),
    "partial download": lambda t: _fetch(t, lambda c: c / "_downloads" / "d" / "src.txt.part"),
    "download": lambda t: _fetch(t, lambda c: c / "_downloads" / "d" / "src.txt"),
    "download digest": lambda t: _fetch(t, lambda c: c / "_downloads" / "d" / "src.txt.sha256", digest_first=True),
    "dataset file": lambda t: _fetch(t, lambda c: c / "d" / "src.txt"),
    "dataset folder": lambda t: _fetch(t, lambda c: c / "d"),
    "IR file": lambda t: _ir(t, folder_itself=False),
    "IR folder": lambda t: _ir(t, folder_itself=True),
    "input": _input,
}
# where the code replaces a hostile entry rather than using it (harmless: the entry is the tool's own cache)
REPLACED = {("partial download", "symlink to outside"), ("partial download", "FIFO"), ("partial download", "hard link"), ("dataset file", "FIFO"),
            ("dataset file", "symlink to outside"), ("dataset file", "directory"), ("dataset folder", "FIFO")}


@pytest.mark.parametrize(("kind", "state"), CASES)
def test_the_code_touching_each_kind_refuses_each_hostile_state(kind, state, tmp_path, monkeypatch):
    from bench.accuracy import fetch

    monkeypatch.setenv(fetch.MANIFEST_ENV, "")  # restored after the exercise sets it
    op = paths.KINDS[kind].op
    _skip_meaningless(op, state)
    outside = _outside(tmp_path)
    path, act = EXERCISE[kind](tmp_path)
    _place(path, state, outside, tree=op == "tree")
    try:
        outcome = _outcome(act)
    finally:
        store._held.clear()
    if state in MUST_REFUSE[op] and (kind, state) not in REPLACED and not (op == "tree" and state == "directory"):
        assert outcome == "refused", (kind, state)
    _untouched(outside)
    if state == "unreadable" and os.path.lexists(path) and not path.is_symlink():
        path.chmod(stat.S_IRWXU)


def test_a_sweep_name_never_makes_a_run_directory_outside_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("../../../x", "/tmp/abs", "a/../../b"):
        with pytest.raises(UsageError, match="outside runs"):
            paths.confined("runs", f"{name}-1", "run directory")
    assert paths.confined("runs", "smoke-1", "run directory") == Path("runs/smoke-1")


# ------------------------------------------------------------------------------ two writers at once

WRITTEN = [k for k, v in paths.KINDS.items() if v.op in ("append", "replace")]


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.is_file() else 0


@pytest.mark.parametrize("kind", WRITTEN)
def test_two_writers_of_each_written_kind_at_once_leave_a_whole_file(kind, tmp_path, monkeypatch):
    """Each writer succeeds or says why in one line; the file is whole: appended lines neither torn, lost nor
    doubled, a replaced file what one writer alone leaves, and no temporary file left beside it."""
    from bench.accuracy import fetch

    monkeypatch.setenv(fetch.MANIFEST_ENV, "")
    path, act = EXERCISE[kind](tmp_path)
    before = _lines(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert _outcome(act) == "ok"
        alone, grown = (path.read_bytes() if path.is_file() else None), _lines(path) - before
        gate, outcomes = threading.Barrier(2), []

        def writer() -> None:
            gate.wait()
            outcomes.append(_refused_or_ok(act))

        threads = [threading.Thread(target=writer) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60 * HANG_S)
        store._held.clear()
    assert not any(t.is_alive() for t in threads), "a writer waits forever"
    assert len(outcomes) == 2, "a writer crashed"
    if paths.KINDS[kind].op == "append" and alone is not None:
        data = path.read_bytes()
        assert data.startswith(alone) and data.endswith(b"\n")
        assert _lines(path) == before + grown * (1 + outcomes.count("ok"))
    elif alone is not None:
        assert path.read_bytes() == alone
    assert not list(path.parent.glob(f".{path.name}.*.tmp"))


# ------------------------------------------------------------------------------ SIGKILL, then --resume

RUN_APPENDED = [k for k, v in paths.KINDS.items() if v.where == "run" and v.op == "append"]
STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\S* ")


@pytest.fixture(scope="module")
def killed_then_resumed(tiny_checkpoint, tmp_path_factory):
    """A real run of three cells, SIGKILLed a seeded random time after its first record, then resumed."""
    tmp = tmp_path_factory.mktemp("killed")
    sweep_file = write_sweep(tmp / "s.toml", tiny_checkpoint, tasks=["<CAPTION>", "<OD>", "<OCR>"])
    cells = sweep.expand(sweep.load_sweep(str(sweep_file)))
    out, rng = tmp / "run", random.Random(28)
    proc = bench_process("run", "--sweep", sweep_file, "--out", out, "--quiet", stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600  # the machine may be busy: the first cell loads the model
        while _lines(out / store.RESULTS) < 1 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.3))
        killed = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a torn tail is possible (and repaired)
        kept = [r.to_dict() for r in store.records(out)]
        assert cli.main(["run", "--sweep", str(sweep_file), "--out", str(out), "--resume", "--quiet"]) == 0
    return SimpleNamespace(out=out, cells=cells, killed=killed, kept=kept)


def _each_cell_once(run) -> None:
    records = [r.to_dict() for r in store.records(run.out)]
    assert Counter(r["cell_id"] for r in records) == Counter(c.cell_id for c in run.cells)
    assert records[: len(run.kept)] == run.kept  # what the killed run finished was kept, not run again


def _whole_lines_each_cell_done_once(run) -> None:
    lines = (run.out / store.PROGRESS).read_text().splitlines(keepends=True)
    assert all(STAMP.match(line) and line.endswith("\n") for line in lines), lines
    said = [STAMP.sub("", line, count=1).rstrip("\n") for line in lines]
    done = Counter(c.label for c in run.cells for rest in said
                   if rest == f"{'ok':7s} {c.label}" or rest.startswith(f"{'ok':7s} {c.label}  "))
    kept = {r["cell_id"] for r in run.kept}
    resumed = {c.label for c in run.cells if c.cell_id not in kept}
    assert set(done.values()) <= {1} and resumed <= set(done), (done, resumed, said)


AFTER_KILL: dict[str, Callable[[SimpleNamespace], None]] = {
    "results file": _each_cell_once, "progress log": _whole_lines_each_cell_done_once}


@pytest.mark.parametrize("kind", RUN_APPENDED)
def test_each_appended_run_file_after_a_sigkill_and_resume_loses_and_doubles_nothing(kind, killed_then_resumed):
    assert set(AFTER_KILL) == set(RUN_APPENDED), "a new appended run file needs its check in AFTER_KILL"
    assert killed_then_resumed.killed, "the run ended before it could be killed"
    AFTER_KILL[kind](killed_then_resumed)


# ------------------------------------------------------------------------------ the user's TOML inputs

def _nested_toml(path: Path, outside: Path) -> None:
    depth = 1000 * inputs.MAX_NESTING
    path.write_text("a = " + "[" * depth + "]" * depth + "\n")


TOML_READERS: dict[str, Callable[[Path], object]] = {  # a user's file read through inputs.read_text
    "sweep file": lambda p: sweep.load_sweep(str(p)),
    "price table": lambda p: prices.load_prices(p),
}
# (a FIFO is read: `run --sweep <(...)` is a pipe, and a signal ends the wait, tests/test_bounds_edges.py)
TOML_STATES = {"directory": _directory, "huge": _huge, "deeply nested": _nested_toml}


@pytest.mark.parametrize("state", list(TOML_STATES))
@pytest.mark.parametrize("reader", list(TOML_READERS))
def test_each_toml_input_in_each_hostile_state_is_one_line(reader, state, tmp_path):
    path = tmp_path / "in.toml"
    TOML_STATES[state](path, tmp_path)
    assert _outcome(lambda: TOML_READERS[reader](path)) == "refused"
