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
from regsync.errors import (
    IntegrityError,
    LayoutError,
    ManifestError,
    NotFoundError,
    RegsyncError,
)
from regsync.layoutfs import (
    LOCK_FILE,
    TEMP_PREFIX,
    locked,
    open_temp,
    remove_orphans,
    rename_durably,
    replace_file,
    sync_file,
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
        self._ready = False
        self._init_lock = asyncio.Lock()
        self._commit_lock = asyncio.Lock()
        self._pending: list[tuple[Change, asyncio.Future[None]]] = []

    def __repr__(self) -> str:
        return f"Layout({str(self.root)!r})"

    # -- listing -------------------------------------------------------------------------

    async def repositories(self) -> Listed:
        """Only a source is listed: a directory that is not a layout (yet) is an error here.

        Entries naming an invalid repository are refused (``rejected``), never used.
        """
        if not (self.root / LAYOUT_FILE).is_file():
            raise LayoutError(f"{self.name} is not an OCI image layout (no {LAYOUT_FILE})")
        catalog = self._index()
        return Listed(tuple(sorted(catalog)), tuple(self._refused.get("", ())))

    async def tags(self, repo: str) -> Listed:
        """A repository's tags; entries of it naming an invalid tag are ``rejected``."""
        tags = tuple(sorted(self._index().get(repo, ())))
        return Listed(tags, tuple(self._refused.get(repo, ())))

    # -- manifests ------------------------------------------------------------------------

    async def manifest_head(self, repo: str, ref: str) -> Descriptor | None:
        if is_digest(ref):
            if not self._blob_path(ref).is_file():
                return None
            raw = await asyncio.to_thread(self._read_small, ref)
            return Descriptor(_media_type(raw), ref, len(raw))
        entry = self._find(repo, ref)
        if entry is None:
            return None
        desc = Descriptor.from_json(entry)
        # A tag whose manifest file is gone (edited by hand) is treated as absent: recopied.
        return desc if self._blob_path(desc.digest).is_file() else None

    async def manifest_get(self, repo: str, ref: str) -> Manifest:
        if is_digest(ref):
            digest, media_type = ref, ""
        else:
            entry = self._find(repo, ref)
            if entry is None:
                raise NotFoundError(f"{self.name}: no tag {repo}:{ref}", registry=self.name)
            desc = Descriptor.from_json(entry)
            digest, media_type = desc.digest, desc.media_type
        if not self._blob_path(digest).is_file():
            raise NotFoundError(f"{self.name}: manifest {digest} is missing", registry=self.name)
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

    async def blob_head(self, repo: str, digest: str) -> bool:
        return self._has(digest)

    async def blob_read(self, repo: str, desc: Descriptor) -> AsyncIterator[bytes]:
        """Stream a blob, verifying size and digest (a disk carried across can rot)."""
        path = self._blob_path(desc.digest)
        verifier = DigestVerifier(desc.digest, desc.size)
        try:
            handle = await asyncio.to_thread(path.open, "rb")
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
        index = self.root / INDEX_FILE
        if not (self.root / LAYOUT_FILE).is_file() or not index.is_file():
            if require and self.root.exists() and any(self.root.iterdir()):
                raise LayoutError(f"{self.name} is not an OCI image layout (no {LAYOUT_FILE})")
            return {}  # a destination not written yet: empty
        try:
            data = boundedjson.loads(index.read_bytes())
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
            replace_file(self.root / INDEX_FILE, _dump(data))
        return entries

    # -- files ----------------------------------------------------------------------------

    def _blob_path(self, digest: str) -> Path:
        algorithm, _, hexa = digest.partition(":")
        return self.root / "blobs" / algorithm / hexa

    def _has(self, digest: str) -> bool:
        return self._blob_path(digest).is_file()

    def _read_small(self, digest: str) -> bytes:
        with self._blob_path(digest).open("rb") as handle:
            raw = handle.read(mediatypes.MAX_MANIFEST_BYTES + 1)
        if len(raw) > mediatypes.MAX_MANIFEST_BYTES:
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
                (self.root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
                if not (self.root / INDEX_FILE).is_file():
                    replace_file(self.root / INDEX_FILE, _dump(_empty_index()))
                if not (self.root / LAYOUT_FILE).is_file():  # last: it says the layout is whole
                    replace_file(self.root / LAYOUT_FILE, b'{"imageLayoutVersion": "1.0.0"}')
                for name in remove_orphans(self.root / "blobs", f"*/{TEMP_PREFIX}*"):
                    log.info("%s: removed %s left by an interrupted run", self.name, name)
        except OSError as exc:
            raise LayoutError(f"{self.name}: cannot prepare the layout: {exc}") from exc

    def _refuse_foreign(self) -> None:
        if not self.root.is_dir() or (self.root / LAYOUT_FILE).is_file():
            return
        if any(
            p.name not in _OWN and not p.name.startswith(TEMP_PREFIX) for p in self.root.iterdir()
        ):
            raise LayoutError(
                f"{self.name} exists and is not an OCI image layout (no {LAYOUT_FILE}); "
                "give a new or empty directory"
            )

    async def _write_blob(self, desc: Descriptor, chunks: AsyncIterable[bytes]) -> None:
        """Stream into a locked temp file, verify, fsync, rename into place."""
        final = self._blob_path(desc.digest)
        try:
            handle, temp = await asyncio.to_thread(open_temp, self.root, final)
        except OSError as exc:
            raise LayoutError(f"{self.name}: cannot create a blob file: {exc}") from exc
        verifier = DigestVerifier(desc.digest, desc.size)
        try:
            with handle:  # renamed while still open (and locked): no sweep can take it
                async for chunk in chunks:
                    verifier.update(chunk)
                    await asyncio.to_thread(handle.write, chunk)
                verifier.verify()
                await asyncio.to_thread(sync_file, handle)
                await asyncio.to_thread(rename_durably, temp, final)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            reason = "the disk is full" if exc.errno == errno.ENOSPC else str(exc)
            raise LayoutError(f"{self.name}: writing blob {desc.digest} failed: {reason}") from exc
        except BaseException:
            temp.unlink(missing_ok=True)
            raise


class LayoutPool:
    """One Layout per directory for a run, so rules writing to one layout share its commits."""

    def __init__(self) -> None:
        self._layouts: dict[str, Layout] = {}

    def get(self, directory: str) -> Layout:
        key = os.path.abspath(directory)
        layout = self._layouts.get(key)
        if layout is None:
            layout = self._layouts[key] = Layout(directory)
        return layout


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


__all__ = ["REF_NAME", "REPOSITORY", "Layout", "LayoutPool"]
