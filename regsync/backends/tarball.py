"""``tar:FILE``: an OCI layout packed in one tar file (``oci-archive``), for air-gap bundles.

It is the layout backend (``backends.layout.Layout``) over a private working directory, with
the archive behind it: the archive's ``index.json`` seeds the working one, a blob or manifest
is read from the working directory when written in this run, else straight from its member
in the archive (``backends.tarfs``: scanned once, never extracted, every member untrusted).
Writes go to the working directory exactly as to a layout (verified, crash-safe); at the end
of a run that wrote something, ``finish`` packs the archive's and the new content into a temp
file beside FILE and renames it into place. A crash or an interrupted run packs nothing: FILE
is the old bundle or absent, never half of one. The working directory is removed by ``discard``.

Index entries name tags as a layout's do (``org.opencontainers.image.ref.name:
"<repo>:<tag>"``), which is what ``skopeo inspect oci-archive:FILE:<repo>:<tag>`` matches.

Delta bundles (``delta: true``, see ``backends.bundle``): a rule's bundle starts from the tags
of its previous bundle and counts the blobs earlier bundles carried as present, so only new
content is packed; read back as a source, content a bundle left out fails with the bundle to
import first.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from regsync import boundedjson
from regsync.backends.bundle import MAX_CARRIERS, BundleSeries, read_left_out
from regsync.backends.layout import Layout
from regsync.backends.layoutdir import LAYOUT_FILE, LAYOUT_MARKER, blob_parts
from regsync.backends.layoutfs import open_regular, regular_size, replace_file
from regsync.backends.layoutindex import INDEX_FILE, MAX_INDEX_BYTES, empty_index
from regsync.backends.tarfs import BUNDLE_FILE, Archive, blob_name, pack
from regsync.errors import IntegrityError, LayoutError, ManifestError, NotFoundError
from regsync.oci import mediatypes
from regsync.oci.digest import DigestVerifier, is_digest
from regsync.oci.manifest import Descriptor, Manifest
from regsync.oci.ref import TAR_PREFIX, Listed

log = logging.getLogger(__name__)

READ_CHUNK = 1024 * 1024


class Tarball(Layout):
    """One ``tar:FILE``. Implements the Backend protocol (through ``Layout``)."""

    def __init__(self, path: str | os.PathLike[str], series: BundleSeries | None = None) -> None:
        self.path = Path(path)
        self._work = Path(tempfile.mkdtemp(prefix="regsync-tar-"))
        super().__init__(self._work / "layout")
        self.name = f"{TAR_PREFIX}{path}"
        self.series = series  # a delta bundle's series (a destination of a `delta: true` rule)
        self._archive: Archive | None = None
        self._elsewhere: dict[str, str] = {}  # digest -> why it is not here (another bundle)
        self._carriers: dict[str, list[str]] = {}  # left-out digest -> repositories it came for
        self._written: dict[str, set[str]] = {}  # digest -> repositories this run wrote it for
        self._manifests: set[str] = set()  # digests of the manifests this run wrote
        self._opened = False
        self._open_lock = threading.Lock()
        self._dirty = False
        self._found: tuple[int, int, int] | None = None  # FILE as this run opened it

    def __repr__(self) -> str:
        return f"Tarball({str(self.path)!r})"

    def exists(self) -> bool:
        """Whether FILE is there (what ``verify`` asks before reading a destination)."""
        return self.path.exists()

    # -- opening: the archive's index seeds the working layout ----------------------------

    def _open(self) -> None:
        if self._opened:
            return
        with self._open_lock:
            if not self._opened:
                self._seed()
                self._opened = True

    async def _opening(self) -> None:
        """Open off the event loop thread: scanning a large archive's headers takes a while."""
        if not self._opened:
            await asyncio.to_thread(self._open)

    async def tags(self, repo: str) -> Listed:
        await self._opening()
        return await super().tags(repo)

    def _seed(self) -> None:
        self._found = _identity(self.path)
        entries: list[Any] = []
        if self.series is not None:
            entries = list(self.series.entries)
            notes = {d: f"carried by bundle #{s}" for d, s in self.series.carried.items()}
            self._elsewhere = notes
        elif self.path.exists():
            entries = self._scan()
        elif self.is_source:
            raise LayoutError(f"{self.name}: no such file")
        index = {**empty_index(), "manifests": entries}
        try:
            self.root.mkdir(exist_ok=True)
            replace_file(self.root, INDEX_FILE, json.dumps(index).encode())
        except OSError as exc:
            raise LayoutError(f"{self.name}: cannot prepare a working directory: {exc}") from exc
        super()._initialise()
        self._ready = True

    def _scan(self) -> list[Any]:
        archive = self._archive = Archive.scan(self.path)
        for why in archive.skipped:
            log.warning("%s: %s", self.name, why)
        if not (archive.has(LAYOUT_FILE) and archive.has(INDEX_FILE)):
            raise LayoutError(f"{self.name} is not an OCI archive (no {LAYOUT_FILE}/{INDEX_FILE})")
        raw = archive.read(INDEX_FILE, MAX_INDEX_BYTES)
        try:
            if raw is None:
                raise ValueError("over the 64 MiB limit")
            data = boundedjson.loads(raw)
            entries = data.get("manifests") if isinstance(data, dict) else None
            if not isinstance(entries, list):
                raise ValueError("not an image index")
        except ValueError as exc:
            raise LayoutError(f"{self.name}: cannot read {INDEX_FILE}: {exc}") from exc
        if archive.has(BUNDLE_FILE):
            left_out = read_left_out(
                archive.read(BUNDLE_FILE, MAX_INDEX_BYTES) or b"", self.path.name
            )
            self._elsewhere, self._carriers = left_out.notes, left_out.carriers
        return [e for e in entries if isinstance(e, dict)]

    def _initialise(self) -> None:
        self._open()

    def _is_layout(self) -> bool:
        self._open()
        return super()._is_layout()

    def _index(self) -> dict[str, dict[str, dict[str, Any]]]:
        self._open()
        return super()._index()

    # -- content: the working directory, then the archive, then "another bundle has it" --

    def _has(self, digest: str) -> bool:
        self._open()
        return self._here(digest) is not None or digest in self._elsewhere

    def _here(self, digest: str) -> str | None:
        """Where the content is: "work", "archive", or None."""
        if super()._has(digest):
            return "work"
        if self._archive is not None and self._archive.has(blob_name(digest)):
            return "archive"
        return None

    def carriers(self, digest: str) -> list[str] | None:
        """For a blob this bundle left out: the repositories an earlier bundle of the series
        carried it for (where the engine may mount it from, within the rule); None for
        content the bundle holds or does not know."""
        return self._carriers.get(digest, []) if self.left_out(digest) else None

    def left_out(self, digest: str) -> bool:
        """Whether an earlier bundle of a delta series carried ``digest`` (it is not here)."""
        self._open()
        return self._here(digest) is None and digest in self._elsewhere

    def _absent(self, digest: str) -> NotFoundError:
        why = self._elsewhere.get(digest, "missing")
        return NotFoundError(f"{self.name}: {digest}: {why}", registry=self.name)

    def _read_small(self, digest: str) -> bytes:
        where = self._here(digest)
        if where == "work":
            return super()._read_small(digest)
        if where is None and self.series is not None:
            carried = self.series.carried_manifest(digest)  # an earlier bundle's, kept
            if carried is not None:
                return carried
        if where is None or self._archive is None:
            raise self._absent(digest)
        raw = self._archive.read(blob_name(digest), mediatypes.MAX_MANIFEST_BYTES)
        if raw is None:
            raise ManifestError(f"{self.name}: manifest {digest} is over the 4 MiB limit")
        return raw

    async def manifest_head(self, repo: str, ref: str) -> Descriptor | None:
        await self._opening()
        if is_digest(ref) and self.left_out(ref):
            return Descriptor("", ref, 0)  # an earlier bundle of the series carried it
        return await super().manifest_head(repo, ref)

    async def blob_read(self, repo: str, desc: Descriptor) -> AsyncIterator[bytes]:
        await self._opening()
        where = self._here(desc.digest)
        if where == "work":
            async for chunk in super().blob_read(repo, desc):
                yield chunk
            return
        if where is None or self._archive is None:
            raise self._absent(desc.digest)
        verifier = DigestVerifier(desc.digest, desc.size)
        chunks = self._archive.chunks(blob_name(desc.digest))
        while (piece := await asyncio.to_thread(_next, chunks)) is not None:
            verifier.update(piece)
            yield piece
        verifier.verify()

    async def blob_check(self, repo: str, desc: Descriptor) -> bool:
        """The source's proof (see ``Backend.blob_check``): the member or working file has the
        blob's size. Content a delta bundle left out is not proven by its word: the engine
        treats it as declared (``carriers``), within the rule's own repositories only."""
        await self._opening()
        where = self._here(desc.digest)
        if where == "archive" and self._archive is not None:
            return self._archive.members[blob_name(desc.digest)].size == desc.size
        if where == "work":
            return await super().blob_check(repo, desc)
        return False  # left out: declared (see carriers), never proven

    async def blob_verify(self, repo: str, desc: Descriptor) -> bool:
        """Whether the blob is here AND hashes to its digest (``verify`` reads every blob of
        a tar: bytes on a carried disk can rot). Content an earlier bundle carried counts."""
        await self._opening()
        if self._here(desc.digest) is None:
            return desc.digest in self._elsewhere
        try:
            async for _ in self.blob_read(repo, desc):
                pass
        except (IntegrityError, LayoutError) as exc:
            log.error("%s: blob %s is damaged: %s", self.name, desc.digest, exc)
            return False
        return True

    # -- writing: into the working layout, packed by finish() ------------------------------

    async def blob_upload(self, repo: str, desc: Descriptor, chunks: AsyncIterable[bytes]) -> None:
        await super().blob_upload(repo, desc, chunks)
        self._written.setdefault(desc.digest, set()).add(repo)

    async def manifest_put(self, repo: str, ref: str, manifest: Manifest) -> None:
        await super().manifest_put(repo, ref, manifest)
        self._written.setdefault(manifest.digest, set()).add(repo)
        self._manifests.add(manifest.digest)

    async def _write_blob(self, desc: Descriptor, chunks: Any) -> None:
        self._dirty = True
        await super()._write_blob(desc, chunks)

    async def _commit(self, change: Any) -> None:
        self._dirty = True
        await super()._commit(change)

    async def finish(self) -> None:
        """Pack and rename into place, when this run wrote anything; then record the bundle
        in its series (delta). Raises LayoutError (FILE is then as it was)."""
        if not self._dirty:
            return
        try:
            await asyncio.to_thread(self._pack)
        except OSError as exc:
            raise LayoutError(f"{self.name}: writing the bundle failed: {exc}") from exc
        self._dirty = False

    def _pack(self) -> None:
        data = self._read_index(require=True)
        entries = [e for e in data.get("manifests", []) if isinstance(e, dict)]
        new = self._work_blobs()
        files: list[tuple[str, int, Iterator[bytes]]] = []
        if self.series is not None:
            data["annotations"] = self.series.annotations()
            bundle = self.series.manifest()
            files.append((BUNDLE_FILE, len(bundle), iter([bundle])))
        index = json.dumps(data, indent=2).encode()
        files[:0] = [
            (LAYOUT_FILE, len(LAYOUT_MARKER), iter([LAYOUT_MARKER])),
            (INDEX_FILE, len(index), iter([index])),
        ]
        for digest, size in sorted(new.items()):
            files.append((blob_name(digest), size, self._work_chunks(digest)))
        archive = self._archive if self.series is None else None
        for digest in sorted(archive.digests if archive else ()):
            if digest not in new and archive is not None:
                member = archive.members[blob_name(digest)]
                chunks = _verified(digest, member.size, archive.chunks(blob_name(digest)))
                files.append((blob_name(digest), member.size, chunks))
        packed = pack(self.path, files, self._unchanged)
        log.info(
            "%s: packed %d new blobs, %d bytes (%s)",
            self.name,
            len(new),
            packed.size,
            packed.sha256,
        )
        if self.series is not None:
            carried = {d: sorted(self._written.get(d, ()))[:MAX_CARRIERS] for d in new}
            manifests = {d: Layout._read_small(self, d) for d in new if d in self._manifests}
            self.series.record(self.path.name, packed.sha256, carried, entries, manifests)

    def _unchanged(self) -> None:
        """FILE must still be the file this run started from: another run writing it in the
        meantime would otherwise lose its tags to this rename (the last writer wins)."""
        if _identity(self.path) != self._found:
            raise LayoutError(
                f"{self.name} was changed by another writer during this run; not replacing "
                "it (run again to add this run's content to it)"
            )

    def _work_blobs(self) -> dict[str, int]:
        """digest -> size of every blob written to the working directory."""
        found = {}
        blobs = self.root / "blobs"
        for algorithm in os.listdir(blobs):
            for hexa in os.listdir(blobs / algorithm):
                digest = f"{algorithm}:{hexa}"
                if is_digest(digest):
                    size = regular_size(self.root, blob_parts(digest))
                    if size is not None:
                        found[digest] = size
        return found

    def _work_chunks(self, digest: str) -> Iterator[bytes]:
        with open_regular(self.root, blob_parts(digest)) as handle:
            while chunk := handle.read(READ_CHUNK):
                yield chunk

    def discard(self) -> None:
        """Remove the working directory (whatever was not packed is dropped)."""
        shutil.rmtree(self._work, ignore_errors=True)


def _identity(path: Path) -> tuple[int, int, int] | None:
    """Which file is at ``path`` (inode, size, mtime); None when there is none."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _verified(digest: str, size: int, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """An old member packed again is checked against its digest on the way (damage on the
    disk is not carried into a new bundle: IntegrityError, and the pack is abandoned)."""
    verifier = DigestVerifier(digest, size)
    if size == 0:
        verifier.verify()
    for chunk in chunks:
        verifier.update(chunk)
        if verifier.received == size:  # before the last chunk goes: tarfile reads no further
            verifier.verify()
        yield chunk


def _next(chunks: Iterator[bytes]) -> bytes | None:
    return next(chunks, None)


__all__ = ["Tarball"]
