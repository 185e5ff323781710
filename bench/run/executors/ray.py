"""Scale-out on Ray: one Ray task per model-load group, results written by the driver as tasks end.

Each task declares what it uses (one GPU for a CUDA group, ``num_cpus`` cores for a CPU group), so a
sweep spreads over a multi-GPU, multi-node cluster. Workers may be on other nodes, so a task runs its
cells in a temporary directory and returns the records plus the example images as bytes; the driver
appends each record to the run directory with ``store.append``, which keeps the local executor's
guarantees (atomic lines, ``--resume``). A task that dies becomes ``error`` records naming the Ray
error, so the sweep goes on and ``--resume`` re-runs those cells.

The checkpoint (``--model-path``, HF cache or hub) and the dataset must be reachable from every node.
"""

from __future__ import annotations

import contextlib
import io
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from bench.core.errors import UsageError
from bench.core.measure import device_kind
from bench.core.paths import inside, make_dir, private_dir, write_atomic
from bench.results import Record, store
from bench.results.cell import Cell
from bench.run.runner import Progress, RunConfig, groups, marked_record, run_cells

RAY_MISSING = "--executor ray needs the ray extra: pip install 'florence2-bench[ray]'"


class RayExecutor:
    """The ``ray`` executor (``bench.run.executors``): ``run_with_ray`` on the cluster at ``ray_address``."""

    def __init__(self, ray_address: str | None = None) -> None:
        probe(ray_address)  # an address nobody answers at is refused before the run writes anything
        self.ray_address = ray_address

    def run(self, config: RunConfig, cells: list[Cell], out: Path, *, quiet: bool) -> list[Record]:
        return run_with_ray(config, cells, out, ray_address=self.ray_address, quiet=quiet)


@dataclass
class GroupResult:
    """What one Ray task sends back: its records as JSON (``Record.to_dict``; the driver reads them through
    ``Record.from_dict``), the example files, its progress lines and host, or the usage error that stopped it."""

    records: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    progress: list[str] = field(default_factory=list)
    host: str = ""
    usage_error: str | None = None


def run_group(config: RunConfig, cells: list[Cell], num_threads: int | None) -> GroupResult:
    """What one Ray task runs: a group's cells in a scratch directory; records and example files back."""
    if num_threads:
        import torch

        torch.set_num_threads(num_threads)  # use the cores the task declared, not the whole node
    with private_dir("florence2-bench-") as scratch:
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # the driver prints the progress lines
                records = run_cells(config, cells, scratch, quiet=True)
        except UsageError as exc:
            return GroupResult(usage_error=str(exc))
        files = {
            str(p.relative_to(scratch)): p.read_bytes()
            for p in (scratch / "examples").rglob("*")
            if p.is_file()
        }
        log = scratch / store.PROGRESS
        progress = log.read_text(encoding="utf-8").splitlines() if log.is_file() else []
    host = socket.gethostname()
    where = {"ray": {"host": host, "num_threads": num_threads}}  # extra.ray (bench.results.RayHost)
    return GroupResult([{**r.to_dict(), "extra": {**r.extra.to_dict(), **where}} for r in records], files, progress,
                       host)


def run_with_ray(
    config: RunConfig,
    cells: list[Cell],
    out: Path,
    *,
    ray_address: str | None = None,
    quiet: bool = False,
    num_cpus: int = 1,
    max_retries: int = 1,
) -> list[Record]:
    """Run ``cells`` as Ray tasks (one per model group); returns the records written to ``out``."""
    ray = _ray_for(cells)
    owned = not ray.is_initialized()
    if owned:
        connect(ray, ray_address)
    progress = Progress(len(cells), quiet, out)
    by_id = {c.cell_id: c for c in cells}
    written: list[Record] = []

    def emit(record: Record) -> None:
        store.append(out, record)
        written.append(record)
        progress.done(by_id[record.cell_id], record)

    try:
        pending = _submit(ray, config, cells, emit, num_cpus, max_retries)
        while pending:
            [ref], _ = ray.wait(list(pending), num_returns=1)
            group = pending.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayError as exc:
                for cell in group:
                    emit(marked_record(cell, "error", _ray_failure(exc)))
                continue
            if result.usage_error is not None:
                for other in pending:
                    ray.cancel(other)
                raise UsageError(result.usage_error)
            _collect(out, result, emit)
    finally:
        progress.close()
        if owned:
            ray.shutdown()
    return written


def _ray_for(cells: list[Cell]) -> Any:
    """The ray module, once the cells are known to suit it (a CUDA cell names no GPU: Ray assigns one)."""
    try:
        import ray
    except ImportError:
        raise UsageError(RAY_MISSING) from None
    for cell in cells:
        if device_kind(cell.device) == "cuda" and cell.device != "cuda":
            raise UsageError(
                f"device {cell.device!r} with --executor ray; accepted: cuda (Ray assigns the GPU)"
            )
    return ray


def _submit(ray: Any, config: RunConfig, cells: list[Cell], emit: Callable[[Record], None], num_cpus: int,
            max_retries: int) -> dict[Any, list[Cell]]:
    """One task per model group, declaring what it uses (a GPU, or ``num_cpus`` cores); a CUDA group on a
    cluster without a GPU is skipped at once. Returns each task's reference with its group."""
    has_gpu = ray.cluster_resources().get("GPU", 0) >= 1
    remote = ray.remote(run_group)
    pending: dict[Any, list[Cell]] = {}
    for group in groups(cells, config):
        if device_kind(group[0].device) == "cuda":
            if not has_gpu:
                for cell in group:
                    emit(marked_record(cell, "skipped", "the Ray cluster has no GPU"))
                continue
            task = remote.options(num_gpus=1, num_cpus=1, max_retries=max_retries)
            ref = task.remote(config, group, None)
        else:
            task = remote.options(num_cpus=num_cpus, max_retries=max_retries)
            ref = task.remote(config, group, num_cpus)
        pending[ref] = group
    return pending


def _collect(out: Path, result: GroupResult, emit: Callable[[Record], None]) -> None:
    """A finished task's progress lines, example files and records, into the run directory."""
    for line in result.progress:  # the task's own lines (a search's steps), as it ended
        store.append_progress(out, f"{line} [ray task on {result.host}]")
    for rel, data in result.files.items():
        path = out / rel
        if not path.exists():
            inside(out, rel, "example image")  # a name from the task never leads outside the run
            make_dir(path.parent, "example image")
            write_atomic(path, data, what="example image")
    for fields in result.records:
        emit(cast(Record, Record.from_dict(fields)))  # written by run_cells: a record


RAY_ACCEPTED = ("accepted: the address of a running cluster (`ray start --head` prints it), "
                "or no --ray-address for a local Ray instance")


def probe(address: str | None, timeout_s: float = 10.0) -> None:
    """A UsageError at once when nothing listens at a ``host:port`` address (Ray itself retries for minutes)."""
    match = re.fullmatch(r"(?:ray://)?(\[[^\]]+\]|[^:/\s]+):(\d+)", address or "")
    if not match:
        return  # no address (a local instance), "auto", or a form Ray resolves itself
    host, port = match.group(1).strip("[]"), int(match.group(2))
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UsageError(f"cannot reach the Ray cluster at {address!r} ({reason}); {RAY_ACCEPTED}") from None


def connect(ray: Any, address: str | None) -> None:
    """``ray.init``, with an unreachable or malformed address as one UsageError line."""
    probe(address)
    try:
        ray.init(address=address or None)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"cannot connect to the Ray cluster at {address!r} ({first}); {RAY_ACCEPTED}") from None


def _ray_failure(exc: Exception) -> str:
    """One line naming the Ray error and, for an exception raised in the task, its cause."""
    cause = getattr(exc, "cause", None)
    detail = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc).strip()
    return f"Ray task failed ({type(exc).__name__}): {detail.splitlines()[0][:500] if detail else ''}"
