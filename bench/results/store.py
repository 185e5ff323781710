"""The run directory: one JSON line per cell in results.jsonl, appended atomically, plus env.json.

Records are written with a single ``os.write`` of a complete line on a file opened with O_APPEND,
followed by fsync, so a crash mid-sweep can leave at most a truncated *last* line. One rule, ``parse_line``,
decides what a record is, for the reader, for ``--resume`` and for the tail repair alike: a torn line is
skipped by the reader (and counted), is not a finished cell for ``--resume``, and is cut by the repair; a
complete record that lost only its newline is a record for all three (the repair adds the newline), so a
finished result is never dropped. A run holds an exclusive lock on its directory (``run_lock``).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import warnings
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import Any

from bench.core.inputs import parse_json
from bench.core.paths import (
    append_line,
    make_dir,
    open_file,
    open_lock,
    open_read,
    open_update,
    read_bytes,
    write_atomic,
)
from bench.results import EXTRA_TABLES, SCALAR_TABLES, Record, is_record, jsonable, well_formed

__all__ = ["EXTRA_TABLES", "SCALAR_TABLES", "Record", "well_formed"]  # their home is bench.results

try:
    import fcntl
except ImportError:  # not POSIX: no lock, as before
    fcntl = None  # type: ignore[assignment]

RESULTS = "results.jsonl"
ENV = "env.json"
REPORT = "report.html"
PROGRESS = "progress.log"  # every progress line as it is printed: a stopped capacity search keeps its steps


_SCALARS = (int, float, str, bool, type(None))


def append(run_dir: Path, record: Record, writer=os.write) -> None:
    """Append one record as one line; atomic with respect to crashes of this process.

    ``writer`` is ``os.write`` (the seam where tests inject a full disk); a link at results.jsonl is refused.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / RESULTS
    repair_tail(path)
    append_line(path, record.to_json(), "results file", writer, sync=True)


def append_progress(run_dir: Path, line: str, writer=os.write) -> None:
    """Append one progress line (a cell's end, a capacity search's step) to progress.log as it is printed,
    so that a run stopped mid-cell keeps what that cell had measured; a link there is refused."""
    run_dir.mkdir(parents=True, exist_ok=True)
    append_line(run_dir / PROGRESS, line, "progress log", writer)


def parse_line(line: bytes | str) -> dict[str, Any] | None:
    """The record a results.jsonl line holds, as parsed JSON, or None (torn, not UTF-8, not JSON, or not a
    record: ``bench.results.is_record``). ``Record.from_dict`` makes it a typed record."""
    try:
        text = line.decode("utf-8") if isinstance(line, bytes) else line
        value = parse_json(text)
    except ValueError:  # not UTF-8, not JSON, or nested deeper than inputs.MAX_NESTING
        return None
    return value if is_record(value) else None


def repair_tail(path: Path) -> None:
    """Make the file end with a newline before the next append, keeping every complete record.

    A last line without its newline is either a record whose writer died between the JSON and the
    newline (completed here, since ``--resume`` already counts it as done) or a torn write (cut here).
    """
    if not os.path.lexists(path):
        return
    if path.is_dir() and not path.is_symlink():
        raise _is_dir(path)
    with open_update(path, "results file") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            return
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) == b"\n":
            return
        fh.seek(0)
        data = fh.read()
        start = data.rfind(b"\n") + 1
        if parse_line(data[start:]) is not None:
            fh.seek(0, os.SEEK_END)
            fh.write(b"\n")
        else:
            fh.truncate(start)
            warnings.warn(f"{path}: removed a torn line at the end ({len(data) - start} bytes, a write killed midway)",
                          stacklevel=2)
        fh.flush()
        os.fsync(fh.fileno())


def records(run_dir: Path, only: Collection[str] | None = None) -> list[Record]:
    """All complete records of a run directory, in the order written, typed and in the current schema's meaning.

    Lines that are not records (a torn write, bytes that are not UTF-8, JSON that is not a record) are
    skipped with one warning that counts them: a damaged line never makes the directory unreadable.
    ``only``: the fields a reader reads (``Record.from_checked``): each line is checked whole as always, but
    only these are typed (compare reads two runs of 100,000 cells).
    """
    path = Path(run_dir) / RESULTS
    if path.is_dir() and not path.is_symlink():
        raise _is_dir(path)
    if not os.path.lexists(path):
        return []
    typed: list[Record] = []
    bad = []
    only = None if only is None else frozenset(only)
    for n, line in enumerate(_lines(path), 1):
        if not line.strip():
            continue
        record = parse_line(line)
        if record is None:
            bad.append(n)
        else:  # typed as it is read: a run's parsed JSON is never held whole (100k records: gigabytes)
            # older schemas in today's meaning, or one clear refusal (bench.results.schema.upgrade)
            typed.append(Record.from_checked(record, path, only))  # parse_line has checked it: once, not twice
    if bad:
        shown = ", ".join(map(str, bad[:5])) + (", ..." if len(bad) > 5 else "")
        warnings.warn(
            f"{path}: skipped {len(bad)} unreadable line(s) (line {shown}): a torn line from a killed "
            "write, or text that is not a record",
            stacklevel=2,
        )
    return typed


def _lines(path: Path) -> Iterator[bytes]:
    """The file's lines as ``bytes.splitlines`` cuts them, read a line at a time: a 100,000-cell run is
    640 MB of JSON, never held whole."""
    from bench.core.errors import UsageError

    with open_read(path, "results file") as fh:
        try:
            for chunk in fh:
                yield from chunk.splitlines()
        except OSError as exc:
            raise UsageError(f"cannot read results file {path}: {exc.strerror}; accepted: a readable file") from None


# A cell whose latest record has one of these statuses is done: --resume appends nothing for it.
# ``error`` and ``oom`` are attempts that failed; --resume tries them again (the newest record wins).
FINAL_STATUSES = ("ok", "skipped")


def finished_cells(run_dir: Path) -> set[str]:
    """Cell ids that ``--resume`` must not run again (their latest record is ok or skipped)."""
    return {cell_id for cell_id, r in latest_by_cell(records(run_dir)).items() if r.status in FINAL_STATUSES}


def latest_by_cell(records: Iterable[Record]) -> dict[str, Record]:
    """The last record of each cell (a resumed run may have retried failed cells)."""
    return {r.cell_id: r for r in records}


def _is_dir(path: Path) -> Exception:
    from bench.core.errors import UsageError

    return UsageError(f"{path} is a directory; accepted: a run directory whose {path.name} is a regular file")


def write_env(run_dir: Path, env: dict[str, Any]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(run_dir / ENV, json.dumps(env, indent=2, sort_keys=True, default=jsonable), what="environment file")


# env.json's sections and their shapes, as bench.run.environment.fingerprint writes them: a table of scalars,
# except the few lists named in ENV_LISTS. Anything else is dropped with a warning where it is read, so
# no reader of env.json (history, report, compare, --resume) ever meets a wrong type.
ENV_TABLES = ("cpu", "os", "python", "libraries", "torch", "gpu", "git", "env_vars", "errors")
ENV_TEXT = ("timestamp_utc", "hostname")
ENV_LISTS = {("gpu", "names"): str, ("gpu", "devices"): dict}


def checked_env(env: dict[str, Any], path: Path) -> dict[str, Any]:
    """env.json with every field of the wrong type dropped, one warning naming them."""
    dropped: list[str] = []
    out = dict(env)
    for key in ENV_TEXT:
        if key in out and not isinstance(out[key], str):
            dropped.append(key)
            del out[key]
    for key in ENV_TABLES:
        if out.get(key) is None:
            continue
        if not isinstance(out[key], dict):
            dropped.append(key)
            del out[key]
            continue
        table = dict(out[key])
        for name, value in out[key].items():
            kind = ENV_LISTS.get((key, name))
            ok = (isinstance(value, list) and all(isinstance(v, kind) for v in value)) if kind else isinstance(
                value, _SCALARS)
            if not ok:
                dropped.append(f"{key}.{name}")
                del table[name]
        out[key] = table
    if "sweep" in out and not isinstance(out["sweep"], dict):
        dropped.append("sweep")
        del out["sweep"]
    if "resumes" in out and not (isinstance(out["resumes"], list) and all(isinstance(r, dict) for r in out["resumes"])):
        dropped.append("resumes")
        del out["resumes"]
    if dropped:
        warnings.warn(f"{path}: ignored field(s) of the wrong type: {', '.join(dropped[:8])}", stacklevel=3)
    return out


def read_env(run_dir: Path) -> dict[str, Any]:
    """env.json as a dict: {} when there is none, and {} with a warning when it is damaged or not an object;
    fields of the wrong type are dropped with a warning (``checked_env``)."""
    path = Path(run_dir) / ENV
    if not os.path.lexists(path):
        return {}
    try:
        env = parse_json(read_bytes(path, "environment file").decode("utf-8"))
    except ValueError as exc:  # not UTF-8, not JSON, or nested deeper than inputs.MAX_NESTING
        warnings.warn(f"{path}: ignored, not readable JSON ({exc})", stacklevel=2)
        return {}
    if not isinstance(env, dict):
        warnings.warn(f"{path}: ignored, a JSON {type(env).__name__} where an object was expected", stacklevel=2)
        return {}
    return checked_env(env, path)


# ------------------------------------------------------------------------------------ run lock

LOCK = ".lock"
_held: set[Path] = set()  # run directories this process holds: taking one again is a no-op (re-entrant)


def _holder(fd: int, wait_s: float = 1.0) -> str:
    """The lock holder's "pid N on HOST"; a holder that has just taken the lock writes it a moment later."""
    deadline = time.monotonic() + wait_s
    while True:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
        if text or time.monotonic() >= deadline:
            return text or "pid unknown"
        time.sleep(0.02)


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[Path]:
    """Hold the run directory exclusively; a second run into it is a UsageError naming the holder.

    The lock is ``flock`` on ``DIR/.lock``: the kernel drops it when the holder dies (even by SIGKILL),
    so a killed run never leaves a stale lock. The holder's pid is written into the file for the message.
    """
    from bench.core.errors import UsageError

    run_dir = make_run_dir(run_dir)
    key = run_dir.resolve()
    if key in _held:
        yield run_dir
        return
    path = run_dir / LOCK
    try:
        fd = open_lock(path, "run lock")
    except OSError as exc:
        raise UsageError(f"cannot write in run directory {run_dir}: {exc.strerror}; accepted: a writable --out") from None
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                raise UsageError(
                    f"run directory {run_dir} is in use by another run ({holder}); accepted: wait for it "
                    "to end, or another --out"
                ) from None
        owner = f"pid {os.getpid()} on {socket.gethostname()}".encode()
        os.pwrite(fd, owner, 0)  # written first, then cut to length: the file is never empty once written
        os.ftruncate(fd, len(owner))
        _held.add(key)
        try:
            yield run_dir
        finally:
            _held.discard(key)
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def lock_holder(run_dir: Path) -> str | None:
    """Who holds the run directory's lock ("pid N on HOST"), or None when no run is writing it."""
    path = Path(run_dir) / LOCK
    if fcntl is None or not path.is_file() or path.is_symlink():
        return None
    fd = open_file(path, os.O_RDONLY, "run lock")
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder(fd, wait_s=0.2)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def make_run_dir(run_dir: Path) -> Path:
    """Create the run directory, or say in one line why it cannot be one."""
    from bench.core.errors import UsageError

    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"--out {run_dir} is a file, not a directory; accepted: a new or existing run directory")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UsageError(
            f"cannot create run directory {run_dir}: a part of its path is a file; accepted: a directory path"
        ) from None
    except OSError as exc:
        raise UsageError(
            f"cannot create run directory {run_dir}: {exc.strerror}; accepted: a writable directory path"
        ) from None
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise UsageError(f"run directory {run_dir} is not writable; accepted: a writable directory path")
    return run_dir


def flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts become dotted columns (``latency_ms.p50``); lists stay as they are."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


LOAD_CHUNK = 5_000
"""Rows made into one DataFrame at a time by ``load``: only this many records' flattened dicts are held."""


def load(run_dir: str | os.PathLike, cell: Any = None):
    """A run directory as a pandas DataFrame with flattened columns (one row per cell); ``cell`` maps each
    flattened value on the way in (``export``: lists as JSON text). Each record's JSON is made from its typed
    record one at a time and ``LOAD_CHUNK`` rows become a frame at once (columns in order of first appearance,
    as one frame of every row has them), so 100,000 records' dicts are never held together."""
    import pandas as pd

    latest = list(latest_by_cell(records(Path(run_dir))).values())
    frames = []
    for start in range(0, len(latest), LOAD_CHUNK):
        rows = [flatten(record.to_dict()) for record in latest[start : start + LOAD_CHUNK]]
        frames.append(pd.DataFrame(rows if cell is None else [{k: cell(v) for k, v in row.items()} for row in rows]))
    if len(frames) < 2:
        return frames[0] if frames else pd.DataFrame()
    # a column's type as the whole column settles it (all None in one chunk, NaN for a missing key in another)
    return pd.concat(frames, ignore_index=True, sort=False).infer_objects()


def _one_type_a_column(frame: Any) -> Any:
    """The frame with each column that mixes text with other values (``compile``: False, True or "graphs")
    as text, as the CSV writes it: Parquet holds one type per column."""
    from pandas.api.types import is_object_dtype

    for name in [name for name, dtype in frame.dtypes.items() if is_object_dtype(dtype)]:
        kinds = {type(v) for v in frame[name] if v is not None and v == v}  # v != v: NaN, a missing value
        if str in kinds and len(kinds) > 1:
            frame[name] = [v if v is None or v != v else str(v) for v in frame[name]]
    return frame


def export(run_dir: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Write ``load(run_dir)`` as CSV or Parquet (by suffix); list and dict cells become JSON text."""
    from bench.core.errors import UsageError

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise UsageError(
            f"cannot export to {suffix or 'a file without suffix'!r} ({path}); accepted: .csv, .parquet"
        )
    if not (Path(run_dir) / RESULTS).exists():
        raise UsageError(
            f"not a run directory: {run_dir} (no {RESULTS}); accepted: directories written by run"
        )
    frame = load(run_dir, lambda v: json.dumps(v, default=jsonable) if isinstance(v, (list, dict)) else v)
    if suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise UsageError("Parquet export needs pyarrow: pip install 'florence2-bench[parquet]'") from None
    make_dir(path.parent, "output")
    # written whole to a temporary and renamed: a killed export or a full disk keeps the previous one
    return write_atomic(path, lambda fh: frame.to_csv(fh, index=False) if suffix == ".csv"
                        else _one_type_a_column(frame).to_parquet(fh, index=False), what="output")
