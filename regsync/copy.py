"""Copy one image between two backends, children first, with its exact bytes.

Order is the invariant that keeps a mirror consistent: blobs, then child manifests by digest,
then the index, then the tag. A tag is pushed only after everything it references is in place,
so an interrupted or failed copy never leaves a tag pointing at missing content.

Blob work is single-flight per (destination, digest): the first task that needs a blob in a
destination repository uploads it; tasks needing it in other repositories of the same
destination wait, then mount it from there instead of sending the bytes again. Across runs,
the persistent content index (``regsync.blobindex``) names repositories an earlier run saw
holding a blob: a repository lacking it mounts it from one of them before any byte is
downloaded; a holder that refuses the mount is forgotten and the blob uploaded as usual.

Reuse is proven first (invariant 10): a blob is mounted, or taken as already present at the
destination, only once the source repository being copied has shown it holds that blob (it
served it in this run, or answered a HEAD with the same digest and size, or the layout holds
the file); a child manifest already at the destination, once the source answered a HEAD for
it. The ledger and the content index choose where to mount from, never whether the source
owns the content: a source naming a digest it lacks gets that blob read from it, and fails.

Manifest GETs are single-flight per (source repository, digest) and an image's content is placed
once per destination repository: tags sharing a digest cost one source GET between them (the
parsed manifests are kept within a memory budget: ``regsync.manifestcache``). One blob's bytes
are streamed by ``regsync.transfer``; this module decides whether they need to be.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from regsync.aio import first_error
from regsync.backends import Backend
from regsync.backends.registry.observer import NullObserver, RequestObserver
from regsync.backends.registry.retry import RetryPolicy
from regsync.blobledger import BlobLedger
from regsync.errors import (
    ManifestError,
    RegistryError,
    RegsyncError,
    TransportError,
)
from regsync.keyedlocks import KeyedLocks
from regsync.lru import LRU
from regsync.manifestcache import ManifestCache
from regsync.oci import mediatypes
from regsync.oci.manifest import Descriptor, Manifest
from regsync.transfer import transfer_blob

log = logging.getLogger(__name__)


@dataclass
class CopyStats:
    """Counters of one rule's copy work (the JSON summary and the metrics read these)."""

    blobs_copied: int = 0
    blobs_mounted: int = 0
    blobs_present: int = 0
    bytes_copied: int = 0
    manifests_pushed: int = 0
    source_manifest_gets: int = 0

    def count_blob(self, outcome: str) -> None:
        """One blob placed: outcome is copied, mounted or present."""
        if outcome == "copied":
            self.blobs_copied += 1
        elif outcome == "mounted":
            self.blobs_mounted += 1
        else:
            self.blobs_present += 1


@dataclass
class CopyEngine:
    """Copies images from one source backend to one destination backend."""

    source: Backend
    destination: Backend
    ledger: BlobLedger
    transfers: asyncio.Semaphore  # bounds concurrent blob streams into the destination
    stats: CopyStats = field(default_factory=CopyStats)
    on_bytes: Callable[[int], None] = lambda n: None
    on_blob: Callable[[str], None] = lambda outcome: None  # copied | mounted | present
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    observer: RequestObserver = field(default_factory=NullObserver)
    # Repair (verify --repair) walks every child even when its manifest exists: the child's
    # own blobs may be the ones missing.
    trust_children: bool = True
    # (destination repo, blob, True) when a blob stream starts, (.., False) when it ends.
    on_transfer: Callable[[str, Descriptor, bool], None] = lambda repo, desc, begins: None
    # Destination repositories that listed no tags when planned: a HEAD there can only find
    # what an interrupted earlier run left, so blobs go straight to mount-or-upload and child
    # manifests straight to copy (what this run placed, the ledger knows).
    fresh: set[str] = field(default_factory=set)
    # For a blob the source declares it left out (a delta bundle: an earlier bundle carried
    # it), this rule's destination repositories it was imported into; None when the source
    # makes no such claim. A declaration is no proof (a bundle is untrusted): it only lets
    # the blob count as present in the destination repository itself, or be mounted from
    # those repositories of this same rule -- never from the ledger or the content index.
    declared: Callable[[str], list[str] | None] = lambda digest: None
    _manifests: ManifestCache = field(default_factory=ManifestCache)
    # What this run placed, and what the source proved, for the most recently used keys
    # (``regsync.lru``): forgetting one costs a request, never a wrong answer.
    _placed: LRU[tuple[str, str, str], bool] = field(default_factory=LRU)
    _flights: KeyedLocks[tuple[str, str, str]] = field(default_factory=KeyedLocks)
    # (source repo, digest, size) -> whether that repository showed it holds the blob.
    _proofs: LRU[tuple[str, str, int], bool] = field(default_factory=LRU)

    async def get_manifest(self, repo: str, digest: str) -> Manifest:
        """The source manifest `digest`, fetched once per run however many tags share it."""
        key = (repo, digest)
        if (cached := self._manifests.get(key)) is not None:
            return cached
        async with self._flights.hold(("get", repo, digest)):
            if (cached := self._manifests.get(key)) is not None:
                return cached
            self.stats.source_manifest_gets += 1
            manifest = await self.source.manifest_get(repo, digest)
            self._manifests.remember(key, manifest)
            return manifest

    async def get_tag_manifest(self, repo: str, tag: str) -> Manifest:
        """The source manifest ``tag`` points at, by one GET: how a copying run plans a tag the
        destination lacks (no HEAD first); the copy then finds it with ``get_manifest``."""
        self.stats.source_manifest_gets += 1
        manifest = await self.source.manifest_get(repo, tag)
        self._manifests.remember((repo, manifest.digest), manifest)
        return manifest

    async def copy_tag(self, src_repo: str, dst_repo: str, tag: str, digest: str) -> Manifest:
        """Copy the image `digest` and point `dst_repo:tag` at it. Returns the source manifest."""
        manifest = await self.get_manifest(src_repo, digest)
        await self.place_content(src_repo, dst_repo, manifest)
        await self.push_manifest(dst_repo, tag, manifest)
        return manifest

    async def retag(self, src_repo: str, dst_repo: str, tag: str, digest: str) -> Manifest:
        """Point ``dst_repo:tag`` at ``digest``, which another tag of ``dst_repo`` has (its
        content is in place: a manifest is pushed only after it). The bytes come from the
        destination, verified against ``digest``: no source pull. Copies from the source if
        the destination no longer has it."""
        manifest = self._manifests.get((src_repo, digest))
        if manifest is None:
            try:
                manifest = await self.destination.manifest_get(dst_repo, digest)
            except RegsyncError as exc:
                log.debug("%s@%s not readable at the destination: %s", dst_repo, digest, exc)
                return await self.copy_tag(src_repo, dst_repo, tag, digest)
        await self.push_manifest(dst_repo, tag, manifest)
        return manifest

    async def push_manifest(self, dst_repo: str, ref: str, manifest: Manifest) -> None:
        """Put ``manifest`` in the destination under ``ref`` (a tag or its digest) and count
        it: every manifest a run writes goes through here, so ``manifests_pushed`` is exact.
        The caller placed what it references first."""
        await self.destination.manifest_put(dst_repo, ref, manifest)
        self.stats.manifests_pushed += 1

    async def place_content(self, src_repo: str, dst_repo: str, manifest: Manifest) -> None:
        """`copy_content`, once per (destination repository, digest) in this run: the other
        tags of the same image wait for it, then only push their tag."""
        key = ("content", dst_repo, manifest.digest)
        if key in self._placed:
            return
        async with self._flights.hold(key):
            if key not in self._placed:
                await self.copy_content(src_repo, dst_repo, manifest)
                self._placed[key] = True

    async def copy_content(
        self, src_repo: str, dst_repo: str, manifest: Manifest, depth: int = 0
    ) -> None:
        """Everything `manifest` references, in the destination repository.

        ``depth``: how many indexes up this manifest is nested. Past ``mediatypes.MAX_NESTING``
        the source is refused: it could otherwise chain indexes for one source GET per level.
        """
        if manifest.children and depth >= mediatypes.MAX_NESTING:
            raise ManifestError(f"indexes nested over {mediatypes.MAX_NESTING} deep are not copied")
        try:
            async with asyncio.TaskGroup() as group:
                for child in manifest.children:
                    group.create_task(self._copy_child(src_repo, dst_repo, child, depth + 1))
                for blob in manifest.blobs:
                    group.create_task(self.copy_blob(src_repo, dst_repo, blob))
        except BaseExceptionGroup as errors:
            # The first failure cancelled its siblings; report it as the tag's error.
            raise first_error(errors) from errors

    async def copy_by_digest(self, src_repo: str, dst_repo: str, digest: str) -> None:
        """The image ``digest`` and its content, pushed by digest (a referrer the API lists),
        unless the destination has it and the source shows it too."""
        if not await self._manifest_in_place(src_repo, dst_repo, digest):
            await self._copy_manifest(src_repo, dst_repo, digest, 0)

    async def _copy_child(self, src_repo: str, dst_repo: str, desc: Descriptor, depth: int) -> None:
        key = ("child", dst_repo, desc.digest)  # content and the manifest pushed by digest
        if key in self._placed:
            return
        if (
            self.trust_children
            and dst_repo not in self.fresh
            and await self._manifest_in_place(src_repo, dst_repo, desc.digest)
        ):
            return
        async with self._flights.hold(key):  # a failed leader lets the next waiter try
            if key in self._placed:
                return
            await self._copy_manifest(src_repo, dst_repo, desc.digest, depth)
            self._placed[key] = True

    async def _copy_manifest(self, src_repo: str, dst_repo: str, digest: str, depth: int) -> None:
        """The source manifest ``digest``: its content, then itself pushed by digest."""
        manifest = await self.get_manifest(src_repo, digest)
        await self.copy_content(src_repo, dst_repo, manifest, depth)
        await self.push_manifest(dst_repo, manifest.digest, manifest)

    async def _manifest_in_place(self, src_repo: str, dst_repo: str, digest: str) -> bool:
        """Whether the destination has the manifest ``digest`` (a HEAD) and the source
        repository shows it too (invariant 10): only then is the copy there kept. A manifest
        is pushed only after its own content, so one that is there is complete."""
        return await self.destination.manifest_head(
            dst_repo, digest
        ) is not None and await self.manifest_proven(src_repo, digest)

    async def manifest_proven(self, src_repo: str, digest: str) -> bool:
        """Whether the source repository shows the manifest ``digest`` (a HEAD, or a GET this
        run made): only then may a copy of it already at the destination stand in for it."""
        if (src_repo, digest) in self._manifests:
            return True
        try:
            found = await self.source.manifest_head(src_repo, digest)
        except RegsyncError as exc:
            log.debug("source HEAD of %s@%s failed: %s", src_repo, digest, exc)
            return False
        return found is not None and found.digest == digest

    async def copy_blob(self, src_repo: str, dst_repo: str, desc: Descriptor) -> None:
        async with self.ledger.lock(desc.digest):
            outcome = await self._place_blob(src_repo, dst_repo, desc)
            self.ledger.record(desc.digest, dst_repo)
        self.stats.count_blob(outcome)
        self.on_blob(outcome)
        await self.ledger.flush()

    async def _place_blob(self, src_repo: str, dst_repo: str, desc: Descriptor) -> str:
        """Make the blob present in `dst_repo` the cheapest way the source's proof allows;
        returns how. Without proof it is read from the source, which fails if it lacks it."""
        present = self.ledger.holds(desc.digest, dst_repo) or (
            dst_repo not in self.fresh and await self.destination.blob_head(dst_repo, desc.digest)
        )
        holders = self.declared(desc.digest)
        if holders is not None:  # left out by the source: only this rule's own repositories
            if present or await self._mount_from(dst_repo, desc.digest, holders):
                return "present" if present else "mounted"
        elif present:
            if await self._proven(src_repo, desc):
                return "present"
        elif await self._mount_proven(src_repo, dst_repo, desc):
            return "mounted"
        async with self.transfers:
            self.on_transfer(dst_repo, desc, True)
            try:
                await self._transfer(src_repo, dst_repo, desc)
            finally:
                self.on_transfer(dst_repo, desc, False)
        self._proofs[(src_repo, desc.digest, desc.size)] = True  # the source served it
        return "copied"

    async def _proven(self, src_repo: str, desc: Descriptor) -> bool:
        """Whether the source repository being copied showed it holds ``desc`` (asked once)."""
        key = (src_repo, desc.digest, desc.size)
        proven = self._proofs.get(key)
        if proven is None:
            try:
                self._proofs[key] = proven = await self.source.blob_check(src_repo, desc)
            except RegsyncError as exc:
                log.debug("source HEAD of %s@%s failed: %s", src_repo, desc.digest, exc)
                return False  # not remembered: the read that follows tries the source again
        return proven

    async def _mount_proven(self, src_repo: str, dst_repo: str, desc: Descriptor) -> bool:
        """Mount from a repository this run filled, else from one an earlier run saw holding
        the blob (one that fails is forgotten); the source proves it owns the blob first,
        and only when there is somewhere to mount from."""
        other = self.ledger.elsewhere(desc.digest, dst_repo)
        if (
            other is not None
            and await self._proven(src_repo, desc)
            and await self._mount(dst_repo, desc.digest, other)
        ):
            return True
        holders = await self.ledger.known_holders(desc.digest, dst_repo)
        if not holders or not await self._proven(src_repo, desc):
            return False
        for holder in holders:
            if await self._mount(dst_repo, desc.digest, holder):
                return True
            self.ledger.forget(desc.digest, holder)
        return False

    async def _mount_from(self, dst_repo: str, digest: str, holders: list[str]) -> bool:
        for holder in holders:
            if holder != dst_repo and await self._mount(dst_repo, digest, holder):
                return True
        return False

    async def _mount(self, dst_repo: str, digest: str, from_repo: str) -> bool:
        """Mount ``digest`` from ``from_repo``; False when it did not (the upload still works:
        a mount is only ever a saving, so a refusal or a failed request never fails a tag)."""
        try:
            return await self.destination.blob_mount(dst_repo, digest, from_repo)
        except (RegistryError, TransportError) as exc:
            log.debug("mount of %s from %s failed: %s", digest, from_repo, exc)
            return False

    async def _transfer(self, src_repo: str, dst_repo: str, desc: Descriptor) -> None:
        sent = await transfer_blob(
            self.source,
            self.destination,
            src_repo,
            dst_repo,
            desc,
            retry=self.retry,
            observer=self.observer,
            on_bytes=self.on_bytes,
        )
        # Added after the await, not in `+= await`: that reads the counter before the await,
        # and concurrent transfers would each write back their own sum over the others'.
        self.stats.bytes_copied += sent
