"""The one rule for paths the tool writes, deletes or reads from untrusted names.

- Every path written or deleted lies inside the directory it belongs to (the dataset cache, the run
  directory, the history): ``inside`` resolves it and refuses one that escapes.
- Names read from manifests and datasets are plain names (``plain_name``): no separator, no ``..``.
- A run directory's own files are opened without following symlinks (``open_nofollow``): a link there
  could make an append, a truncation or a rename land on a file elsewhere.
- Writes go to a temporary file beside the destination and are renamed into place (``write_atomic``);
  a full disk is one line naming the path (``write_error``) and leaves no temporary file behind.

This module imports nothing of the harness but its errors, so every module may use it.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from bench.errors import UsageError

# errors of the medium, not of the program: out of space or quota, a read-only or failing disk
_MEDIUM = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EFBIG, errno.EACCES, errno.EPERM}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_NAME = 255


def plain_name(name: object, what: str) -> str:
    """A file or folder name from an untrusted source: one path component that cannot climb or hide."""
    if not isinstance(name, str) or not name:
        raise UsageError(f"bad {what} {name!r}; accepted: a non-empty string")
    if ("/" in name or "\\" in name or name in (".", "..") or name.startswith(".") or _CONTROL.search(name)
            or len(name) > MAX_NAME or re.match(r"^[A-Za-z]:", name)):
        raise UsageError(f"bad {what} {name!r}; accepted: a plain file name (no '/', '\\', leading '.', control "
                         f"characters; at most {MAX_NAME} characters)")
    return name


def inside(root: str | os.PathLike, path: str | os.PathLike, what: str, accepted: str = "") -> Path:
    """``path`` resolved (links followed), refused unless it lies inside ``root`` (also resolved)."""
    base = Path(os.path.realpath(root))
    resolved = Path(os.path.realpath(Path(root) / path))
    if resolved != base and not resolved.is_relative_to(base):
        raise UsageError(f"{what} {str(path)!r} resolves to {resolved}, outside {base}; accepted: a path inside "
                         f"{base}{accepted}")
    return resolved


def distinct_dirs(dirs: list[str | os.PathLike], what: str = "run directory") -> list[Path]:
    """The directories in order, each once however it is spelled (``RUN``, ``./RUN/``, a link to it)."""
    import warnings

    out, seen = [], set()
    for d in dirs:
        key = os.path.realpath(d)
        if key in seen:
            warnings.warn(f"{what} {d} named twice; counted once", stacklevel=2)
            continue
        seen.add(key)
        out.append(Path(d))
    return out


def refuse_link(path: str | os.PathLike, what: str) -> Path:
    """``path`` itself, refused when it is a symbolic link (the tool never writes through one)."""
    path = Path(path)
    if path.is_symlink():
        raise UsageError(f"{what} {path} is a symbolic link (to {os.readlink(path)}); refusing to follow it; "
                         "accepted: a regular file (remove the link)")
    return path


def open_nofollow(path: str | os.PathLike, flags: int, what: str, mode: int = 0o644) -> int:
    """``os.open`` that never follows a link at ``path`` and says in one line what is wrong instead."""
    try:
        return os.open(path, flags | getattr(os, "O_NOFOLLOW", 0), mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP or Path(path).is_symlink():
            refuse_link(path, what)
        if exc.errno == errno.EISDIR or Path(path).is_dir():
            raise UsageError(f"{what} {path} is a directory; accepted: a regular file") from None
        raise write_error(path, exc) from None


def write_error(path: str | os.PathLike, exc: OSError) -> Exception:
    """A failure of the medium (full disk, quota, read-only) as one UsageError line naming the path."""
    if exc.errno in _MEDIUM:
        return UsageError(f"cannot write {path}: {exc.strerror or os.strerror(exc.errno)}; accepted: a writable "
                          "location with free space")
    return exc


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


Writer = Callable[[int, bytes], None]


def write_atomic(path: str | os.PathLike, data: bytes | str, *, writer: Writer = write_all) -> Path:
    """Write ``data`` to ``path`` through a temporary file beside it and one rename.

    A link at ``path`` is refused, a reader never sees half a file, and on any error (``writer`` is the
    seam where tests inject a full disk) the temporary file is removed before the error is raised.
    """
    path = Path(path)
    refuse_link(path, "output")
    payload = data.encode("utf-8") if isinstance(data, str) else data
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        try:
            writer(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as exc:
        with suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise write_error(path, exc) from None
        raise
    return path


@contextmanager
def staged_dir(final: str | os.PathLike) -> Iterator[Path]:
    """A temporary folder beside ``final``, renamed to it when the block ends, removed on any error.

    An existing ``final`` keeps its other files and gets the staged ones moved in, each by one rename;
    a half-written folder is never left in its place.
    """
    final = Path(os.path.realpath(final))  # the folder the user named, also when named through a link
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield staging
        if final.is_dir():
            for entry in staging.iterdir():
                os.replace(entry, final / entry.name)
            staging.rmdir()
        else:
            os.rename(staging, final)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OSError):
            raise write_error(final, exc) from None
        raise
