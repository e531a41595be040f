"""Durable, untrusting file primitives for the OCI layout backend: locks, temp files, renames.

A layout directory may have been crafted by someone else (a disk carried across an air gap), so
every file is reached from the layout root one component at a time, with ``O_NOFOLLOW``: a
symlinked ``blobs`` or ``blobs/sha256`` is refused, never followed out of the root, and only
regular files are read or written (a FIFO is opened non-blocking, seen for what it is, and
refused, so it cannot hang a run). The root itself is the operator's choice and may be a link.

A writer streams into a dot-named temp file (created ``O_EXCL``) that it holds an exclusive
``flock`` on, then fsyncs and renames it into place while still holding it; a directory's new
entry is fsynced too. A temp file nobody holds a lock on was left by a killed writer and may be
removed. The layout-wide lock file serialises index.json updates (exclusive) against temp file
creation (shared), so a sweep never takes a file in the instant between its creation and its lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from regsync.errors import LayoutError

LOCK_FILE = ".regsync.lock"
TEMP_PREFIX = ".tmp-"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, forever.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _kind(mode: int) -> str:
    kinds = {stat.S_ISLNK: "a symlink", stat.S_ISFIFO: "a FIFO", stat.S_ISSOCK: "a socket"}
    kinds |= {stat.S_ISDIR: "a directory", stat.S_ISCHR: "a device", stat.S_ISBLK: "a device"}
    return next((name for test, name in kinds.items() if test(mode)), "not a regular file")


def _refuse(path: Path, mode: int, wanted: str) -> LayoutError:
    return LayoutError(f"{path} is {_kind(mode)}, not a {wanted}: refusing")


def dir_fd(root: Path, parts: Sequence[str] = (), *, create: bool = False) -> int:
    """A descriptor of ``root/parts...``, each part a real directory (created if ``create``)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, part in enumerate(parts):
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                mode = os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode
                raise _refuse(root.joinpath(*parts[: i + 1]), mode, "directory") from exc
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def open_dir(root: Path, parts: Sequence[str] = (), *, create: bool = False) -> Iterator[int]:
    fd = dir_fd(root, parts, create=create)
    try:
        yield fd
    finally:
        os.close(fd)


def regular_size(root: Path, parts: Sequence[str]) -> int | None:
    """The size of the regular file ``root/parts...``; None when there is none."""
    *dirs, name = parts
    try:
        with open_dir(root, dirs) as fd:
            found = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError, LayoutError):
        return None
    return found.st_size if stat.S_ISREG(found.st_mode) else None


def is_regular(root: Path, parts: Sequence[str], *, strict: bool) -> bool:
    """Whether ``root/parts...`` is a regular file. Something else there is refused when
    ``strict`` (a layout's own files) and counted as absent otherwise (a blob to write again)."""
    *dirs, name = parts
    try:
        with open_dir(root, dirs) as fd:
            mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return False
    except LayoutError:
        if strict:
            raise
        return False
    if stat.S_ISREG(mode):
        return True
    if strict:
        raise _refuse(root.joinpath(*parts), mode, "regular file")
    return False


def open_regular(root: Path, parts: Sequence[str]) -> BinaryIO:
    """``root/parts...`` open for reading, or LayoutError unless it is a regular file there.
    FileNotFoundError when it does not exist."""
    *dirs, name = parts
    with open_dir(root, dirs) as dir_fd:
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            raise _refuse(root.joinpath(*parts), stat.S_IFLNK, "regular file") from exc
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _refuse(root.joinpath(*parts), mode, "regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_capped(root: Path, parts: Sequence[str], limit: int) -> bytes | None:
    """The bytes of a regular file, or None when it holds more than ``limit``."""
    with open_regular(root, parts) as handle:
        data = handle.read(limit + 1)
    return None if len(data) > limit else data


@contextlib.contextmanager
def locked(root: Path, mode: int) -> Iterator[None]:
    """Hold ``flock(mode)`` on ``root/.regsync.lock`` (fcntl.LOCK_SH or LOCK_EX)."""
    root.mkdir(parents=True, exist_ok=True)
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(root / LOCK_FILE, flags, 0o644)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise _refuse(root / LOCK_FILE, stat.S_IFLNK, "regular file") from exc
    try:
        if not stat.S_ISREG(kind := os.fstat(fd).st_mode):
            raise _refuse(root / LOCK_FILE, kind, "regular file")
        fcntl.flock(fd, mode)
        yield
    finally:
        os.close(fd)  # closing releases the lock


class TempFile:
    """A new, exclusively locked temp file beside ``parts[-1]``; ``commit`` renames it there."""

    def __init__(self, root: Path, parts: Sequence[str], *, sweepable: bool = True) -> None:
        """``sweepable``: in ``blobs/``, where the orphan sweep looks, so created under the
        shared layout lock (index.json's temp files are written under the exclusive one)."""
        *dirs, self.final = parts
        self.name = f"{TEMP_PREFIX}{self.final[:16]}-{secrets.token_hex(6)}"
        self._dir = dir_fd(root, dirs, create=True)
        self._committed = False
        try:
            with locked(root, fcntl.LOCK_SH) if sweepable else contextlib.nullcontext():
                fd = os.open(self.name, _CREATE_FLAGS, 0o644, dir_fd=self._dir)
                self.handle: BinaryIO = os.fdopen(fd, "wb")
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BaseException:
            os.close(self._dir)
            raise

    def write(self, data: bytes) -> None:
        self.handle.write(data)

    def commit(self) -> None:
        """fsync, then atomically replace the final name (a link there is replaced, not
        followed), then fsync the directory so the new name survives a power cut."""
        sync_file(self.handle)
        os.replace(self.name, self.final, src_dir_fd=self._dir, dst_dir_fd=self._dir)
        self._committed = True
        os.fsync(self._dir)

    def close(self) -> None:
        """Release everything; an uncommitted temp file is removed."""
        try:
            if not self._committed:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.name, dir_fd=self._dir)
            self.handle.close()
        finally:
            os.close(self._dir)


def remove_orphans(root: Path) -> list[str]:
    """Remove the temp files in ``root`` and ``root/blobs/*/`` that no live writer holds.

    Call with the layout lock held exclusively. Returns the names removed. Files can vanish
    between the listing and their turn (a live writer renames or removes its own): skipped.
    """
    try:
        with open_dir(root, ["blobs"]) as blobs:
            dirs = [["blobs", name] for name in os.listdir(blobs)]
    except FileNotFoundError:
        dirs = []
    removed = []
    for parts in [[], *dirs]:
        with contextlib.suppress(OSError, LayoutError), open_dir(root, parts) as fd:
            for name in os.listdir(fd):
                if name.startswith(TEMP_PREFIX) and _remove_orphan(fd, name):
                    removed.append(name)
    return removed


def _remove_orphan(dir_fd: int, name: str) -> bool:
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except OSError:
        return False  # gone already, or a symlink: not ours to touch
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False  # a FIFO or socket someone put there: left alone
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # its writer is alive
        try:
            os.unlink(name, dir_fd=dir_fd)
        except FileNotFoundError:
            return False
        return True
    finally:
        os.close(fd)


def replace_file(root: Path, name: str, data: bytes) -> None:
    """Write ``data`` to ``root/name`` atomically: readers see the old file or the new one."""
    temp = TempFile(root, [name], sweepable=False)
    try:
        temp.write(data)
        temp.commit()
    finally:
        temp.close()


def sync_file(handle: BinaryIO) -> None:
    handle.flush()
    os.fsync(handle.fileno())
