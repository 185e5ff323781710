"""The door for files (bench/core/paths.py): no module of bench/ but the door writes, replaces, deletes or makes a
temporary file by itself. An AST scan, so a new writer that bypasses the door fails here, naming its line."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOOR = ROOT / "bench" / "core" / "paths.py"

METHODS = {"write_text", "write_bytes", "to_csv", "to_parquet", "rename", "unlink", "rmdir", "symlink_to",
           "hardlink_to", "touch"}
MODULE_CALLS = {
    "os": {"replace", "rename", "renames", "remove", "unlink", "link", "symlink", "rmdir", "removedirs", "truncate",
           "mkfifo"},
    "shutil": {"copy", "copy2", "copyfile", "copytree", "move", "rmtree"},
}
WRITE_MODES = set("wax+")


def _mode(call: ast.Call, position: int) -> str | None:
    args = [kw.value for kw in call.keywords if kw.arg == "mode"] or call.args[position:position + 1]
    return args[0].value if args and isinstance(args[0], ast.Constant) and isinstance(args[0].value, str) else None


def _offence(call: ast.Call) -> str | None:
    """What ``call`` does that only the door may do, or None."""
    func = call.func
    if isinstance(func, ast.Name) and func.id == "open":
        if call.args and ast.unparse(call.args[0]) == "os.devnull":
            return None  # writes that go nowhere (a closed stdout)
        mode = _mode(call, 1)
        return f"open(..., {mode!r})" if mode and WRITE_MODES & set(mode) else None
    if not isinstance(func, ast.Attribute):
        return None
    owner = func.value.id if isinstance(func.value, ast.Name) else None
    if owner == "tempfile":
        return f"tempfile.{func.attr}"
    if owner in MODULE_CALLS and func.attr in MODULE_CALLS[owner]:
        return f"{owner}.{func.attr}"
    if owner in MODULE_CALLS or owner == "os":
        return None
    if func.attr == "open":
        mode = _mode(call, 0)
        return f".open({mode!r})" if mode and WRITE_MODES & set(mode) else None
    if func.attr in ("to_csv", "to_parquet") and (not (call.args or call.keywords) or (
            call.args and isinstance(call.args[0], ast.Name) and call.args[0].id == "fh")):
        return None  # to a string, or into the file the door opened (``write_atomic(path, lambda fh: ...)``)
    if func.attr == "replace" and len(call.args) == 1 and not call.keywords:  # Path.replace (str.replace takes 2)
        return ".replace(path)"
    return f".{func.attr}(...)" if func.attr in METHODS else None


def offences(source: str, name: str) -> list[str]:
    return [f"{name}:{node.lineno}: {what}" for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Call) and (what := _offence(node))]


def test_no_module_but_the_door_writes_deletes_or_makes_a_temporary_file():
    found = []
    for path in sorted((ROOT / "bench").rglob("*.py")):
        if path != DOOR:
            found += offences(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    assert not found, "write through bench.core.paths instead:\n" + "\n".join(found)


@pytest.mark.parametrize("source", [
    "open(p, 'w')", "open(p, mode='ab')", "p.open('x')", "p.write_text('a')", "p.write_bytes(b'')",
    "shutil.copy2(a, b)", "shutil.rmtree(d)", "os.replace(a, b)", "os.rename(a, b)", "tempfile.mkstemp()",
    "tempfile.TemporaryDirectory()", "frame.to_csv(path)", "frame.to_parquet(path, index=False)", "tmp.replace(out)",
    "p.unlink()", "os.link(a, b)"])
def test_the_scan_finds_each_kind_of_writer(source):
    assert offences(source, "x.py")


@pytest.mark.parametrize("source", ["open(p)", "open(p, 'rb')", "open(os.devnull, 'w')", "p.open()", "s.replace('a', 'b')", "frame.to_csv()", "frame.to_csv(fh, index=False)",
                                    "os.path.join(a, b)", "os.fstat(fd)"])
def test_the_scan_lets_reads_and_lookalikes_pass(source):
    assert not offences(source, "x.py")


# ------------------------------------------------------------------------------ the door's writers, by behaviour

def _enospc(*args):
    raise OSError(28, "No space left on device")


def test_a_killed_or_full_whole_file_write_keeps_the_previous_file_and_no_temporary(tmp_path):
    from bench.core import paths
    from bench.core.errors import UsageError

    out = tmp_path / "x.csv"
    out.write_bytes(b"previous export\n")

    def killed(fh):
        fh.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        paths.write_atomic(out, killed)
    with pytest.raises(UsageError, match=r"cannot write .*x.csv: No space left"):
        paths.write_output(out, b"new", writer=_enospc)
    assert out.read_bytes() == b"previous export\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.csv"]


def test_two_history_adds_of_one_run_at_once_add_it_once(tmp_path, monkeypatch):
    import shutil
    import threading
    import time

    from bench.regression.history import entries

    run = shutil.copytree(ROOT / "reports" / "baselines" / "smoke-cpu", tmp_path / "run")
    slow = entries.write_atomic

    def write_slowly(*args, **kwargs):  # both would find no entry and write one each, without the lock
        time.sleep(0.3)
        return slow(*args, **kwargs)

    monkeypatch.setattr(entries, "write_atomic", write_slowly)
    added = []
    threads = [threading.Thread(target=lambda c=c: added.append(entries.add(run, tmp_path / "h", commit=c)[1]))
               for c in ("a" * 40, "b" * 40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(added) == [False, True]
    assert len(list((tmp_path / "h").glob("run-*.json"))) == 1


def test_a_sweep_name_outside_runs_is_refused_before_anything_is_made(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    from sweep_helpers import write_sweep

    from bench import cli

    monkeypatch.chdir(tmp_path)
    for name in ("../../../escaped", str(tmp_path / "abs")):
        sweep = write_sweep(tmp_path / "s.toml", tiny_checkpoint)
        sweep.write_text(sweep.read_text().replace('name = "test"', f'name = "{name}"', 1))
        capsys.readouterr()
        assert cli.main(["run", "--sweep", str(sweep), "--quiet"]) == 2
        assert "outside runs" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]


def _fake_save(seen: list):
    def save(model, processor, directory):
        from bench.backends.transformers.checkpoints import MARKER

        seen.append((directory / MARKER).is_file())  # the marker is there before any weight
        (directory / "model.safetensors").write_bytes(b"weights")
    return save


def test_a_checkpoint_is_staged_marker_first_and_an_existing_one_needs_force(tmp_path):
    from bench.backends.transformers import checkpoints
    from bench.core.errors import UsageError

    seen: list[bool] = []
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "old.bin").write_bytes(b"old")
    with pytest.raises(UsageError, match="is not empty; accepted: .*--force"):
        checkpoints.make_tiny_checkpoint(target, save=_fake_save(seen))
    assert sorted(p.name for p in target.iterdir()) == ["old.bin"]
    checkpoints.make_tiny_checkpoint(target, save=_fake_save(seen), force=True)
    assert sorted(p.name for p in target.iterdir()) == [checkpoints.MARKER, "model.safetensors"]  # replaced whole
    assert seen == [True]
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UsageError, match="symbolic link"):
        checkpoints.make_tiny_checkpoint(link, save=_fake_save(seen), force=True)
    assert not (tmp_path / "elsewhere").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "link"]  # no staging left behind


def _ov_part(tmp: Path):
    """A one-layer part, a fake loaded model around a checkpoint folder, and the backend: converts in a second."""
    from types import SimpleNamespace

    import torch

    from bench.backends.openvino.backend import OpenVINOBackend
    from bench.backends.openvino.config import OpenVINOSettings

    ckpt = tmp / "ckpt"
    ckpt.mkdir(exist_ok=True)
    (ckpt / "model.safetensors").write_bytes(b"weights-1")
    loaded = SimpleNamespace(ref=SimpleNamespace(checkpoint="c", weights="random", directory=ckpt),
                             model=SimpleNamespace(config=SimpleNamespace(to_json_string=lambda use_diff: "{}")))
    torch.manual_seed(0)
    return OpenVINOBackend(OpenVINOSettings(cache_dir=tmp / "ir")), loaded, torch.nn.Linear(4, 2), (torch.zeros(1, 4),)


def test_the_ir_cache_is_keyed_by_content_and_a_damaged_or_foreign_entry_is_converted_again(tmp_path):
    ov = pytest.importorskip("openvino")
    from bench.backends.openvino.backend import checkpoint_digests

    backend, loaded, module, example = _ov_part(tmp_path)

    def ir():
        return backend.ir(ov, loaded, "lm_head", module, example, (1,), "f32", checkpoint_digests(loaded))

    first = ir()
    assert first.converted and first.path is not None and not ir().converted
    weights = first.path.with_suffix(".bin")
    weights.write_bytes(b"\0" * weights.stat().st_size)  # damaged, same size
    with pytest.warns(UserWarning, match="damaged or foreign .*do not match"):
        assert ir().converted
    outside = tmp_path / "outside.xml"
    outside.write_bytes(first.path.read_bytes())
    first.path.unlink()
    first.path.symlink_to(outside)  # foreign: a link to a file elsewhere
    with pytest.warns(UserWarning, match="damaged or foreign .*symbolic link"):
        assert ir().converted
    assert not ir().converted and outside.read_bytes().startswith(b"<?xml")
    stat = (loaded.ref.directory / "model.safetensors").stat()
    (loaded.ref.directory / "model.safetensors").write_bytes(b"weights-2")  # same size and time, other bytes
    os.utime(loaded.ref.directory / "model.safetensors", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert ir().converted


def test_an_ir_cache_that_cannot_be_written_runs_uncached_and_says_so(tmp_path):
    ov = pytest.importorskip("openvino")
    backend, loaded, module, example = _ov_part(tmp_path)
    (tmp_path / "ir").write_text("a file where the cache folder should be")
    with pytest.warns(UserWarning, match="cannot be written .*ran without caching"):
        entry = backend.ir(ov, loaded, "lm_head", module, example, (1,), "f32", [])
    assert entry.path is None and entry.converted and entry.bin_bytes > 0 and "without caching" in entry.note


def test_a_fifo_or_folder_where_an_image_should_be_is_one_line_never_a_wait(tmp_path):
    from bench.accuracy import annotation_files
    from bench.core.errors import UsageError

    os.mkfifo(tmp_path / "fifo.png")
    (tmp_path / "dir.png").mkdir()
    for name, kind in (("fifo.png", r"a FIFO \(named pipe\)"), ("dir.png", "a directory")):
        with pytest.raises(UsageError, match=f"is {kind}; accepted: a regular file"):
            annotation_files.image_size(tmp_path / name)
