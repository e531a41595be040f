"""An OCI image layout directory as a backend: how content crosses an air gap on disk.

Layout (OCI image-spec ``image-layout.md``)::

    <dir>/oci-layout            {"imageLayoutVersion": "1.0.0"}
    <dir>/index.json            an image index: one entry per tagged image
    <dir>/blobs/sha256/<hex>    every blob and every manifest, by digest

One layout holds many repositories: each tag is one ``index.json`` entry (what names which
tag: ``layoutindex``). The directory's shape and its creation on first write are
``layoutdir``'s; the untrusting file primitives ``layoutfs``'s. This module is the backend:
listings, manifests and blobs over them, and index.json's commits.

Crash safety: a blob is streamed into a dot-named temp file beside its final name, verified
against its digest and size, fsynced, then renamed into place; a manifest is written only after
every blob and child it references is present; ``index.json`` is rewritten to a temp file and
renamed over the old one. A killed run therefore leaves at most orphaned temp files (removed by
the next writer) and complete blobs nothing points at yet -- never a tag naming missing content.
Two writers (processes) may share a layout: index updates re-read ``index.json`` under an
exclusive ``flock`` on ``<dir>/.regsync.lock``, so neither loses the other's tags.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import Any

from regsync import boundedjson
from regsync.backends import layoutdir, layoutindex
from regsync.backends.layoutdir import blob_parts, is_layout, leftovers_only, not_a_layout
from regsync.backends.layoutfs import (
    TempFile,
    is_regular,
    locked,
    open_regular,
    read_capped,
    regular_size,
    replace_file,
)
from regsync.backends.layoutindex import (
    INDEX_FILE,
    MAX_INDEX_BYTES,
    Catalog,
    Change,
    Entry,
    dump,
    empty_index,
    tag_entry,
)
from regsync.errors import (
    IntegrityError,
    LayoutError,
    ManifestError,
    NotFoundError,
    RegsyncError,
)
from regsync.oci import mediatypes
from regsync.oci.digest import DigestVerifier, is_digest, verify_bytes
from regsync.oci.manifest import Descriptor, Manifest, parse_manifest
from regsync.oci.ref import OCI_PREFIX, Listed, is_repository, shown

READ_CHUNK = 1024 * 1024


class Layout:
    """One OCI image layout directory. Implements the Backend protocol."""

    shares_blobs = True  # one blobs/ directory for every repository of the layout

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.root = Path(directory)
        self.name = f"{OCI_PREFIX}{directory}"
        self._catalog: Catalog | None = None
        self._refused: dict[str, list[str]] = {}  # repo ("" for none valid) -> refused names
        self.is_source = False  # read by a rule: it must be a whole layout, not leftovers
        self._ready = False
        self._init_lock = asyncio.Lock()
        self._commit_lock = asyncio.Lock()
        self._pending: list[tuple[Change, asyncio.Future[None]]] = []

    def __repr__(self) -> str:
        return f"Layout({str(self.root)!r})"

    def exists(self) -> bool:
        """Whether the directory is a layout (what ``verify`` asks before reading one)."""
        return self._is_layout()

    # -- listing -------------------------------------------------------------------------

    async def repositories(self) -> Listed:
        """Only a source is listed: a directory that is not a layout (yet) is an error here.

        Entries naming an invalid repository are refused (``rejected``), never used.
        """
        if not await asyncio.to_thread(self._is_layout):
            raise not_a_layout(self.name)
        catalog = self._index()
        return Listed(tuple(sorted(catalog)), tuple(self._refused.get("", ())))

    async def tags(self, repo: str) -> Listed:
        """A repository's tags; entries of it naming an invalid tag are ``rejected``."""
        tags = tuple(sorted(self._index().get(repo, ())))
        refused = tuple(self._refused.get(repo, ()))
        return Listed(tags, refused, missing=not tags and not refused)

    # -- manifests ------------------------------------------------------------------------

    async def manifest_head(self, repo: str, ref: str) -> Descriptor | None:
        if is_digest(ref):
            if not self._has(ref):
                return None
            raw = await asyncio.to_thread(self._read_small, ref)
            return Descriptor(_media_type(raw), ref, len(raw))
        entry = self._find(repo, ref)
        if entry is None:
            return None
        desc = Descriptor.from_json(entry)
        if self._has(desc.digest):
            return desc
        if self.is_source:  # damage (or a crafted bundle), not a tag that vanished: say so
            raise ManifestError(
                f"{self.name}: {repo}:{ref} names manifest {desc.digest}, which is missing"
            )
        return None  # a destination's tag whose manifest file is gone: absent, recopied

    async def manifest_get(self, repo: str, ref: str) -> Manifest:
        if is_digest(ref):
            digest, media_type = ref, ""
        else:
            entry = self._find(repo, ref)
            if entry is None:
                raise NotFoundError(f"{self.name}: no tag {repo}:{ref}", registry=self.name)
            desc = Descriptor.from_json(entry)
            digest, media_type = desc.digest, desc.media_type
        raw = await asyncio.to_thread(self._read_small, digest)
        try:
            verify_bytes(raw, digest)
            return parse_manifest(raw, media_type, digest=digest)
        except RegsyncError as exc:
            raise ManifestError(f"{self.name}/{repo}:{ref}: {exc}") from exc

    async def manifest_put(self, repo: str, ref: str, manifest: Manifest) -> None:
        """Write the manifest blob, then (for a tag) point ``repo:ref`` at it in index.json."""
        _check_repo(repo)
        try:
            verify_bytes(manifest.raw, manifest.digest)
        except IntegrityError as exc:  # before anything is written
            raise IntegrityError(f"{self.name}/{repo}:{ref}: {exc}") from exc
        await self._ensure()
        missing = [
            d.digest for d in (*manifest.blobs, *manifest.children) if not self._has(d.digest)
        ]
        if missing:
            raise ManifestError(
                f"{self.name}/{repo}:{ref}: refusing to write a manifest whose content is "
                f"missing ({', '.join(missing[:3])})"
            )
        if not self._has(manifest.digest):
            await self._write_blob(manifest.descriptor, _once(manifest.raw))
        if is_digest(ref):
            return
        entry = tag_entry(repo, ref, manifest.descriptor)
        await self._commit(lambda entries: [*self._without(entries, repo, ref), entry])

    async def manifest_delete(self, repo: str, digest: str) -> None:
        """Drop every tag of ``repo`` pointing at ``digest`` (like a registry); blobs stay."""
        if not is_digest(digest):
            raise ValueError(f"manifest_delete takes a digest, not {digest!r}; use tag_delete")
        if not self._has(digest):
            raise NotFoundError(f"{self.name}: no manifest {digest}", registry=self.name)
        await self._ensure()

        def drop(entries: list[Entry]) -> list[Entry]:
            return [
                e for e in entries if not (self._repo_of(e) == repo and e.get("digest") == digest)
            ]

        await self._commit(drop)

    async def tag_delete(self, repo: str, tag: str) -> None:
        """Drop the index.json entry of ``repo:tag`` only; other tags on its digest stay."""
        if is_digest(tag):
            raise ValueError(f"tag_delete takes a tag, not the digest {tag}; use manifest_delete")
        if self._find(repo, tag) is None:
            raise NotFoundError(f"{self.name}: no tag {repo}:{tag}", registry=self.name)
        await self._ensure()
        await self._commit(lambda entries: self._without(entries, repo, tag))

    # -- blobs ----------------------------------------------------------------------------

    async def referrers(self, repo: str, digest: str) -> list[Descriptor] | None:
        return None  # no referrers API: artifacts travel as sha256-<hex> fallback tags

    async def blob_head(self, repo: str, digest: str) -> bool:
        return self._has(digest)

    async def blob_check(self, repo: str, desc: Descriptor) -> bool:
        """The layout holds the file, with the blob's size (its blobs serve every repo)."""
        size = await asyncio.to_thread(regular_size, self.root, blob_parts(desc.digest))
        return size == desc.size

    async def blob_read(self, repo: str, desc: Descriptor) -> AsyncIterator[bytes]:
        """Stream a blob, verifying size and digest (a disk carried across can rot)."""
        verifier = DigestVerifier(desc.digest, desc.size)
        try:
            handle = await asyncio.to_thread(open_regular, self.root, blob_parts(desc.digest))
        except FileNotFoundError as exc:
            raise NotFoundError(f"{self.name}: blob {desc.digest} is missing") from exc
        except OSError as exc:
            raise LayoutError(f"{self.name}: cannot read blob {desc.digest}: {exc}") from exc
        with handle:
            while chunk := await asyncio.to_thread(handle.read, READ_CHUNK):
                verifier.update(chunk)
                yield chunk
        verifier.verify()

    async def blob_upload(self, repo: str, desc: Descriptor, chunks: AsyncIterable[bytes]) -> None:
        await self._ensure()
        await self._write_blob(desc, chunks)

    async def blob_mount(self, repo: str, digest: str, from_repo: str) -> bool:
        return self._has(digest)  # blobs are shared by every repository of a layout

    # -- index.json -----------------------------------------------------------------------

    def _index(self) -> Catalog:
        """index.json by repository and tag, read once per run (then kept current by our
        writes: a run sees other writers' tags only from its next start)."""
        if self._catalog is None:
            entries = self._read_index(require=True).get("manifests", [])
            self._catalog = self._by_key([e for e in entries if isinstance(e, dict)])
        return self._catalog

    def _by_key(self, entries: list[Entry]) -> Catalog:
        found, self._refused = layoutindex.catalog(entries, self.root.name)
        return found

    def _read_index(self, *, require: bool) -> dict[str, Any]:
        """``require``: a listing, which only a destination not written yet (missing, empty, or
        holding only the leftovers of a killed first export) may find empty."""
        if not self._is_layout():
            if require and (self.is_source or not leftovers_only(self.root)):
                raise not_a_layout(self.name)
            return {}
        try:
            raw = read_capped(self.root, [INDEX_FILE], MAX_INDEX_BYTES)
            if raw is None:
                raise LayoutError(f"{self.name}: {INDEX_FILE} is over the 64 MiB limit")
            data = boundedjson.loads(raw)
        except (OSError, ValueError) as exc:
            raise LayoutError(f"{self.name}: cannot read {INDEX_FILE}: {exc}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("manifests", []), list):
            raise LayoutError(f"{self.name}: {INDEX_FILE} is not an image index")
        return data

    def _repo_of(self, entry: Entry) -> str | None:
        key = layoutindex.key(entry, self.root.name)
        return key[0] if key else None

    def _find(self, repo: str, tag: str) -> Entry | None:
        return self._index().get(repo, {}).get(tag)

    def _without(self, entries: list[Entry], repo: str, tag: str) -> list[Entry]:
        return layoutindex.without(entries, repo, tag, self.root.name)

    async def _commit(self, change: Change) -> None:
        """Apply ``change`` to index.json. Concurrent commits are written together in one go."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((change, done))
        async with self._commit_lock:
            if done.done():
                return done.result()  # a previous holder wrote our change with its own
            batch, self._pending = self._pending, []
            try:
                entries = await asyncio.to_thread(self._rewrite_index, [c for c, _ in batch])
            except BaseException as exc:
                error = LayoutError(f"{self.name}: updating {INDEX_FILE} failed: {exc}")
                for _, other in batch:
                    if other is not done:
                        other.set_exception(error)
                raise error from exc
            self._catalog = self._by_key(entries)
            for _, other in batch:
                other.set_result(None)
        return None

    def _rewrite_index(self, changes: list[Change]) -> list[Entry]:
        with locked(self.root, fcntl.LOCK_EX):
            data = self._read_index(require=False) or empty_index()
            entries = [e for e in data.get("manifests", []) if isinstance(e, dict)]
            for change in changes:
                entries = change(entries)
            data["manifests"] = entries
            replace_file(self.root, INDEX_FILE, dump(data))
        return entries

    # -- files ----------------------------------------------------------------------------

    def _is_layout(self) -> bool:
        return is_layout(self.root)

    def _has(self, digest: str) -> bool:
        """A blob is there only as a regular file: anything else is content to write again."""
        return is_regular(self.root, blob_parts(digest), strict=False)

    def _read_small(self, digest: str) -> bytes:
        try:
            raw = read_capped(self.root, blob_parts(digest), mediatypes.MAX_MANIFEST_BYTES)
        except FileNotFoundError as exc:
            raise NotFoundError(f"{self.name}: manifest {digest} is missing") from exc
        if raw is None:
            raise ManifestError(f"{self.name}: manifest {digest} is over the 4 MiB limit")
        return raw

    async def _ensure(self) -> None:
        """Create the layout on first write; remove temp files dead writers left behind."""
        if self._ready:
            return
        async with self._init_lock:
            if not self._ready:
                await asyncio.to_thread(self._initialise)
                self._ready = True

    def _initialise(self) -> None:
        layoutdir.initialise(self.root, self.name)

    async def _write_blob(self, desc: Descriptor, chunks: AsyncIterable[bytes]) -> None:
        """Stream into a locked temp file, verify, fsync, rename into place."""
        try:
            temp = await asyncio.to_thread(TempFile, self.root, blob_parts(desc.digest))
        except OSError as exc:
            raise LayoutError(f"{self.name}: cannot create a blob file: {exc}") from exc
        verifier = DigestVerifier(desc.digest, desc.size)
        try:  # renamed while still open (and locked): no sweep can take it
            async for chunk in chunks:
                verifier.update(chunk)
                await asyncio.to_thread(temp.write, chunk)
            verifier.verify()
            await asyncio.to_thread(temp.commit)
        except OSError as exc:
            reason = "the disk is full" if exc.errno == errno.ENOSPC else str(exc)
            raise LayoutError(f"{self.name}: writing blob {desc.digest} failed: {reason}") from exc
        finally:
            temp.close()


def _media_type(raw: bytes) -> str:
    try:
        data = boundedjson.loads(raw)
    except ValueError:
        return ""
    return str(data.get("mediaType", "")) if isinstance(data, dict) else ""


def _check_repo(repo: str) -> None:
    if not is_repository(repo):
        raise LayoutError(f"invalid repository name {shown(repo)} for an OCI layout")


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


__all__ = ["Layout"]
