"""The door for files (bench/paths.py): no module of bench/ but the door writes, replaces, deletes or makes a
temporary file by itself. An AST scan, so a new writer that bypasses the door fails here, naming its line."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOOR = ROOT / "bench" / "paths.py"

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
    assert not found, "write through bench.paths instead:\n" + "\n".join(found)


@pytest.mark.parametrize("source", [
    "open(p, 'w')", "open(p, mode='ab')", "p.open('x')", "p.write_text('a')", "p.write_bytes(b'')",
    "shutil.copy2(a, b)", "shutil.rmtree(d)", "os.replace(a, b)", "os.rename(a, b)", "tempfile.mkstemp()",
    "tempfile.TemporaryDirectory()", "frame.to_csv(path)", "frame.to_parquet(path, index=False)", "tmp.replace(out)",
    "p.unlink()", "os.link(a, b)"])
def test_the_scan_finds_each_kind_of_writer(source):
    assert offences(source, "x.py")


@pytest.mark.parametrize("source", ["open(p)", "open(p, 'rb')", "p.open()", "s.replace('a', 'b')", "frame.to_csv()", "frame.to_csv(fh, index=False)",
                                    "os.path.join(a, b)", "os.fstat(fd)"])
def test_the_scan_lets_reads_and_lookalikes_pass(source):
    assert not offences(source, "x.py")
