"""The layout's crash safety, file by file (no sockets): temp files beside their final name,
renamed whole, swept only when no live writer holds them; blobs verified on the way in and
out; index.json replaced whole, its failures reported to every writer waiting on it.

The end-to-end cases (a killed import resumes, concurrent writers) are in ``test_layout.py``.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import stat
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from regsync.backends import layout as layout_module
from regsync.backends import layoutfs
from regsync.backends.layout import READ_CHUNK, Layout
from regsync.backends.layoutfs import TEMP_PREFIX, TempFile, locked, remove_orphans
from regsync.errors import IntegrityError, LayoutError, NotFoundError
from regsync.oci.manifest import Descriptor, parse_manifest
from tests.support import Blob, Image

BLOB = Blob.random(3 * READ_CHUNK + 10, seed="layoutfs")


def desc(blob: Blob, size: int | None = None) -> Descriptor:
    return Descriptor("application/octet-stream", blob.digest, blob.size if size is None else size)


async def chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


def blob_path(root: Path, digest: str) -> Path:
    algorithm, hexdigest = digest.split(":")
    return root / "blobs" / algorithm / hexdigest


# -- temp files ----------------------------------------------------------------------------


def test_a_temp_file_lands_whole_under_its_final_name_creating_its_directory(
    tmp_path: Path,
) -> None:
    temp = TempFile(tmp_path, ["blobs", "sha256", "final"])
    temp.write(b"data")
    temp.commit()
    temp.close()
    final = tmp_path / "blobs" / "sha256" / "final"
    assert final.read_bytes() == b"data"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(final.stat().st_mode) == 0o644 & ~umask
    assert [p.name for p in final.parent.iterdir()] == ["final"]  # no temp file left


def test_a_temp_file_removed_by_someone_else_closes_quietly(tmp_path: Path) -> None:
    temp = TempFile(tmp_path, ["x"])
    os.unlink(tmp_path / temp.name)
    temp.close()
    assert list(tmp_path.iterdir()) == [tmp_path / ".regsync.lock"]


def test_a_temp_file_that_cannot_be_opened_raises_its_error_and_leaks_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(fd: int, mode: str) -> None:
        os.close(fd)
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(os, "fdopen", refuse)
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(OSError, match="Too many open files"):
        TempFile(tmp_path, ["x"])
    assert len(os.listdir("/proc/self/fd")) == before


def test_a_blob_temp_file_waits_for_a_running_sweep(tmp_path: Path) -> None:
    """Blob temp files are created under the shared layout lock, so a sweep (exclusive) never
    sees one half made; index.json's are written under the exclusive lock already."""
    created = threading.Event()

    def create() -> None:
        TempFile(tmp_path, ["blobs", "sha256", "x"]).close()
        created.set()

    with locked(tmp_path, fcntl.LOCK_EX):
        writer = threading.Thread(target=create)
        writer.start()
        assert not created.wait(0.3)  # blocked for as long as the sweep holds the lock
    writer.join(10)
    assert created.is_set()
    with locked(tmp_path, fcntl.LOCK_EX):
        layoutfs.replace_file(tmp_path, "index.json", b"{}")  # no shared lock: no deadlock
    assert (tmp_path / "index.json").read_bytes() == b"{}"


# -- the orphan sweep ----------------------------------------------------------------------


def test_the_sweep_removes_dead_writers_files_and_nothing_else(tmp_path: Path) -> None:
    blobs = tmp_path / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (tmp_path / f"{TEMP_PREFIX}index-dead").write_bytes(b"x")
    (blobs / f"{TEMP_PREFIX}blob-dead").write_bytes(b"x")
    (blobs / "kept").write_bytes(b"x")  # not a temp file
    os.mkfifo(blobs / f"{TEMP_PREFIX}fifo")
    os.symlink("/etc/passwd", blobs / f"{TEMP_PREFIX}link")
    (tmp_path / "blobs" / "junk").write_bytes(b"x")  # a file where a directory belongs
    os.symlink("/nonexistent", tmp_path / "blobs" / "dangling")
    live = TempFile(tmp_path, ["blobs", "sha256", "live"])

    removed = remove_orphans(tmp_path)

    assert sorted(removed) == [f"{TEMP_PREFIX}blob-dead", f"{TEMP_PREFIX}index-dead"]
    left = sorted(p.name for p in blobs.iterdir())
    assert left == sorted([f"{TEMP_PREFIX}fifo", f"{TEMP_PREFIX}link", live.name, "kept"])
    live.close()


def test_a_sweep_of_a_layout_without_blobs_removes_its_own_temp_files(tmp_path: Path) -> None:
    (tmp_path / f"{TEMP_PREFIX}index-dead").write_bytes(b"x")
    assert remove_orphans(tmp_path) == [f"{TEMP_PREFIX}index-dead"]


# -- blobs in and out ----------------------------------------------------------------------


async def test_a_blob_of_the_wrong_size_is_refused_and_leaves_no_file(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    data = b"right bytes, wrong size"
    blob = Blob(data)
    with pytest.raises(IntegrityError, match="received"):
        await layout.blob_upload("r", desc(blob, len(data) + 1), chunks(data))
    assert not blob_path(tmp_path, blob.digest).exists()


async def test_a_blob_is_read_in_bounded_chunks_and_checked_for_its_size(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    await layout.blob_upload("r", desc(BLOB), chunks(BLOB.data))
    got = [c async for c in layout.blob_read("r", desc(BLOB))]
    assert b"".join(got) == BLOB.data and max(map(len, got)) == READ_CHUNK
    with pytest.raises(IntegrityError, match="received"):
        async for _ in layout.blob_read("r", desc(BLOB, BLOB.size - 1)):
            pass


async def test_a_missing_or_unreadable_blob_says_which(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = Layout(tmp_path)
    await layout.blob_upload("r", desc(BLOB), chunks(BLOB.data))
    other = Blob.random(10, seed="absent")
    with pytest.raises(NotFoundError) as missing:
        async for _ in layout.blob_read("r", desc(other)):
            pass
    assert str(missing.value) == f"{layout.name}: blob {other.digest} is missing"

    def refuse(root: Path, parts: list[str]) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(layout_module, "open_regular", refuse)
    with pytest.raises(LayoutError) as unreadable:
        async for _ in layout.blob_read("r", desc(BLOB)):
            pass
    assert str(unreadable.value) == (
        f"{layout.name}: cannot read blob {BLOB.digest}: [Errno 13] Permission denied"
    )


@pytest.mark.parametrize(
    ("code", "reason"),
    [(errno.ENOSPC, "the disk is full"), (errno.EIO, "[Errno 5] Input/output error")],
)
async def test_a_failed_blob_write_names_the_blob_and_the_cause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, reason: str
) -> None:
    layout = Layout(tmp_path)
    first = Blob.random(10, seed="first")
    await layout.blob_upload("r", desc(first), chunks(first.data))  # the layout exists

    def fail(self: TempFile, data: bytes) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(TempFile, "write", fail)
    with pytest.raises(LayoutError) as caught:
        await layout.blob_upload("r", desc(BLOB), chunks(BLOB.data))
    assert str(caught.value) == f"{layout.name}: writing blob {BLOB.digest} failed: {reason}"
    assert not blob_path(tmp_path, BLOB.digest).exists()


async def test_a_blob_file_that_cannot_be_created_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = Layout(tmp_path)
    await layout.blob_upload("r", desc(BLOB), chunks(BLOB.data))  # the layout exists

    def refuse(*args: object, **kwargs: object) -> TempFile:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(layout_module, "TempFile", refuse)
    other = Blob.random(10, seed="other")
    with pytest.raises(LayoutError) as caught:
        await layout.blob_upload("r", desc(other), chunks(other.data))
    assert str(caught.value) == (
        f"{layout.name}: cannot create a blob file: [Errno 30] Read-only file system"
    )


# -- index.json ----------------------------------------------------------------------------


async def test_a_failed_index_update_fails_every_writer_batched_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = Layout(tmp_path)
    images = [Image.oci([Blob.random(100, seed=f"i{n}")]) for n in range(3)]
    for image in images:
        for m in image.walk():
            for blob in m.blobs:
                await layout.blob_upload("r", desc(blob), chunks(blob.data))
    real = layoutfs.replace_file

    def full(root: Path, name: str, data: bytes) -> None:
        if name == "index.json":
            raise OSError(errno.ENOSPC, "No space left on device")
        real(root, name, data)

    monkeypatch.setattr(layout_module, "replace_file", full)
    puts = [
        layout.manifest_put("r", f"t{n}", parse_manifest(image.raw, image.media_type))
        for n, image in enumerate(images)
    ]
    results = await asyncio.gather(*puts, return_exceptions=True)
    expected = f"{layout.name}: updating index.json failed: [Errno 28] No space left on device"
    assert [str(r) for r in results] == [expected] * 3
    assert all(isinstance(r, LayoutError) for r in results)
    monkeypatch.setattr(layout_module, "replace_file", real)
    await layout.manifest_put("r", "t0", parse_manifest(images[0].raw, images[0].media_type))
    assert (await layout.tags("r")).names == ("t0",)  # the catalog follows the file
