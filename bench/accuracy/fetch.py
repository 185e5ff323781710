"""Dataset manifests, downloads and safe extraction into the dataset cache.

Layout of the cache (``$FLORENCE2_BENCH_DATA``, default ``~/.cache/florence2-bench/datasets``)::

    _downloads/NAME/FILE.part   a download in progress (resumed with an HTTP Range request)
    _downloads/NAME/FILE        a complete download whose size and sha256 were checked
    .NAME.staging/              extraction in progress (deleted and redone after a crash)
    NAME/                       the dataset, renamed into place in one step once fully extracted
    NAME/READY                  written last: a dataset without it is never used

Manifests are TOML files, one per dataset, in ``bench/datasets_manifest/`` (shipped inside the package, so
an installed wheel has them; the checkout's top-level ``datasets_manifest/`` is a link to it), or in
``$FLORENCE2_BENCH_MANIFESTS``.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import shutil
import stat
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from bench.core.errors import UsageError, choice_error
from bench.core.inputs import parse_json, parse_toml
from bench.core.paths import (
    Writer,
    archive_link,
    create_new,
    inside,
    link_or_copy,
    locked,
    open_append,
    open_read,
    plain_name,
    read_text,
    remove_file,
    remove_tree,
    rename,
    write_all,
    write_atomic,
    write_error,
)

DATA_ENV = "FLORENCE2_BENCH_DATA"
MANIFEST_ENV = "FLORENCE2_BENCH_MANIFESTS"
READY = "READY"
DOWNLOADS = "_downloads"
_CHUNK = 1 << 20
_ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


@dataclass(frozen=True)
class FileSpec:
    """One file of a dataset: where it comes from and what it must hash to ("" = not known)."""

    name: str
    url: str
    size: int = 0
    sha256: str = ""
    extract: bool = False


@dataclass(frozen=True)
class Manifest:
    """A dataset's manifest (see datasets_manifest/README.md for every field)."""

    name: str
    description: str
    license: str
    homepage: str
    tasks: tuple[str, ...]
    format: str
    subset: str
    files: tuple[FileSpec, ...] = ()
    requires: tuple[str, ...] = ()
    splits: tuple[str, ...] = ()
    embedded: bool = False
    path: Path | None = None

    @property
    def size(self) -> int | None:
        """Total download size in bytes; None when a file's size is not known."""
        sizes = [f.size for f in self.files]
        return None if any(s <= 0 for s in sizes) else sum(sizes)


@dataclass
class VerifyReport:
    """What ``verify`` found; ``ok`` is False on a missing dataset, a missing file or a bad checksum."""

    name: str
    ready: bool
    ok: bool
    lines: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join(self.lines)


@dataclass(frozen=True)
class DatasetRow:
    """One row of ``datasets list``."""

    name: str
    tasks: tuple[str, ...]
    size_bytes: int | None
    license: str
    fetched: str


# --------------------------------------------------------------------------------------------
# manifests and the cache


def manifest_dir() -> Path:
    env = os.environ.get(MANIFEST_ENV)
    return Path(env) if env else Path(__file__).resolve().parent.parent / "datasets_manifest"


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get(DATA_ENV)
    if env and os.path.lexists(env) and not os.path.isdir(env):
        raise UsageError(f"{DATA_ENV}={env} is not a folder; accepted: a folder for the dataset cache (or unset: "
                         "~/.cache/florence2-bench/datasets)")
    return Path(env) if env else Path.home() / ".cache" / "florence2-bench" / "datasets"


def _parse_manifest(path: Path) -> Manifest:
    try:
        raw = parse_toml(path.read_text(encoding="utf-8"))
        files = tuple(
            FileSpec(
                name=plain_name(f["name"], f"file name in dataset manifest {path}"),
                url=f["url"],
                size=int(f.get("size", 0)),
                sha256=f.get("sha256", "").lower(),
                extract=bool(f.get("extract", False)),
            )
            for f in raw.get("files", [])
        )
        return Manifest(
            name=plain_name(raw["name"], f"dataset name in manifest {path}"),
            description=raw["description"],
            license=raw["license"],
            homepage=raw.get("homepage", ""),
            tasks=tuple(raw.get("tasks", ())),
            format=raw["format"],
            subset=raw["subset"],
            files=files,
            requires=tuple(plain_name(r, f"required dataset in manifest {path}") for r in raw.get("requires", ())),
            splits=tuple(raw.get("splits", ())),
            embedded=bool(raw.get("embedded", False)),
            path=path,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UsageError(f"bad dataset manifest {path}: {type(exc).__name__}: {exc}") from None
    except OSError as exc:
        raise UsageError(f"cannot read dataset manifest {path}: {exc.strerror}") from None


def manifests(directory: Path | None = None) -> dict[str, Manifest]:
    """Every manifest, by dataset name."""
    folder = directory or manifest_dir()
    found = {}
    for path in sorted(Path(folder).glob("*.toml")):
        m = _parse_manifest(path)
        found[m.name] = m
    return found


def get_manifest(name: str, directory: Path | None = None) -> Manifest:
    known = manifests(directory)
    if name not in known:
        raise choice_error("dataset manifest", name, sorted(known))
    return known[name]


def is_ready(name: str, cache_dir: str | os.PathLike | None = None) -> bool:
    return (cache_root(cache_dir) / name / READY).is_file()


def dataset_dir(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """The ready folder of a fetched dataset; a UsageError saying how to fetch it otherwise."""
    folder = cache_root(cache_dir) / name
    if not (folder / READY).is_file():
        raise UsageError(
            f"dataset {name!r} is not in the cache {cache_root(cache_dir)}; run `florence2-bench datasets fetch {name}` "
            f"(or set {DATA_ENV} to the folder that holds it)"
        )
    return folder


# --------------------------------------------------------------------------------------------
# list / fetch / verify


def list_datasets(cache_dir: str | os.PathLike | None = None) -> list[DatasetRow]:
    """One row per manifest: name, tasks, download size, license and whether it is fetched."""
    rows = []
    for m in manifests().values():
        fetched = "embedded" if m.embedded else ("yes" if is_ready(m.name, cache_dir) else "no")
        rows.append(DatasetRow(m.name, m.tasks, m.size, m.license, fetched))
    return rows


def format_rows(rows: list[DatasetRow]) -> str:
    """``datasets list`` as an aligned text table."""
    table = [("name", "fetched", "size", "license", "tasks")]
    for r in rows:
        size = "-" if r.size_bytes == 0 else ("unknown" if r.size_bytes is None else _human(r.size_bytes))
        table.append((r.name, r.fetched, size, r.license, " ".join(r.tasks)))
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row[:4], widths, strict=True)) + "  " + row[4] for row in table
    )


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fetch(
    name: str, cache_dir: str | os.PathLike | None = None, log: Callable[[str], None] = _stderr,
    writer: Writer = write_all,
) -> Path:
    """Download, check and extract a dataset (and the datasets it requires); returns its folder.

    ``writer`` writes the READY file (the seam where tests inject a full disk).
    """
    m = get_manifest(name)
    for dep in m.requires:
        fetch(dep, cache_dir, log)
    root = cache_root(cache_dir)
    final = root / m.name
    if m.embedded:
        log(f"{m.name}: embedded in florence2-bench, nothing to fetch")
        return final
    if (final / READY).is_file():
        log(f"{m.name}: already fetched in {final}")
        return final
    downloads = inside(root, Path(DOWNLOADS) / m.name, "download folder")
    try:
        downloads.mkdir(parents=True, exist_ok=True)
        with locked(root / f".{m.name}.lock", "dataset lock"):
            if (final / READY).is_file():  # another process finished it while we waited
                return final
            _fetch_locked(m, root, final, downloads, log, writer)
    except OSError as exc:  # a full disk, a read-only cache: one line naming where, no staging left
        raise write_error(root / m.name, exc) from None
    log(f"{m.name}: ready in {final}")
    return final


def _fetch_locked(m: Manifest, root: Path, final: Path, downloads: Path, log: Callable[[str], None],
                  writer: Writer) -> None:
    """Download, extract into a staging folder, rename it into place; the staging folder never stays."""
    checked = [_download_checked(m.name, f, downloads, log) for f in m.files]
    staging = inside(root, f".{m.name}.staging", "staging folder")
    if os.path.lexists(staging):  # left by an interrupted fetch
        remove_tree(staging, root, "dataset folder")
    staging.mkdir(parents=True)
    try:
        for spec, (path, _) in zip(m.files, checked, strict=True):
            if spec.extract:
                log(f"{m.name}: extracting {spec.name}")
                extract_archive(path, staging)
            else:
                link_or_copy(path, inside(staging, spec.name, "dataset file"), "dataset file")
        members = {
            str(p.relative_to(staging)): p.stat().st_size for p in sorted(staging.rglob("*")) if p.is_file()
        }
        write_atomic(staging / READY, json.dumps({
            "dataset": m.name,
            "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "downloads": {s.name: digest for s, (_, digest) in zip(m.files, checked, strict=True)},
            "members": members,
        }, indent=1, sort_keys=True), what="dataset file", writer=writer)
        if os.path.lexists(final):  # a folder left without READY by an interrupted fetch
            remove_tree(final, root, "dataset folder")
        rename(staging, final, "dataset folder")  # READY is inside: the dataset appears complete or not at all
    except BaseException:
        with contextlib.suppress(OSError, UsageError):
            remove_tree(staging, root, "dataset folder")
        raise


def verify(name: str, cache_dir: str | os.PathLike | None = None) -> VerifyReport:
    """Re-check a fetched dataset: every extracted file present with its size, every kept download's sha256."""
    m = get_manifest(name)
    if m.embedded:
        return VerifyReport(name, True, True, [f"{name}: embedded (generated in memory), nothing to verify"])
    folder = cache_root(cache_dir) / name
    if not (folder / READY).is_file():
        return VerifyReport(
            name, False, False, [f"{name}: not fetched (run `florence2-bench datasets fetch {name}`)"]
        )
    ready = _read_ready(folder / READY, name)
    report = VerifyReport(name, True, True, [])
    for spec in m.files:
        path = cache_root(cache_dir) / DOWNLOADS / name / spec.name
        recorded = ready.get("downloads", {}).get(spec.name, "")
        if not path.is_file():
            report.lines.append(
                f"{spec.name}: download removed; sha256 at fetch time {recorded or 'not recorded'}"
            )
            continue
        digest = _sha256(path)
        if not spec.sha256:
            report.lines.append(
                f"{spec.name}: checksum unknown in manifest (sha256 of the download: {digest})"
            )
        elif digest == spec.sha256:
            report.lines.append(f"{spec.name}: sha256 ok")
        else:
            report.ok = False
            report.lines.append(f"{spec.name}: sha256 MISMATCH: manifest {spec.sha256}, file {digest}")
    missing = [
        rel
        for rel, size in ready.get("members", {}).items()
        if not (folder / rel).is_file() or (folder / rel).stat().st_size != size
    ]
    if missing:
        report.ok = False
        report.lines.append(f"{len(missing)} extracted file(s) missing or changed, e.g. {missing[0]}")
    else:
        report.lines.append(
            f"{len(ready.get('members', {}))} extracted files present with their recorded sizes"
        )
    report.lines.insert(0, f"{name}: {'ok' if report.ok else 'FAILED'} ({folder})")
    return report


# --------------------------------------------------------------------------------------------
# downloading


def _read_ready(path: Path, name: str) -> dict[str, Any]:
    """The READY record of a fetched dataset; a damaged one is one line saying how to redo the fetch."""
    try:
        ready = parse_json(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        ready, why = None, f"not JSON ({type(exc).__name__})"
    else:
        why = "not a JSON object with 'downloads' and 'members' tables"
    if (
        not isinstance(ready, dict)
        or not isinstance(ready.get("downloads", {}), dict)
        or not isinstance(ready.get("members", {}), dict)
        or not all(isinstance(v, int) for v in ready.get("members", {}).values())
    ):
        raise UsageError(
            f"corrupt READY file {path}: {why}; accepted: the file `datasets fetch` writes "
            f"(delete {path.parent} and run `florence2-bench datasets fetch {name}` again)"
        )
    return ready


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open_read(path, "download") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download_checked(
    dataset: str, spec: FileSpec, folder: Path, log: Callable[[str], None]
) -> tuple[Path, str]:
    """The verified download of one file and its sha256; resumes a ``.part`` file, deletes a corrupt one."""
    final, digest_file = folder / spec.name, folder / (spec.name + ".sha256")
    if os.path.lexists(final):  # verified where it is read (_sha256, link_or_copy): a link is never taken in
        digest = read_text(digest_file, "download digest", "replace").strip() if os.path.lexists(digest_file) else ""
        if not re.fullmatch(r"[0-9a-f]{64}", digest):  # absent or damaged: computed again from the download
            digest = _sha256(final)
            write_atomic(digest_file, digest, what="download digest")
        return final, digest
    part = folder / (spec.name + ".part")
    log(f"{dataset}: downloading {spec.url}")
    _download(dataset, spec, part)
    size = part.stat().st_size
    if spec.size and size < spec.size:
        raise _interrupted(dataset, spec, f"{size} of {spec.size} bytes")
    if spec.size and size != spec.size:
        remove_file(part, "partial download")
        raise UsageError(
            f"{dataset}: {spec.name} has {size} bytes, manifest says {spec.size}; deleted it, run fetch again"
        )
    digest = _sha256(part)
    if spec.sha256 and digest != spec.sha256:
        remove_file(part, "partial download")
        raise UsageError(
            f"{dataset}: checksum mismatch for {spec.name}: expected sha256 {spec.sha256}, got {digest}; "
            "deleted the corrupt download"
        )
    if not spec.sha256:
        log(f"{dataset}: {spec.name}: checksum unknown in manifest, not verified (sha256 {digest})")
    rename(part, final, "download")
    write_atomic(digest_file, digest, what="download digest")
    return final, digest


def _download(dataset: str, spec: FileSpec, part: Path) -> None:
    have = part.stat().st_size if part.exists() else 0
    if spec.size and have == spec.size:
        return
    headers = {"User-Agent": "florence2-bench"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(spec.url, headers=headers), timeout=60)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the .part file is already complete
            return
        raise UsageError(f"{dataset}: download of {spec.url} failed: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UsageError(
            f"{dataset}: cannot reach {spec.url} ({reason}); offline? fetch needs the network, "
            f"or copy a ready dataset folder into {part.parents[2]}"
        ) from None
    with resp:
        resumed = have and resp.status == 206 and _range_start(resp.headers.get("Content-Range", "")) == have
        length = resp.headers.get("Content-Length")
        expected = (have if resumed else 0) + int(length) if length and length.isdigit() else None
        try:
            if not resumed:
                remove_file(part, "partial download")
            with open_append(part, "partial download") as fh:
                shutil.copyfileobj(resp, fh, _CHUNK)
        except (TimeoutError, http.client.IncompleteRead, ConnectionError) as exc:
            raise _interrupted(dataset, spec, type(exc).__name__) from None
    if expected is not None and part.stat().st_size < expected:
        raise _interrupted(dataset, spec, f"{part.stat().st_size} of {expected} bytes")


def _interrupted(dataset: str, spec: FileSpec, why: str) -> UsageError:
    return UsageError(f"{dataset}: download of {spec.name} interrupted ({why}); run fetch again to resume")


def _range_start(content_range: str) -> int:
    match = re.match(r"bytes (\d+)-", content_range)
    return int(match.group(1)) if match else -1


# --------------------------------------------------------------------------------------------
# safe extraction


def _refuse(archive: Path, member: str, why: str) -> UsageError:
    return UsageError(f"refusing archive member {member!r} in {archive.name}: {why}")


def _check_path(archive: Path, member: str) -> None:
    name = member.replace("\\", "/")
    parts = PurePosixPath(name).parts
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise _refuse(archive, member, "absolute path")
    if ".." in parts:
        raise _refuse(archive, member, "'..' in the path")


def _check_link(archive: Path, member: str, target: str) -> None:
    """Links may only point down into the dataset folder: relative, without any '..' component.

    Allowing '..' that stays inside by path arithmetic is unsafe once links chain through other links.
    """
    norm = target.replace("\\", "/")
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm) or ".." in PurePosixPath(norm).parts:
        raise _refuse(archive, member, f"link to {target!r} points outside the target folder")


def _inside(root: Path, path: Path) -> bool:
    return os.path.realpath(path).startswith(os.path.realpath(root) + os.sep)


def extract_archive(archive: Path, target: Path) -> None:
    """Extract a zip or tar archive into ``target``, refusing any member that could land outside it."""
    suffix = next((s for s in _ARCHIVE_SUFFIXES if archive.name.endswith(s)), None)
    if suffix is None:
        raise UsageError(
            f"cannot extract {archive.name}: accepted archive types: {', '.join(_ARCHIVE_SUFFIXES)}"
        )
    try:
        if suffix == ".zip":
            _extract_zip(archive, target)
        else:
            _extract_tar(archive, target)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        remove_file(archive, "download")
        raise UsageError(f"corrupt archive {archive.name} ({exc}); deleted it, run fetch again") from None


def _extract_zip(archive: Path, target: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        links = {}
        for info in infos:
            _check_path(archive, info.filename)
            if stat.S_ISLNK(info.external_attr >> 16):
                links[info.filename] = zf.read(info).decode()
                _check_link(archive, info.filename, links[info.filename])
        for info in infos:
            dest = target / info.filename
            if not _inside(target, dest):
                raise _refuse(archive, info.filename, "resolves outside the target folder")
            if info.filename in links:
                dest.parent.mkdir(parents=True, exist_ok=True)
                archive_link(links[info.filename], dest)
            elif info.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, create_new(dest, "dataset file") as dst:
                    shutil.copyfileobj(src, dst, _CHUNK)


def _extract_tar(archive: Path, target: Path) -> None:
    with tarfile.open(archive) as tf:
        members = tf.getmembers()
        for member in members:
            _check_path(archive, member.name)
            if member.issym() or member.islnk():
                _check_link(archive, member.name, member.linkname)
            elif not (member.isfile() or member.isdir()):
                raise _refuse(archive, member.name, "not a regular file, folder or link")
        kwargs: dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tf.extractall(target, members=members, **kwargs)
