"""Safe file operations of a motion index folder: the writers' lock, the liveness mark of a running build,
checked writes (disk full and read-only folders said plainly), per-file checksums, and the fault points of
the power-cut tests.

Locks are OS file locks (``flock`` on POSIX, ``msvcrt.locking`` on Windows): the OS drops them when their
holder dies, so a killed build never leaves a lock that blocks the next one.

- ``.lock``: the writers' lock. Held only for the short steps that read-modify-write shared state (taking
  over an interrupted build's segments, publishing the manifest, removing orphans), never while embedding.
- ``.build-<id>.lock``: held by build ``<id>`` for its whole life. A file of that build (``seg-<id>-*``,
  ``_tmp-seg-<id>-*``, ``staging-<id>.json``) belongs to a live build exactly when this lock is held; it
  is created under a temporary name, locked, then renamed, so it is never seen unlocked while its build runs.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import time
import uuid
import zlib
from typing import Optional

from ..errors import MotionIndexError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt

WRITER_LOCK = ".lock"
BUILD_LOCK_PREFIX = ".build-"
BUILD_LOCK_SUFFIX = ".lock"

# SEARCHPRIORS_INDEX_FAULT=<step>[:<n>] ends the process (os._exit, no clean-up, like a power cut) the n-th
# time a build reaches <step>; only the tests and the stress benchmark set it.
FAULT_ENV = "SEARCHPRIORS_INDEX_FAULT"
FAULT_EXIT = 86
FAULT_STEPS = (
    "segment-file",       # one file of a segment written inside its _tmp- folder
    "segment-complete",   # every file of the segment written, folder not renamed yet
    "segment-renamed",    # segment in place, not yet listed in the build's staging file
    "json-temp",          # a staging/manifest temp file written, not yet renamed over the old one
    "staging-written",    # the build's staging file lists the new segment
    "publish-locked",     # writers' lock taken for publishing, nothing changed yet
    "manifest-replaced",  # new manifest published, staging file not yet removed
    "staging-removed",    # staging file removed, orphans not yet cleaned
)
_fault_hits: dict[str, int] = {}

DISK_FULL = (errno.ENOSPC,) + ((errno.EDQUOT,) if hasattr(errno, "EDQUOT") else ())
READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)


def fault_point(step: str) -> None:
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    name, _, nth = spec.partition(":")
    if name != step:
        return
    _fault_hits[step] = _fault_hits.get(step, 0) + 1
    if _fault_hits[step] == int(nth or 1):
        os._exit(FAULT_EXIT)


# ----------------------------------------------------------------------------------------------- errors

class IndexBusyError(MotionIndexError):
    """Another writer held the index lock longer than the caller agreed to wait."""


def translate_os_error(exc: OSError, folder: str, what: str = "") -> Optional[MotionIndexError]:
    """A user-facing error for a full disk or a read-only folder; None for anything else."""
    where = f" ({what})" if what else ""
    if exc.errno in DISK_FULL:
        return MotionIndexError(
            f"Disk full while writing the motion index at '{folder}'{where}: the published index is unchanged "
            f"and segments already finished are kept for the next build. Free some space and build again.")
    if exc.errno in READ_ONLY:
        return MotionIndexError(
            f"The motion index folder '{folder}' is read-only ({exc.strerror or exc}{where}): it can still be "
            f"searched, but building into it needs write access. Make it writable, or build into another "
            f"folder (another index name).")
    return None


# ----------------------------------------------------------------------------------------------- writes

@contextlib.contextmanager
def os_errors_as_index_errors(folder: str):
    """Inside: an OSError that ``translate_os_error`` knows (disk full, read-only, no permission...) becomes the
    MotionIndexError that names it and the fix; any other is raised as it is."""
    try:
        yield
    except OSError as exc:
        translated = translate_os_error(exc, folder)
        if translated is None:
            raise
        raise translated from exc


def checksum(data: bytes) -> dict:
    """Size and CRC-32 of a file's bytes (CRC-32 runs at several GB/s: loading stays I/O-bound)."""
    return {"size": len(data), "crc32": f"{zlib.crc32(data) & 0xFFFFFFFF:08x}"}


def file_checksum(path: str) -> dict:
    with open(path, "rb") as fh:
        return checksum(fh.read())


def _raw_write(path: str, data: bytes) -> None:
    """The one place where index bytes reach the disk (the disk-full tests inject their error here)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes(path: str, data: bytes, folder: str) -> dict:
    """Write a new file durably; returns its checksum. A full disk or read-only folder becomes a clear
    ``MotionIndexError`` (the partial file is removed)."""
    try:
        _raw_write(path, data)
    except OSError as exc:
        try:
            os.remove(path)
        except OSError:
            pass
        translated = translate_os_error(exc, folder, f"writing {os.path.relpath(path, folder)}")
        if translated is not None:
            raise translated from exc
        raise
    return checksum(data)


def fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # not supported (Windows)
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_checked(path: str, expected: Optional[dict], folder: str, label: str) -> bytes:
    """A file's bytes, compared with its recorded size and checksum when there is one."""
    with open(path, "rb") as fh:
        data = fh.read()
    if expected:
        got = checksum(data)
        if got["size"] != expected.get("size") or ("crc32" in expected and got["crc32"] != expected["crc32"]):
            detail = (f"{got['size']} bytes, expected {expected.get('size')}" if got["size"] != expected.get("size")
                      else f"checksum {got['crc32']}, expected {expected['crc32']}")
            raise MotionIndexError(f"The index at '{folder}' is damaged: {label} does not match the manifest "
                                   f"({detail}); the file was changed or corrupted after it was written. "
                                   f"Rebuild the index into a new folder.")
    return data


# ----------------------------------------------------------------------------------------------- locks

def _try_lock(fd: int) -> bool:
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:  # pragma: no cover
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        return True
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK, errno.EDEADLK):
            return False
        raise


def _unlock(fd: int) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
    else:  # pragma: no cover
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


def _holder_text() -> bytes:
    return f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%H:%M:%S')}\n".encode()


class WriterLock:
    """The index's writers' lock; waits up to ``timeout`` seconds (None: for ever, 0: not at all)."""

    def __init__(self, folder: str, timeout: Optional[float]):
        self.folder = folder
        self.timeout = timeout
        self.fd: Optional[int] = None
        self.waited = 0.0     # seconds spent waiting for another holder
        self.acquired = 0.0   # time.monotonic() when taken

    def __enter__(self) -> "WriterLock":
        path = os.path.join(self.folder, WRITER_LOCK)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            translated = translate_os_error(exc, self.folder, "opening its lock file")
            if translated is not None:
                raise translated from exc
            raise
        begun = time.monotonic()
        deadline = None if self.timeout is None else begun + max(self.timeout, 0.0)
        pause = 0.01
        while not _try_lock(fd):
            if deadline is not None and time.monotonic() >= deadline:
                holder = b""
                try:
                    holder = os.pread(fd, 200, 0) if hasattr(os, "pread") else b""
                except OSError:
                    pass
                os.close(fd)
                who = holder.decode(errors="replace").strip() or "another process"
                raise IndexBusyError(
                    f"Another build is writing the motion index at '{self.folder}' ({who}) and still held its "
                    f"lock after {self.timeout:g} s. Nothing was published; segments already finished are kept "
                    f"and reused. Build again when it is done, or wait longer (CLI --lock-timeout, node "
                    f"lock_timeout).")
            time.sleep(pause)
            pause = min(pause * 2, 0.2)
        try:  # who holds it, for the message of a writer that gives up waiting (best effort)
            os.ftruncate(fd, 0)
            os.pwrite(fd, _holder_text(), 0)
        except (OSError, AttributeError):
            pass
        self.fd = fd
        self.acquired = time.monotonic()
        self.waited = self.acquired - begun
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            _unlock(self.fd)
            os.close(self.fd)
            self.fd = None


def build_lock_path(folder: str, build_id: str) -> str:
    return os.path.join(folder, f"{BUILD_LOCK_PREFIX}{build_id}{BUILD_LOCK_SUFFIX}")


class BuildClaim:
    """Marks a build as alive for as long as it (its process) lives; see the module docstring."""

    def __init__(self, folder: str):
        self.folder = folder
        self.id = uuid.uuid4().hex[:12]
        self.path = build_lock_path(folder, self.id)
        tmp = f"{self.path}.tmp"
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as exc:
            translated = translate_os_error(exc, folder, "creating its build lock")
            if translated is not None:
                raise translated from exc
            raise
        try:
            os.write(fd, _holder_text())
            if not _try_lock(fd):  # pragma: no cover - a fresh random name cannot be held by anybody
                raise MotionIndexError(f"Could not lock '{tmp}'.")
            if os.name == "nt":  # pragma: no cover - an open file cannot be renamed there
                os.close(fd)
                os.replace(tmp, self.path)
                fd = os.open(self.path, os.O_RDWR)
                _try_lock(fd)
            else:
                os.replace(tmp, self.path)
        except BaseException:
            os.close(fd)
            for p in (tmp, self.path):
                try:
                    os.remove(p)
                except OSError:
                    pass
            raise
        self.fd: Optional[int] = fd

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.remove(self.path)
        except OSError:
            pass
        _unlock(self.fd)
        os.close(self.fd)
        self.fd = None


def lock_is_held(path: str) -> bool:
    """Whether some process holds the lock of the file ``path`` (False when it does not exist)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        free = _try_lock(fd)
        if free:
            _unlock(fd)
        return not free
    finally:
        os.close(fd)


def build_is_live(folder: str, build_id: str) -> bool:
    """Whether build ``build_id`` still runs (its lock is held). Call with the writers' lock held, so that no
    other checker holds that lock for a moment."""
    return lock_is_held(build_lock_path(folder, build_id))
