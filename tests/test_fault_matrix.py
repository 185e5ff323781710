"""The generated fault matrix (issue 28): every kind of path the door knows (``bench.paths.KINDS``) in every
hostile state: a symbolic link to a file outside, a hard link to it, a FIFO, a directory, an unreadable file,
garbage and a truncated (empty) file. Each case ends in one UsageError line (exit 2) or a correct success
where the state is harmless; the file outside is never touched; nothing waits (an alarm fails a hang).

Two layers: the door's own operation for the kind's ``op`` (generated from the registry alone), and the
code that touches that kind (``EXERCISE``: one entry per kind, which a new kind must add; its states are
generated)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench import cli, paths, store
from bench.errors import UsageError

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


STATES: dict[str, Callable[[Path, Path], None]] = {
    "symlink to outside": _symlink, "hard link": _hard_link, "FIFO": _fifo, "directory": _directory,
    "unreadable": _unreadable, "garbage": _garbage, "truncated": _truncated}
# states the door must refuse, per operation (any other state: refused or a correct success)
MUST_REFUSE = {
    "read": {"symlink to outside", "FIFO", "directory"},
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


def _outcome(act: Callable[[], object], refusals: tuple[type[BaseException], ...] = (UsageError,)) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with _no_hang():
            try:
                act()
            except refusals as exc:
                assert "\n" not in str(exc).strip(), exc
                return "refused"
    return "ok"


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


@pytest.mark.parametrize("state", list(STATES))
@pytest.mark.parametrize("kind", list(paths.KINDS))
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
    return store.Record(**store.read_records(BASELINE)[0])


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
    from bench import runner
    from bench.data import load_samples

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
    from bench import fetch

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


@pytest.mark.parametrize("state", list(STATES))
@pytest.mark.parametrize("kind", list(paths.KINDS))
def test_the_code_touching_each_kind_refuses_each_hostile_state(kind, state, tmp_path, monkeypatch):
    from bench import fetch

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
