"""The door for files: every file the tool creates, appends, replaces, reads from a place a user could
have planted something in, or deletes, goes through this module (tests/test_door.py fails any other).

- A name given to the tool lies inside the folder it belongs to (``inside``, ``confined``); a name read from a
  manifest or dataset is one plain component (``plain_name``).
- A file is opened without following a link (``O_NOFOLLOW``) and without waiting (``O_NONBLOCK``), then
  ``fstat``-ed: anything but a regular file (a FIFO, a directory, a device) is one line, exit 2, never a wait;
  a file the tool writes into (appends to, cuts, locks) has exactly one link (a hard link is refused).
- A whole file is written to a fresh temporary beside it (``O_EXCL``, random name), ``fsync``-ed and renamed
  over the destination (``write_atomic``): a reader, a kill or a full disk never sees half a file or loses
  the previous one, and a link at the destination is refused, never written through.
- A third party (LoadGen, a Ray worker) writes into a private folder of its own (``private_dir``); its files
  are moved in through the door (``move_in``).
- Every kind of path the tool touches is named in ``KINDS``: the messages name it, and the fault matrix
  (tests/test_fault_matrix.py) tries every hostile state on every kind.

This module imports nothing of the harness but its errors, so every module may use it.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from bench.core.errors import UsageError

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
        raise refuse_link_error(path, what)
    return path


# ------------------------------------------------------------------------------ the kinds of path

@dataclass(frozen=True)
class PathKind:
    """One kind of path the tool touches: the folder it belongs to and what the tool does with it.

    ``op``: read (a file read), append (a file appended to or cut), lock (a lock file), replace (a file written
    whole), tree (a folder the tool creates, fills or deletes). ``max_bytes``: the largest file of the kind the
    tool reads (a larger one, such as a planted sparse file, is refused before a byte is read: never a wait or an
    allocation of its size).
    """

    what: str
    where: str
    op: str
    example: str
    max_bytes: int = 1 << 32  # 4 GiB: far over any run file, log, entry or report the tool writes


OPS = ("read", "append", "lock", "replace", "tree")
KINDS: dict[str, PathKind] = {k.what: k for k in (
    PathKind("results file", "run", "append", "RUN/results.jsonl"),
    PathKind("progress log", "run", "append", "RUN/progress.log"),
    PathKind("run lock", "run", "lock", "RUN/.lock"),
    PathKind("environment file", "run", "replace", "RUN/env.json"),
    PathKind("example image", "run", "replace", "RUN/examples/DATASET/ID.png"),
    PathKind("load generator log", "run", "replace", "RUN/loadgen/CELL/mlperf_log_detail.txt"),
    PathKind("load generator log folder", "run", "tree", "RUN/loadgen/CELL"),
    PathKind("run directory", "runs", "tree", "runs/NAME-TIME"),
    PathKind("history entry", "history", "replace", "HISTORY/run-*.json"),
    PathKind("history lock", "history", "lock", "HISTORY/.lock"),
    PathKind("output", "output", "replace", "RUN/report.html, and any file named by -o, --markdown, --json, "
             "--answer, export"),
    PathKind("checkpoint", "output", "tree", "DIR of make-checkpoint, make-tiny-checkpoint"),
    PathKind("dataset lock", "cache", "lock", "CACHE/.NAME.lock"),
    PathKind("partial download", "cache", "append", "CACHE/_downloads/NAME/FILE.part"),
    PathKind("download", "cache", "read", "CACHE/_downloads/NAME/FILE", max_bytes=1 << 38),  # a dataset archive
    PathKind("download digest", "cache", "replace", "CACHE/_downloads/NAME/FILE.sha256"),
    PathKind("dataset file", "cache", "replace", "CACHE/NAME/FILE"),
    PathKind("dataset folder", "cache", "tree", "CACHE/NAME"),
    PathKind("IR file", "cache", "read", "IR_CACHE/PART-KEY/model.xml", max_bytes=1 << 36),  # a model's weights
    PathKind("IR folder", "cache", "tree", "IR_CACHE/PART-KEY"),
    PathKind("input", "input", "read", "a file the tool reads that a user or a third party wrote",
             max_bytes=1 << 36),  # a checkpoint's weights
)}


def _kind(what: str) -> str:
    if what not in KINDS:  # a door call naming an unregistered kind is a bug: the fault matrix would miss it
        raise ValueError(f"unregistered path kind {what!r}; add it to bench.core.paths.KINDS")
    return what


# ------------------------------------------------------------------------------ opening a file

_TYPES = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISLNK, "a symbolic link"))
_WRITING = os.O_WRONLY | os.O_RDWR


def _type_name(mode: int) -> str:
    return next((name for test, name in _TYPES if test(mode)), "not a regular file")


def _not_regular(path: str | os.PathLike, what: str, mode: int) -> UsageError:
    return UsageError(f"{what} {path} is {_type_name(mode)}; accepted: a regular file")


def _open_error(path: str | os.PathLike, what: str, exc: OSError, writing: bool) -> Exception:
    """What an ``os.open`` failure means, in one line: a link, a FIFO, a directory, or the medium."""
    try:
        st = os.lstat(path)
    except OSError:
        st = None
    if st is not None and stat.S_ISLNK(st.st_mode):
        return refuse_link_error(path, what)
    if st is not None and not stat.S_ISREG(st.st_mode):
        return _not_regular(path, what, st.st_mode)
    if exc.errno in (errno.ENOTDIR, errno.ENOENT) and not writing:
        return UsageError(f"{what} {path} is missing or a part of its folder is not a folder; accepted: an "
                          "existing regular file")
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        return UsageError(f"cannot write {what} {path}: a part of its folder is a file; accepted: a path in a "
                          "directory")
    if not writing and exc.errno in (errno.EACCES, errno.EPERM):
        return UsageError(f"cannot read {what} {path}: {exc.strerror}; accepted: a readable file")
    return write_error(path, exc)


def refuse_link_error(path: str | os.PathLike, what: str) -> UsageError:
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    return UsageError(f"{what} {path} is a symbolic link (to {target}); refusing to follow it; accepted: a "
                      "regular file (remove the link)")


def check_size(path: str | os.PathLike, what: str, st: os.stat_result) -> None:
    """A file of ``st``'s size may be read as a ``what`` (its kind's ``max_bytes``), else one line."""
    limit = KINDS[what].max_bytes
    if st.st_size > limit:
        raise UsageError(f"{what} {path} is {st.st_size:,} bytes, over the bound of its kind; accepted: a file "
                         f"of at most {limit:,} bytes")


def open_file(path: str | os.PathLike, flags: int, what: str, mode: int = 0o644) -> int:
    """A descriptor of the regular file at ``path``, opened without following a link and without waiting.

    Refused in one line: a link, anything but a regular file (a FIFO never blocks: ``O_NONBLOCK``, then
    ``fstat``), when ``flags`` only read, a file over its kind's ``max_bytes``, and, when ``flags`` write, a file
    with more than one hard link (its other name lies elsewhere). Never pass ``O_TRUNC``: a file is cut only after it is verified (``write_atomic`` writes whole files).
    """
    _kind(what)
    writing = bool(flags & _WRITING)
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as exc:
        raise _open_error(path, what, exc, writing) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular(path, what, st.st_mode)
        if not writing:
            check_size(path, what, st)
        if writing and st.st_nlink > 1:
            raise UsageError(f"{what} {path} has {st.st_nlink} hard links (another name for it lies elsewhere); "
                             "refusing to write into it; accepted: a file with one link (copy it, then remove "
                             "the link)")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_bytes(path: str | os.PathLike, what: str = "input") -> bytes:
    """The bytes of the regular file at ``path`` (a link, a FIFO, a directory: one line, never a wait)."""
    with os.fdopen(open_file(path, os.O_RDONLY, what), "rb") as fh:
        try:
            return fh.read()
        except OSError as exc:
            raise UsageError(f"cannot read {what} {path}: {exc.strerror}; accepted: a readable file") from None


def read_text(path: str | os.PathLike, what: str = "input", errors: str = "strict") -> str:
    return read_bytes(path, what).decode("utf-8", errors)


def open_read(path: str | os.PathLike, what: str = "input") -> BinaryIO:
    """The regular file at ``path`` opened for reading in binary (verified as ``read_bytes`` does)."""
    return os.fdopen(open_file(path, os.O_RDONLY, what), "rb")


def open_input(path: str | os.PathLike, what: str = "input") -> BinaryIO:
    """A file a user gave, such as a dataset's image: links are followed (datasets hold them; where it may lie
    is checked by ``inside``), but anything not a regular file (a FIFO, a folder) is refused without waiting."""
    _kind(what)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular(path, what, st.st_mode)
        check_size(path, what, st)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def append_line(path: str | os.PathLike, line: str, what: str, writer: Callable[[int, bytes], int] = os.write,
                sync: bool = False) -> None:
    """``line`` and a newline at the end of the verified file at ``path``; ``sync``: fsync it."""
    fd = open_file(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, what)
    try:
        view = memoryview((line.rstrip("\n") + "\n").encode())
        while view:  # a regular file takes the whole line in one write; loop in case it does not
            view = view[writer(fd, view):]
        if sync:
            os.fsync(fd)
    except OSError as exc:
        raise write_error(path, exc) from None
    finally:
        os.close(fd)


def open_append(path: str | os.PathLike, what: str) -> BinaryIO:
    """The verified file at ``path`` (created when absent) for appending bytes."""
    return os.fdopen(open_file(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, what), "ab")


def open_update(path: str | os.PathLike, what: str) -> BinaryIO:
    """The verified existing file at ``path`` for reading and writing in place (a torn tail cut, a lock)."""
    return os.fdopen(open_file(path, os.O_RDWR, what), "rb+")


def open_lock(path: str | os.PathLike, what: str) -> int:
    """A descriptor of the verified lock file at ``path`` (created when absent), for ``flock``."""
    return open_file(path, os.O_RDWR | os.O_CREAT, what)


@contextmanager
def locked(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold the verified lock file at ``path`` exclusively (``flock``, waiting for another holder; the kernel
    drops it when a holder dies): one writer at a time for a folder that several processes may fill."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    fd = open_lock(path, what)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def create_new(path: str | os.PathLike, what: str) -> BinaryIO:
    """A file that must not exist yet (``O_EXCL``: never a link, never an existing file), for writing."""
    _kind(what)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise _open_error(path, what, exc, True) from None
    return os.fdopen(fd, "wb")


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
Producer = Callable[[BinaryIO], None]


def check_destination(path: str | os.PathLike, what: str) -> Path:
    """``path`` may be replaced: absent, or a regular file (a link, a FIFO, a directory: one line)."""
    path = Path(path)
    _kind(what)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return path
    except NotADirectoryError:
        raise UsageError(f"cannot write {what} {path}: a part of its folder is a file; accepted: a path in a "
                         "directory") from None
    if stat.S_ISLNK(st.st_mode):
        raise refuse_link_error(path, what)
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(path, what, st.st_mode)
    return path


def write_atomic(path: str | os.PathLike, data: bytes | str | Producer, *, what: str = "output",
                 writer: Writer = write_all) -> Path:
    """Write ``data`` (bytes, text, or a function that writes into a binary file) to ``path`` through a fresh
    temporary file beside it (``O_EXCL``, a random name), ``fsync`` and one rename.

    A link or anything but a regular file at ``path`` is refused; a hard link there is replaced (its other
    name keeps the old bytes). A reader never sees half a file, a kill keeps the previous one, and on any
    error (``writer`` is the seam where tests inject a full disk) the temporary file is removed.
    """
    path = check_destination(path, what)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except FileNotFoundError:
        raise UsageError(f"cannot write {what} {path}: its folder {path.parent} does not exist; accepted: a path "
                         "in an existing directory") from None
    except NotADirectoryError:
        raise UsageError(f"cannot write {what} {path}: a part of its folder is a file; accepted: a path in a "
                         "directory") from None
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        if callable(data):
            with os.fdopen(os.dup(fd), "wb") as fh:
                data(fh)
        else:
            writer(fd, data.encode("utf-8") if isinstance(data, str) else data)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        check_destination(path, what)  # planted while we wrote: still never replaced through a link
        os.replace(tmp, path)
    except BaseException as exc:
        if fd >= 0:
            os.close(fd)
        with suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise write_error(path, exc) from None
        raise
    return path


def write_output(path: str | os.PathLike, data: bytes | str | Producer, *, writer: Writer = write_all) -> Path:
    """A file a command was asked to write (-o, --markdown, --json, --answer, export): its folder created,
    then written whole (``write_atomic``)."""
    path = Path(path)
    make_dir(path.parent, "output")
    return write_atomic(path, data, what="output", writer=writer)


def write_proc(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to a kernel control file under /proc (resetting a counter); nothing else."""
    if not os.path.realpath(path).startswith("/proc/"):
        raise ValueError(f"{path} is not a kernel control file under /proc")
    with open(path, "w") as fh:
        fh.write(text)


# ------------------------------------------------------------------------------ folders

def make_dir(path: str | os.PathLike, what: str) -> Path:
    """The folder ``path``, created when absent; a link or a file there is refused in one line."""
    path = Path(path)
    _kind(what)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        pass  # said below, naming what is there
    except OSError as exc:
        raise write_error(path, exc) from None
    st = os.lstat(path) if os.path.lexists(path) else None
    if st is not None and stat.S_ISLNK(st.st_mode):
        raise UsageError(f"{what} {path} is a symbolic link (to {os.readlink(path)}); refusing to follow it; "
                         "accepted: a directory (remove the link)")
    if st is None or not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"cannot create {what} {path}: it or a part of its folder is a file; accepted: a "
                         "directory path")
    return path


def confined(root: str | os.PathLike, name: str, what: str) -> Path:
    """``root/name`` for a name that may hold several components but must stay inside ``root`` (no absolute
    path, no ``..``): a sweep's name becomes a folder under ./runs, never one elsewhere."""
    _kind(what)
    parts = Path(name).parts
    if not name or Path(name).is_absolute() or ".." in parts or _CONTROL.search(name):
        raise UsageError(f"bad {what} name {name!r}: it would lie outside {root}; accepted: a relative name "
                         "without '..'")
    inside(root, name, what)
    return Path(root) / name


def remove_tree(path: str | os.PathLike, root: str | os.PathLike, what: str) -> None:
    """Delete the folder ``path`` inside ``root`` (nothing when there is none); a link there is refused, a file
    or FIFO there (a stale entry of the tool's own folder) is removed as a name."""
    path = Path(path)
    _kind(what)
    if not os.path.lexists(path):
        return
    if path.is_symlink():
        raise refuse_link_error(path, what)
    inside(root, path.relative_to(root) if path.is_absolute() and path.is_relative_to(root) else path, what)
    if not path.is_dir():
        remove_file(path, what)
        return
    shutil.rmtree(path)


def remove_file(path: str | os.PathLike, what: str) -> None:
    """Delete the name ``path`` (a link's name, never its target); a directory there is refused."""
    _kind(what)
    if Path(path).is_dir() and not Path(path).is_symlink():
        raise UsageError(f"{what} {path} is a directory; accepted: a regular file (remove the directory)")
    with suppress(FileNotFoundError):
        os.unlink(path)


def rename(src: str | os.PathLike, dst: str | os.PathLike, what: str) -> None:
    """Move ``src`` to ``dst`` in one rename (same folder tree); a link or non-file at ``dst`` is refused."""
    if not Path(src).is_dir():
        check_destination(dst, what)
    else:
        _kind(what)
    os.replace(src, dst)


def archive_link(target: str, dest: str | os.PathLike) -> None:
    """A link an archive holds, made in a fresh staging folder (its target already checked to point down)."""
    os.symlink(target, dest)


def temp_file(prefix: str, suffix: str, folder: str | None = None) -> tuple[int, Path]:
    """A new file of this process's own (``O_EXCL``, a random name) in ``folder``, else the temporary folder."""
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)
    return fd, Path(name)


@contextmanager
def staging_dir(parent: str | os.PathLike, what: str) -> Iterator[Path]:
    """A fresh folder (a random name) in ``parent`` to fill and rename into place; removed if still there."""
    _kind(what)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=parent))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def private_dir(prefix: str) -> Iterator[Path]:
    """A fresh folder only this process knows (``mkdtemp``: mode 0700, a random name), removed at the end:
    where a third party (LoadGen, a Ray worker) writes, so a link planted in the run directory is never
    opened by code that does not refuse it."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def move_in(src: Path, dest: Path, what: str) -> list[Path]:
    """Every regular file directly in the private folder ``src``, written into ``dest`` through the door."""
    make_dir(dest, "load generator log folder" if what == "load generator log" else what)
    moved = []
    for entry in sorted(src.iterdir()):
        if entry.is_symlink() or not entry.is_file():
            continue
        moved.append(write_atomic(dest / entry.name, read_bytes(entry, "input"), what=what))
    return moved


def link_or_copy(src: str | os.PathLike, dst: str | os.PathLike, what: str) -> None:
    """``dst`` (new) holding the verified regular file ``src``: a hard link where the file system allows one."""
    src = Path(src)
    fd = open_file(src, os.O_RDONLY, "download")
    try:
        try:
            os.link(f"/proc/self/fd/{fd}", dst, follow_symlinks=True)
            return
        except OSError:
            pass
        with os.fdopen(os.dup(fd), "rb") as fin, create_new(dst, what) as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
    finally:
        os.close(fd)


@contextmanager
def staged_dir(final: str | os.PathLike, what: str = "checkpoint", force: bool = False) -> Iterator[Path]:
    """A fresh folder beside ``final`` to fill, renamed to ``final`` once when the block ends, removed on any
    error: a kill or a full disk leaves the previous ``final`` (or none) and never a half-written one.

    A link at ``final`` is refused; so is an existing non-empty folder unless ``force``, which replaces it
    whole (none of its old files stay).
    """
    final = Path(final)
    _kind(what)
    if final.is_symlink():
        raise UsageError(f"{what} folder {final} is a symbolic link (to {os.readlink(final)}); refusing to follow "
                         "it; accepted: a new folder (remove the link)")
    if final.exists() and not final.is_dir():
        raise UsageError(f"{what} folder {final} is a file; accepted: a new or empty folder")
    if final.is_dir() and any(final.iterdir()) and not force:
        raise UsageError(f"{what} folder {final} is not empty; accepted: a new or empty folder, or --force to "
                         "replace it whole")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    except (FileExistsError, NotADirectoryError):
        raise UsageError(f"cannot write {what} {final}: a part of its folder is a file; accepted: a path in a "
                         "directory") from None
    except OSError as exc:
        raise write_error(final, exc) from None
    try:
        yield staging
        old = None
        if final.is_dir():  # empty, or replaced whole under --force: moved aside, then deleted
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
            os.replace(final, old)
        os.rename(staging, final)
        if old is not None:
            shutil.rmtree(old)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OSError):
            raise write_error(final, exc) from None
        raise
