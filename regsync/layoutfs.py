"""Durable file primitives for the OCI layout backend: locks, temp files, atomic renames.

A writer streams into a dot-named temp file that it holds an exclusive ``flock`` on, then
fsyncs and renames it into place while still holding it; a directory's new entry is fsynced
too. A temp file nobody holds a lock on was left by a killed writer and may be removed. The
layout-wide lock file serialises index.json updates (exclusive) against temp file creation
(shared), so a sweep never takes a file in the instant between its creation and its lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

LOCK_FILE = ".regsync.lock"
TEMP_PREFIX = ".tmp-"


@contextlib.contextmanager
def locked(root: Path, mode: int) -> Iterator[None]:
    """Hold ``flock(mode)`` on ``root/.regsync.lock`` (fcntl.LOCK_SH or LOCK_EX)."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, mode)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def open_temp(root: Path, final: Path) -> tuple[BinaryIO, Path]:
    """A new temp file beside ``final``, open for writing and exclusively locked."""
    final.parent.mkdir(parents=True, exist_ok=True)
    with locked(root, fcntl.LOCK_SH):
        temp = final.parent / f"{TEMP_PREFIX}{final.name[:16]}-{secrets.token_hex(6)}"
        handle = temp.open("xb")
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    return handle, temp


def remove_orphans(root: Path, pattern: str) -> list[str]:
    """Remove the temp files matching ``pattern`` under ``root`` that no live writer holds.

    Call with the layout lock held exclusively. Returns the names removed.
    """
    removed = []
    for path in root.glob(pattern):
        with contextlib.suppress(OSError), path.open("rb") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its writer is alive
            path.unlink()
            removed.append(path.name)
    return removed


def replace_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: readers see the old file or the new one."""
    temp = path.with_name(f"{TEMP_PREFIX}{path.name}-{secrets.token_hex(6)}")
    try:
        with temp.open("xb") as handle:
            handle.write(data)
            sync_file(handle)
        rename_durably(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def sync_file(handle: BinaryIO) -> None:
    handle.flush()
    os.fsync(handle.fileno())


def rename_durably(temp: Path, final: Path) -> None:
    """Atomic replace, then fsync the directory so the new name survives a power cut."""
    os.replace(temp, final)
    fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
