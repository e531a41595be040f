"""An OCI image layout directory as a backend: how content crosses an air gap on disk.

Layout (OCI image-spec ``image-layout.md``)::

    <dir>/oci-layout            {"imageLayoutVersion": "1.0.0"}
    <dir>/index.json            an image index: one entry per tagged image
    <dir>/blobs/sha256/<hex>    every blob and every manifest, by digest

One layout holds many repositories. Each tag is one ``index.json`` entry whose annotations are
``org.opencontainers.image.ref.name: "<repo>:<tag>"`` (what ``skopeo inspect
oci:<dir>:<repo>:<tag>`` matches, exactly) and ``io.regsync.repository: "<repo>"``. Entries written
by other tools are read too: containerd's ``io.containerd.image.name`` (``docker save``,
``ctr export``), and a bare ``ref.name`` tag (``skopeo copy ... oci:<dir>:<tag>``), which is taken
to belong to the repository named like the layout directory.

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
import json
import logging
import os
from collections.abc import AsyncIterable, AsyncIterator, Callable
from pathlib import Path
from typing import Any

from regsync import boundedjson
from regsync.backends.layoutfs import (
    LOCK_FILE,
    TEMP_PREFIX,
    TempFile,
    is_regular,
    locked,
    open_dir,
    open_regular,
    read_capped,
    regular_size,
    remove_orphans,
    replace_file,
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
from regsync.oci.ref import OCI_PREFIX, Listed, is_repository, is_tag, shown, split_name

log = logging.getLogger(__name__)

REF_NAME = "org.opencontainers.image.ref.name"
REPOSITORY = "io.regsync.repository"
CONTAINERD_NAME = "io.containerd.image.name"
LAYOUT_FILE = "oci-layout"
INDEX_FILE = "index.json"
READ_CHUNK = 1024 * 1024
MAX_INDEX_BYTES = 64 * 1024 * 1024  # index.json is read whole: bound it
_OWN = frozenset({LOCK_FILE, "blobs", INDEX_FILE})  # what a half-initialised layout may hold

Entry = dict[str, Any]
Change = Callable[[list[Entry]], list[Entry]]


class Layout:
    """One OCI image layout directory. Implements the Backend protocol."""

    shares_blobs = True  # one blobs/ directory for every repository of the layout

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.root = Path(directory)
        self.name = f"{OCI_PREFIX}{directory}"
        self._catalog: dict[str, dict[str, Entry]] | None = None  # repo -> tag -> entry
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
            raise self._not_a_layout()
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
        entry = _entry(repo, ref, manifest.descriptor)
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
                e
                for e in entries
                if not ((k := self._key(e)) and k[0] == repo and e.get("digest") == digest)
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
        size = await asyncio.to_thread(regular_size, self.root, _blob_parts(desc.digest))
        return size == desc.size

    async def blob_read(self, repo: str, desc: Descriptor) -> AsyncIterator[bytes]:
        """Stream a blob, verifying size and digest (a disk carried across can rot)."""
        verifier = DigestVerifier(desc.digest, desc.size)
        try:
            handle = await asyncio.to_thread(open_regular, self.root, _blob_parts(desc.digest))
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

    def _index(self) -> dict[str, dict[str, Entry]]:
        """index.json by repository and tag, read once per run (then kept current by our
        writes: a run sees other writers' tags only from its next start)."""
        if self._catalog is None:
            entries = self._read_index(require=True).get("manifests", [])
            self._catalog = self._by_key([e for e in entries if isinstance(e, dict)])
        return self._catalog

    def _by_key(self, entries: list[Entry]) -> dict[str, dict[str, Entry]]:
        catalog: dict[str, dict[str, Entry]] = {}
        refused: dict[str, list[str]] = {}
        for entry in entries:  # a later entry for the same name wins, as in a registry
            if (named := self._named(entry)) is None:
                continue
            repo, tag = named
            if not is_repository(repo):
                refused.setdefault("", []).append(repo)
            elif not is_tag(tag):
                refused.setdefault(repo, []).append(tag)
            else:
                catalog.setdefault(repo, {})[tag] = entry
        self._refused = refused
        return catalog

    def _read_index(self, *, require: bool) -> dict[str, Any]:
        """``require``: a listing, which only a destination not written yet (missing, empty, or
        holding only the leftovers of a killed first export) may find empty."""
        if not self._is_layout():
            if require and (self.is_source or not self._leftovers_only()):
                raise self._not_a_layout()
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

    def _key(self, entry: Entry) -> tuple[str, str] | None:
        """(repository, tag) of an index entry, or None when it names none regsync can use.

        Annotations are text from outside: a name off the grammar is never a key.
        """
        named = self._named(entry)
        if named is None or not (is_repository(named[0]) and is_tag(named[1])):
            return None
        return named

    def _named(self, entry: Entry) -> tuple[str, str] | None:
        """What an index entry's annotations say its (repository, tag) is, unchecked."""
        annotations = entry.get("annotations")
        if not isinstance(annotations, dict):
            return None
        ref = str(annotations.get(REF_NAME, ""))
        repo = str(annotations.get(REPOSITORY, ""))
        if repo and ref.startswith(repo + ":"):
            return repo, ref[len(repo) + 1 :]
        if ":" in ref:
            name, _, tag = ref.rpartition(":")
            return name, tag
        full = str(annotations.get(CONTAINERD_NAME, ""))
        if full and "@" not in full and ":" in full.rsplit("/", 1)[-1]:
            name, _, tag = full.rpartition(":")
            return split_name(name)[1], tag
        if ref and is_repository(self.root.name):
            return self.root.name, ref
        return None

    def _find(self, repo: str, tag: str) -> Entry | None:
        return self._index().get(repo, {}).get(tag)

    def _without(self, entries: list[Entry], repo: str, tag: str) -> list[Entry]:
        return [e for e in entries if self._key(e) != (repo, tag)]

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
            data = self._read_index(require=False) or _empty_index()
            entries = [e for e in data.get("manifests", []) if isinstance(e, dict)]
            for change in changes:
                entries = change(entries)
            data["manifests"] = entries
            replace_file(self.root, INDEX_FILE, _dump(data))
        return entries

    # -- files ----------------------------------------------------------------------------

    def _is_layout(self) -> bool:
        """Both marker files are there (as regular files: a link or FIFO there is refused)."""
        return all(is_regular(self.root, [n], strict=True) for n in (LAYOUT_FILE, INDEX_FILE))

    def _not_a_layout(self) -> LayoutError:
        return LayoutError(f"{self.name} is not an OCI image layout (no {LAYOUT_FILE})")

    def _has(self, digest: str) -> bool:
        """A blob is there only as a regular file: anything else is content to write again."""
        return is_regular(self.root, _blob_parts(digest), strict=False)

    def _read_small(self, digest: str) -> bytes:
        try:
            raw = read_capped(self.root, _blob_parts(digest), mediatypes.MAX_MANIFEST_BYTES)
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
        try:
            self._refuse_foreign()  # before creating anything, even the lock file
            with locked(self.root, fcntl.LOCK_EX):  # another process may be initialising too
                self._refuse_foreign()
                with open_dir(self.root, ["blobs", "sha256"], create=True):
                    pass  # made, or there already as real directories (never links)
                if not is_regular(self.root, [INDEX_FILE], strict=True):
                    replace_file(self.root, INDEX_FILE, _dump(_empty_index()))
                if not is_regular(self.root, [LAYOUT_FILE], strict=True):  # last: says it is whole
                    replace_file(self.root, LAYOUT_FILE, b'{"imageLayoutVersion": "1.0.0"}')
                for name in remove_orphans(self.root):
                    log.info("%s: removed %s left by an interrupted run", self.name, name)
        except OSError as exc:
            raise LayoutError(f"{self.name}: cannot prepare the layout: {exc}") from exc

    def _refuse_foreign(self) -> None:
        if not self.root.is_dir() or is_regular(self.root, [LAYOUT_FILE], strict=True):
            return
        # Another writer may finish creating the layout (oci-layout comes last) between the
        # check above and the listing: a foreign name is refused only if still not whole.
        if not self._leftovers_only() and not is_regular(self.root, [LAYOUT_FILE], strict=True):
            raise LayoutError(
                f"{self.name} exists and is not an OCI image layout (no {LAYOUT_FILE}); "
                "give a new or empty directory"
            )

    def _leftovers_only(self) -> bool:
        """Missing, empty, or holding only what a first export killed early leaves behind."""
        if not self.root.exists():
            return True
        if not self.root.is_dir():
            return False
        return all(p.name in _OWN or p.name.startswith(TEMP_PREFIX) for p in self.root.iterdir())

    async def _write_blob(self, desc: Descriptor, chunks: AsyncIterable[bytes]) -> None:
        """Stream into a locked temp file, verify, fsync, rename into place."""
        try:
            temp = await asyncio.to_thread(TempFile, self.root, _blob_parts(desc.digest))
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


def _blob_parts(digest: str) -> list[str]:
    """Where a (validated) digest lives, from the layout root: blobs/<algorithm>/<hex>."""
    algorithm, _, hexa = digest.partition(":")
    return ["blobs", algorithm, hexa]


def _entry(repo: str, tag: str, desc: Descriptor) -> Entry:
    return {
        "mediaType": desc.media_type,
        "digest": desc.digest,
        "size": desc.size,
        "annotations": {REF_NAME: f"{repo}:{tag}", REPOSITORY: repo},
    }


def _empty_index() -> dict[str, Any]:
    return {"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX, "manifests": []}


def _dump(data: dict[str, Any]) -> bytes:
    return json.dumps(data, indent=2).encode() + b"\n"


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


__all__ = ["REF_NAME", "REPOSITORY", "Layout"]
