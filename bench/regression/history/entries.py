"""The history store: one JSON file per run, with its commit, date, machine class and records.

A history directory holds ``run-<date>-<commit>-<id>.json`` files and nothing else that matters (other
files are ignored, so a trend report or a README may live beside them). Each file is written once,
atomically, under a name no other run can take, so a history is safe to keep in a git branch or a CI
cache, and two jobs adding different runs never clash.

A run's identity (``run_id``) is the SHA-256 of its content: the records as ``bench.results.store`` reads them
(sorted by cell id) and its env.json, serialised with sorted keys (for a pytest-benchmark file, the
whole file). Adding the same run twice, from the same place or a copy, finds the same id and changes
nothing, whatever ``--commit``/``--date`` say; a resumed run directory has new records, so a new id.

Runs are only compared within a machine class (CPU model and core count, GPU names, torch and
transformers major versions): a timing from another machine or library generation is not a baseline.
"""

from __future__ import annotations

import hashlib
import json
import re
import typing
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.core.errors import UsageError
from bench.core.inputs import conforms, parse_json
from bench.core.numbers import is_finite
from bench.core.paths import inside, locked, open_input, read_text, write_atomic
from bench.results import Record, dig, store

FORMAT = "florence2-bench-history/1"
ENTRY_GLOB = "run-*.json"
DROPPED_FIELDS = ("examples",)
"""Record fields not kept: ``examples`` points at image files of the run directory, which a history does
not copy."""

READ_FIELDS = frozenset((
    "cell_id", "status", "error", "schema", "variant", "checkpoint", "weights", "task", "dataset", "n_images", "device",
    "dtype", "batch_size", "attn", "compile", "num_beams", "max_new_tokens", "scenario", "backend", "samples_ms",
    "latency_ms", "throughput", "memory", "accuracy", "extra",
))
READ_EXTRA = ("pytest_benchmark",)
"""What a loaded entry types of a stored record, and of its ``extra``: the checks, steps and trend page read a
record's judged figures, samples, axes, status and error, never its stage times, energy, server curve, LoadGen logs
or output texts; a 1,000-run history of 100 cells holds 100,000 records (``load``). Only what is held must be well
formed: a field no command reads is dropped unchecked."""


EXTRA = "extra"


def _held(record: dict[str, Any]) -> dict[str, Any]:
    """A stored record's JSON as a loaded entry types it (``READ_FIELDS``, ``extra`` cut to ``READ_EXTRA``): what
    stays is then checked as every record is (``store.well_formed``)."""
    return {k: _read_extra(v) if k == EXTRA else v for k, v in record.items() if k in READ_FIELDS}


def _read_extra(extra: Any) -> Any:
    return {k: v for k, v in extra.items() if k in READ_EXTRA} if isinstance(extra, dict) else extra


ACCEPTED_SOURCE = (
    "a run directory written by `florence2-bench run --out DIR` or a pytest-benchmark JSON file "
    "(--benchmark-json / --benchmark-autosave)"
)


@dataclass(frozen=True)
class MachineClass:
    """What makes timings comparable: runs are only judged against runs of the same class."""

    cpu: str | None
    cores: int | None
    gpu: str | None
    torch: str | None  # major version
    transformers: str | None  # major version

    @property
    def id(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]

    @property
    def label(self) -> str:
        return " · ".join(
            (
                f"{self.cpu or 'unknown CPU'} ×{self.cores if self.cores is not None else '?'}",
                self.gpu or "no GPU",
                f"torch {self.torch or '?'}",
                f"transformers {self.transformers or '?'}",
            )
        )


@dataclass
class Entry:
    """One run in the history."""

    run_id: str
    commit: str
    date: str  # ISO 8601, UTC
    dirty: bool | None
    source: dict[str, str]  # {"kind": "run-dir" | "pytest-benchmark", "path": ...}
    machine: MachineClass
    env: dict[str, Any]
    records: list[Record]  # a loaded entry's hold ``READ_FIELDS`` alone (``load``); ``add`` writes whole ones
    path: Path | None = field(default=None, compare=False)
    derived: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """What the commands compute from ``records`` once per run and share (``detect.figures``); records are
    not changed once a command has read them."""

    @property
    def short(self) -> str:
        """The commit as people read it (12 characters), marked when the tree was dirty."""
        return self.commit[:12] + ("+dirty" if self.dirty else "")

    def to_json(self) -> str:
        data = {
            "format": FORMAT,
            "run_id": self.run_id,
            "commit": self.commit,
            "date": self.date,
            "dirty": self.dirty,
            "source": self.source,
            "machine": asdict(self.machine),
            "env": self.env,
            "records": [_slim(r.to_dict()) for r in self.records],
        }
        return json.dumps(data, indent=1, sort_keys=True) + "\n"

    def file_name(self) -> str:
        stamp = _parse_date(self.date, "date").strftime("%Y%m%dT%H%M%SZ")
        commit = re.sub(r"[^A-Za-z0-9._-]", "_", self.commit)[:12]
        return f"run-{stamp}-{commit}-{self.run_id[:16]}.json"


# ------------------------------------------------------------------------------------------ sources


@dataclass
class Source:
    """What a source file or directory yields before the history adds commit/date overrides."""

    kind: str
    records: list[Record]
    env: dict[str, Any]
    machine: MachineClass
    commit: str | None
    dirty: bool | None
    date: str | None
    identity: Any  # what run_id hashes


def _major(version: Any) -> str | None:
    match = re.match(r"\s*(\d+)", str(version)) if version else None
    return match.group(1) if match else None


def machine_from_env(env: dict[str, Any]) -> MachineClass:
    """The class of a run from its env.json (bench.run.environment.fingerprint)."""
    names = dig(env, "gpu", "names") or []
    cores = dig(env, "cpu", "usable_cores") or dig(env, "cpu", "logical_cores")
    return MachineClass(
        cpu=dig(env, "cpu", "model"),
        cores=int(cores) if isinstance(cores, int) else None,
        gpu=", ".join(map(str, names)) or None,
        torch=_major(dig(env, "torch", "version") or dig(env, "libraries", "torch")),
        transformers=_major(dig(env, "libraries", "transformers")),
    )


def _slim(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in DROPPED_FIELDS}


def read_run_dir(path: Path) -> Source:
    holder = store.lock_holder(path)
    if holder:
        raise UsageError(f"run directory {str(path)!r} is being written ({holder} holds {store.LOCK}); accepted: a "
                         "finished run (add it when the run has ended)")
    typed = list(store.latest_by_cell(store.records(path)).values())
    if not typed:
        raise UsageError(
            f"run directory {str(path)!r} has no records in {store.RESULTS}; accepted: {ACCEPTED_SOURCE}"
        )
    env = store.read_env(path)
    typed.sort(key=lambda r: r.cell_id)
    records = [r.to_dict() for r in typed]  # as stored: the run's identity
    git = env.get("git") or {}
    return Source(
        kind="run-dir",
        records=typed,
        env=env,
        machine=machine_from_env(env),
        commit=git.get("commit"),
        dirty=git.get("dirty"),
        date=env.get("timestamp_utc"),
        identity={"records": records, "env": env},
    )


PYTEST_BENCHMARK_ENV = "florence2_bench"
"""The key under pytest-benchmark's machine_info where tests/benchmarks/conftest.py puts this project's
environment fingerprint (GPU names and library versions, which pytest-benchmark does not record)."""


def _benchmark_record(bench: dict[str, Any]) -> dict[str, Any]:
    """A pytest-benchmark entry as a record: raw round times become ``samples_ms``."""
    if not isinstance(bench, dict):
        raise ValueError(f"a benchmark entry is a {type(bench).__name__}, not an object")
    stats = bench.get("stats")
    if not isinstance(stats, dict) or not isinstance(bench.get("fullname", bench.get("name")), str):
        raise ValueError("a benchmark without name or stats")
    name = bench.get("fullname") or bench["name"]
    for key in ("median", "mean", "stddev"):
        value = stats.get(key)
        if not (is_finite(value) and (value >= 0 if key == "stddev" else value > 0)):
            raise ValueError(f"benchmark {name!r}: stats.{key} is {value!r}; accepted: a finite number > 0 "
                             "(stddev >= 0), in seconds")
    data = stats.get("data") or []
    if not (isinstance(data, list) and all(is_finite(x) and x > 0 for x in data)):
        raise ValueError(f"benchmark {name!r}: stats.data holds {str(data)[:40]}; accepted: round times, finite "
                         "numbers > 0")
    if not isinstance(stats.get("rounds", 0), int) or not isinstance(bench.get("extra_info") or {}, dict):
        raise ValueError(f"benchmark {name!r}: rounds must be an integer and extra_info an object")
    samples = [float(x) * 1000 for x in data]
    extra = bench.get("extra_info") or {}
    return {
        "cell_id": hashlib.sha256(f"pytest-benchmark:{name}".encode()).hexdigest()[:16],
        "variant": "pytest-benchmark",
        "task": dig(extra, "task") or bench.get("group") or "pytest-benchmark",
        "status": "ok",
        "latency_ms": {
            "p50": float(stats["median"]) * 1000,
            "mean": float(dig(stats, "mean")) * 1000,
            "std": float(stats["stddev"]) * 1000,
            "n": int(stats.get("rounds") or len(samples)),
        },
        "samples_ms": samples,
        "timing": {"per_image": "per benchmark round (pytest-benchmark), not per image"},
        "extra": {"pytest_benchmark": {k: bench.get(k) for k in ("name", "fullname", "group", "params")}},
    }


def _typed(record: dict[str, Any], source: Path) -> Record:
    """A benchmark's record through the one door (its figures checked above: a bad one is never None here)."""
    typed = Record.from_dict(record, source)
    if typed is None:
        raise ValueError("a benchmark that is not a well-formed record")
    return typed


def read_pytest_benchmark(path: Path) -> Source:
    try:
        with open_input(path) as fh:  # the user's file: a link is fine, a FIFO is refused, never a wait
            data = parse_json(fh.read().decode("utf-8"))
        machine_info, benchmarks = data["machine_info"], data["benchmarks"]
        if not isinstance(benchmarks, list) or not benchmarks:
            raise ValueError("no benchmarks")
        for key, value in (("machine_info", machine_info), ("machine_info.cpu", machine_info.get("cpu")),
                           ("commit_info", data.get("commit_info")),
                           (f"machine_info.{PYTEST_BENCHMARK_ENV}", machine_info.get(PYTEST_BENCHMARK_ENV))):
            if value is not None and not isinstance(value, dict):
                raise ValueError(f"{key} is a {type(value).__name__}, not an object")
        for key, value in (("datetime", data.get("datetime")), ("commit_info.id", (data.get("commit_info") or {}).get("id")),
                           ("machine_info.cpu.brand_raw", (machine_info.get("cpu") or {}).get("brand_raw"))):
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{key} is {value!r}, not a string")
        count = (machine_info.get("cpu") or {}).get("count")
        if count is not None and not (isinstance(count, int) and not isinstance(count, bool)):
            raise ValueError(f"machine_info.cpu.count is {count!r}, not an integer")
        env = store.checked_env(machine_info.get(PYTEST_BENCHMARK_ENV) or {}, path)
        records = sorted((_typed(_benchmark_record(b), path) for b in benchmarks), key=lambda r: r.cell_id)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(
            f"{str(path)!r} is not a pytest-benchmark JSON file ({_one(exc)}); accepted: {ACCEPTED_SOURCE}"
        ) from None
    cpu = machine_info.get("cpu") or {}
    machine = machine_from_env(env) if env else MachineClass(None, None, None, None, None)
    machine = MachineClass(
        cpu=machine.cpu or cpu.get("brand_raw"),
        cores=machine.cores or cpu.get("count"),
        gpu=machine.gpu,
        torch=machine.torch,
        transformers=machine.transformers,
    )
    commit_info = data.get("commit_info") or {}
    return Source(
        kind="pytest-benchmark",
        records=records,
        env={"pytest_benchmark_machine_info": machine_info, **env},
        machine=machine,
        commit=commit_info.get("id"),
        dirty=commit_info.get("dirty"),
        date=data.get("datetime"),
        identity=data,
    )


def read_source(path: Path) -> Source:
    """A run directory or a pytest-benchmark JSON file."""
    path = Path(path)
    if path.is_dir():
        return read_run_dir(path)
    if path.is_file() and path.suffix == ".json":
        return read_pytest_benchmark(path)
    raise UsageError(
        f"cannot add {str(path)!r} to a history: not found or not a directory/.json file; accepted: {ACCEPTED_SOURCE}"
    )


# ------------------------------------------------------------------------------------------ the store


def _parse_date(text: str, what: str) -> datetime:
    """An ISO 8601 date or time; a time without zone is taken as UTC."""
    try:
        value = datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"bad {what} {text!r}; accepted: an ISO 8601 date or time such as 2026-11-26 or 2026-11-26T08:04:18Z"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:
        raise UsageError(f"bad {what} {text!r}: outside the dates UTC can hold (years 1 to 9999); accepted: an "
                         "ISO 8601 date or time such as 2026-11-26T08:04:18Z") from None


_COMMIT = re.compile(r"[A-Za-z0-9._/+@-]{1,200}")


def _check_commit(commit: Any, what: str) -> str:
    """A commit as printed in tables and file names: one token, no newline or control character (a newline
    in it could forge lines such as "OK" in the check's output)."""
    if not isinstance(commit, str) or not _COMMIT.fullmatch(commit.strip()):
        raise UsageError(f"bad {what} {str(commit)[:60]!r}; accepted: a commit id or ref (letters, digits and "
                         "._/+@-, at most 200 characters, no spaces or control characters)")
    return commit.strip()


def _one(exc: Exception) -> str:
    return " ".join(str(exc).split())[:200]


def run_id(identity: Any) -> str:
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def add(
    source: Path, history: Path, *, commit: str | None = None, date: str | None = None
) -> tuple[Entry, bool]:
    """Add a run to a history directory (created if missing). Returns the entry and whether it was new.

    ``commit``/``date`` override what the run recorded (a CI checkout may be detached or dirty); without
    them the run's own git commit and start time are used, and a run that has neither is refused.
    """
    history = Path(history)
    if history.exists() and not history.is_dir():
        raise UsageError(f"history {str(history)!r} is a file; accepted: a directory (created if missing)")
    src = read_source(Path(source))
    commit = commit or src.commit
    if not commit:
        raise UsageError(f"no git commit recorded for {str(source)!r}; pass --commit SHA")
    _check_commit(commit, "--commit" if commit != src.commit else f"the commit recorded in {str(source)!r}")
    when = date or src.date
    if not when:
        raise UsageError(f"no date recorded for {str(source)!r}; pass --date YYYY-MM-DD[THH:MM:SS]")
    entry = Entry(
        run_id=run_id(src.identity),
        commit=str(commit).strip(),
        date=_parse_date(when, "--date" if date else "date").isoformat(),
        dirty=src.dirty if commit == src.commit else None,
        source={"kind": src.kind, "path": str(source)},
        machine=src.machine,
        env=src.env,
        records=src.records,
    )
    history.mkdir(parents=True, exist_ok=True)
    with locked(history / HISTORY_LOCK, "history lock"):  # two adds of one run at once: it is added once
        for existing in history.glob(f"run-*-{entry.run_id[:16]}.json"):
            if (found := _readable(existing)) is not None and found.run_id == entry.run_id:
                return found, False
        path = inside(history, entry.file_name(), "history entry")
        write_atomic(path, entry.to_json(), what="history entry")
    entry.path = path
    return entry, True


HISTORY_LOCK = ".lock"


ACCEPTED_HISTORY = "a directory of run-*.json files written by `florence2-bench history add --history DIR`"


def _read_entry(path: Path) -> Entry:
    try:
        data = parse_json(read_text(path, "history entry"))
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"format {found!r}, not {FORMAT!r}")
        records = data["records"]
        held = [_held(r) for r in records] if isinstance(records, list) and all(isinstance(r, dict) for r in records) else None
        if held is None or not all(store.well_formed(r) for r in held):
            raise ValueError("records must be a list of records, each field read of its declared type")
        machine, env, source = data["machine"], data.get("env") or {}, dig(data, "source") or {}
        if not (isinstance(machine, dict) and isinstance(env, dict) and isinstance(source, dict)
                and isinstance(data["run_id"], str) and data.get("dirty") in (None, True, False)):
            raise ValueError("machine, env and source must be objects, run_id a string, dirty a boolean")
        fields = typing.get_type_hints(MachineClass)
        if set(machine) != set(fields) or not all(conforms(machine[k], fields[k]) for k in fields):
            raise ValueError(f"machine must have {', '.join(fields)} of their types")
        return Entry(
            run_id=data["run_id"],
            commit=_check_commit(data["commit"], "commit"),
            date=_parse_date(data["date"], "date").isoformat(),
            dirty=data.get("dirty"),
            source={str(k): str(v) for k, v in source.items()},
            machine=MachineClass(**machine),
            env=store.checked_env(env, path),
            records=[Record.from_checked(r, path) for r in held],  # well formed: checked above
            path=path,
        )
    except (OSError, ValueError, KeyError, TypeError, UsageError) as exc:
        raise UsageError(
            f"history file {str(path)!r} is not a history entry ({_one(exc)}); accepted: {ACCEPTED_HISTORY}"
        ) from None


def _readable(path: Path, damaged: list[UsageError] | None = None) -> Entry | None:
    """A stored entry, or None: one damaged file never stops the commands reading the rest. Its error is
    added to ``damaged`` when given (the caller decides), else warned about."""
    try:
        return _read_entry(path)
    except UsageError as exc:
        if damaged is None:
            warnings.warn(f"skipped: {exc}", stacklevel=3)
        else:
            damaged.append(exc)
        return None


def load(history: Path) -> list[Entry]:
    """Every run of a history directory, oldest first (by date, then commit and id)."""
    history = Path(history)
    if not history.is_dir():
        problem = "is not a directory" if history.exists() else "does not exist"
        raise UsageError(f"history directory {str(history)!r} {problem}; accepted: {ACCEPTED_HISTORY}")
    damaged: list[UsageError] = []
    entries = [e for p in sorted(history.glob(ENTRY_GLOB)) if (e := _readable(p, damaged)) is not None]
    if damaged and not entries:
        raise damaged[0]  # nothing readable: the one line names the first damaged file
    for exc in damaged:
        warnings.warn(f"skipped: {exc}", stacklevel=2)
    if not entries:
        raise UsageError(f"history directory {str(history)!r} holds no runs; accepted: {ACCEPTED_HISTORY}")
    return sorted(entries, key=lambda e: (e.date, e.commit, e.run_id))
