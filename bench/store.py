"""The run directory: one JSON line per cell in results.jsonl, appended atomically, plus env.json.

Records are written with a single ``os.write`` of a complete line on a file opened with O_APPEND,
followed by fsync, so a crash mid-sweep can leave at most a truncated *last* line; the reader skips
such a line (and says so) instead of failing, and ``--resume`` re-runs that cell.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.schema import SCHEMA_VERSION, upgrade

RESULTS = "results.jsonl"
ENV = "env.json"
REPORT = "report.html"


@dataclass
class Record:
    """One cell's result: the fields of shared/CONTRACT.md, plus a few labelled extras."""

    cell_id: str
    variant: str
    checkpoint: str
    weights: str
    task: str
    dataset: str
    n_images: int
    device: str
    dtype: str
    batch_size: int
    attn: str
    compile: bool
    num_beams: int
    max_new_tokens: int
    status: str = "ok"
    error: str | None = None
    params: int | None = None
    latency_ms: dict[str, Any] | None = None  # request latency: what one request waits
    time_per_image_ms: dict[str, Any] | None = None  # amortised: batch wall time / batch size
    stages_ms: dict[str, float] | None = None
    throughput: dict[str, float] | None = None
    memory: dict[str, Any] | None = None
    energy: dict[str, Any] | None = None
    accuracy: dict[str, float] | None = None
    samples_ms: list[float] = field(default_factory=list)
    gen_tokens_mean: float | None = None
    # extras (documented in README): how the figures were obtained
    scenario: str = "single-stream"
    server: dict[str, Any] | None = None  # server cells only
    capacity_qps: float | None = None  # server cells with qps "auto"
    settings: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, Any] = field(default_factory=dict)
    unstable: bool | None = None
    examples: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    schema: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, default=_jsonable)


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def append(run_dir: Path, record: Record) -> None:
    """Append one record as one line; atomic with respect to crashes of this process."""
    run_dir.mkdir(parents=True, exist_ok=True)
    line = (record.to_json() + "\n").encode()
    path = run_dir / RESULTS
    _repair_tail(path)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def _repair_tail(path: Path) -> None:
    """Drop a torn last line (left by a kill mid-write) so new lines stay one JSON object each."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open("rb+") as fh:
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) == b"\n":
            return
        data = path.read_bytes()
        fh.truncate(data.rfind(b"\n") + 1)


def read_records(run_dir: Path) -> list[dict[str, Any]]:
    """All complete records of a run directory, in the order written, in the current schema's meaning."""
    path = Path(run_dir) / RESULTS
    if not path.exists():
        return []
    records = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            warnings.warn(f"{path}:{n}: skipping a torn line (a run was killed mid-write)", stacklevel=2)
    return [upgrade(r, path) for r in records]  # older schemas in today's meaning, or one clear refusal


def latest_by_cell(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The last record of each cell (a resumed run may have retried failed cells)."""
    return {r["cell_id"]: r for r in records}


def write_env(run_dir: Path, env: dict[str, Any]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / (ENV + ".tmp")
    tmp.write_text(json.dumps(env, indent=2, sort_keys=True, default=_jsonable))
    os.replace(tmp, run_dir / ENV)


def read_env(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / ENV
    return json.loads(path.read_text()) if path.exists() else {}


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


def load(run_dir: str | os.PathLike):
    """A run directory as a pandas DataFrame with flattened columns (one row per cell)."""
    import pandas as pd

    rows = [flatten(r) for r in latest_by_cell(read_records(Path(run_dir))).values()]
    return pd.DataFrame(rows)


def export(run_dir: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Write ``load(run_dir)`` as CSV or Parquet (by suffix); list and dict cells become JSON text."""
    from bench.errors import UsageError

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
    frame = load(run_dir)
    for column in frame.columns:
        frame[column] = [
            json.dumps(v, default=_jsonable) if isinstance(v, (list, dict)) else v for v in frame[column]
        ]
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        frame.to_csv(path, index=False)
        return path
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise UsageError("Parquet export needs pyarrow: pip install 'florence2-bench[parquet]'") from None
    frame.to_parquet(path, index=False)
    return path
