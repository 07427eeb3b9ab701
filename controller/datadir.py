"""The data directory: one controller at a time (an flock held for the process's life), private modes
(directory 0700, files 0600), and a clear refusal when it cannot be written (read-only, full).

Two controllers on one directory would both serve and acknowledge writes that the other never sees; the
store's change log would then hold duplicate revisions. The lock makes the second one exit at start.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_FILE = "controller.lock"
DIR_MODE = 0o700
FILE_MODE = 0o600
#: files of the data directory that must be private (the store holds every tenant's topology, tokens.json
#: every bearer token)
PRIVATE_GLOBS = (
    "topology.sqlite",
    "topology.sqlite-*",
    "tokens.json",
    "*.tmp",
    "neighbors.json",
    "gateways.json",
    "endpoints.json",
    LOCK_FILE,
)


class DataDirError(Exception):
    """The data directory cannot be used; the message is one line for the operator."""


def _why(err: OSError) -> str:
    if err.errno in (errno.EROFS,):
        return "it is on a read-only file system"
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the file system is full"
    if err.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return err.strerror or str(err)


class DataDir:
    """Holds the instance lock of `path` from `acquire()` until the process exits (or `release()`)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock_fd: int | None = None

    def acquire(self) -> list[str]:
        """Create or take over the directory: umask 077, the lock, modes fixed, a write probe. Returns the
        mode changes made (also logged); raises DataDirError with one line saying why it cannot be used."""
        os.umask(0o077)
        try:
            self.path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        except OSError as err:
            raise DataDirError(f"cannot create data directory {self.path}: {_why(err)}") from None
        if not self.path.is_dir():
            raise DataDirError(f"data directory {self.path} is not a directory")
        self._lock()
        changed = self.fix_modes()
        self._probe()
        return changed

    def _lock(self) -> None:
        lock_path = self.path / LOCK_FILE
        unwritable: OSError | None = None
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        except OSError as err:
            if err.errno not in (errno.EROFS, errno.EACCES, errno.EPERM) or not lock_path.exists():
                raise DataDirError(f"cannot use data directory {self.path}: {_why(err)}") from None
            unwritable = err
            fd = os.open(lock_path, os.O_RDONLY)  # still lock it: a holder is worth naming before refusing
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise DataDirError(
                f"data directory {self.path} is in use by another controller (pid {holder}); "
                "one controller per data directory"
            ) from None
        except OSError as err:
            os.close(fd)
            raise DataDirError(f"cannot lock data directory {self.path}: {_why(err)}") from None
        self._lock_fd = fd
        if unwritable is not None:
            self.release()
            raise DataDirError(f"cannot use data directory {self.path}: {_why(unwritable)}")
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as err:
            self.release()
            raise DataDirError(f"cannot use data directory {self.path}: {_why(err)}") from None

    def fix_modes(self) -> list[str]:
        """Make the directory 0700 and its files 0600 (a store written by an older version, or copied in,
        may be world-readable); returns and logs what was changed."""
        changed = []
        paths = [self.path] + sorted({p for g in PRIVATE_GLOBS for p in self.path.glob(g) if p.is_file()})
        for p in paths:
            want = DIR_MODE if p == self.path else FILE_MODE
            try:
                mode = stat.S_IMODE(p.lstat().st_mode)
                if mode & 0o077 or (p == self.path and mode != DIR_MODE):
                    os.chmod(p, want)
                    changed.append(f"{p}: {mode:04o} -> {want:04o}")
            except FileNotFoundError:
                continue
            except OSError as err:
                raise DataDirError(f"cannot make {p} private (mode {want:04o}): {_why(err)}") from None
        for line in changed:
            log.warning("data directory mode fixed: %s", line)
        return changed

    def _probe(self) -> None:
        """Write and fsync a small file: a read-only or full directory is refused now, not at the first write."""
        probe = self.path / f".probe-{os.getpid()}.tmp"
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
            try:
                os.write(fd, b"\0" * 4096)
                os.fsync(fd)
            finally:
                os.close(fd)
                probe.unlink(missing_ok=True)
        except OSError as err:
            raise DataDirError(f"cannot write to data directory {self.path}: {_why(err)}") from None

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the only descriptor drops the flock
            self._lock_fd = None


def _read_pid(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"
