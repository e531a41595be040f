"""verify's walk and repair decisions between two in-memory backends (no sockets): what a
destination tag lacks, and that repair copies exactly that back, then checks again.

The end-to-end cases (real registries, `regsync verify --repair`) are in ``test_verify.py``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable

import pytest

from regsync.backends.memory import MemoryBackend
from regsync.blobledger import BlobLedger
from regsync.copy import CopyEngine
from regsync.oci.manifest import Descriptor
from regsync.verify import Missing, VerifyResult, _repair, _RepoWalk
from tests.support import Blob, Image, Index, stored

REPO = "team/app"
LAYER = Blob.random(300, seed="verify-layer")
ARM = Image.oci([Blob.random(200, seed="verify-arm")], "linux/arm64")
IMAGE = Image.oci([LAYER], "linux/amd64")
INDEX = Index.oci([IMAGE, ARM])


async def mirrored() -> tuple[MemoryBackend, MemoryBackend, CopyEngine]:
    """The index under ``1.0`` in both; the engine copying source -> destination."""
    source, dest = MemoryBackend("src"), MemoryBackend("dst")
    for backend in (source, dest):
        await stored.store(backend, REPO, "1.0", INDEX)
        backend.calls.clear()
    return source, dest, CopyEngine(source, dest, BlobLedger(), asyncio.Semaphore(2))


async def check(dest: MemoryBackend) -> tuple[str | None, list[Missing], VerifyResult]:
    result = VerifyResult("r")
    digest, missing = await _RepoWalk(dest, REPO, result).tag("1.0")
    return digest, missing, result


async def repair(engine: CopyEngine, dest: MemoryBackend) -> VerifyResult:
    result = VerifyResult("r")
    walk = _RepoWalk(dest, REPO, result)
    digest, missing = await walk.tag("1.0")
    await _repair(engine, REPO, walk, "1.0", digest, missing, result)
    return result


async def test_a_complete_tag_lacks_nothing_and_each_item_is_checked_once() -> None:
    _, dest, _ = await mirrored()
    digest, missing, result = await check(dest)
    assert digest == INDEX.digest and missing == []
    # the index and its two images; two layers and two configs
    assert (result.tags, result.manifests, result.blobs) == (1, 3, 4)


async def test_a_lost_blob_is_found_and_copied_back_alone() -> None:
    source, dest, engine = await mirrored()
    dest.repos[REPO].blobs.discard(LAYER.digest)
    _, missing, _ = await check(dest)
    assert missing == [Missing(f"{REPO}:1.0", LAYER.digest, "blob")]

    result = await repair(engine, dest)

    assert result.repaired == [f"{REPO}:1.0"] and result.errors == []
    assert (await check(dest))[1] == []
    assert [c for c in dest.calls if c[0] == "manifest_put"] == []  # the blob alone
    assert source.count("blob_read") == 1


async def test_a_lost_child_manifest_is_copied_back_by_digest() -> None:
    _, dest, engine = await mirrored()
    del dest.repos[REPO].manifests[ARM.digest]
    _, missing, _ = await check(dest)
    assert missing == [Missing(f"{REPO}:1.0", ARM.digest, "manifest")]

    result = await repair(engine, dest)

    assert result.repaired == [f"{REPO}:1.0"] and result.errors == []
    assert [c[2] for c in dest.calls if c[0] == "manifest_put"] == [ARM.digest]


async def test_a_tag_that_no_longer_resolves_is_copied_again_by_the_sources_tag() -> None:
    _, dest, engine = await mirrored()
    del dest.repos[REPO].tags["1.0"]
    digest, missing, _ = await check(dest)
    assert digest is None and missing == [Missing(f"{REPO}:1.0", "", "manifest")]

    result = await repair(engine, dest)

    assert result.repaired == [f"{REPO}:1.0"] and result.errors == []
    assert (await dest.manifest_head(REPO, "1.0")) is not None
    assert [c[2] for c in dest.calls if c[0] == "manifest_put"] == ["1.0"]


async def test_a_tag_the_source_lost_too_cannot_be_repaired_and_says_so() -> None:
    source, dest, engine = await mirrored()
    del dest.repos[REPO].tags["1.0"]
    del source.repos[REPO].tags["1.0"]

    result = await repair(engine, dest)

    assert result.repaired == []
    assert result.errors == [f"repair {REPO}:1.0: source {REPO}:1.0 no longer exists"]


class Forgetful(MemoryBackend):
    """Answers uploads but keeps nothing (a store losing writes)."""

    async def blob_upload(self, repo: str, desc: Descriptor, chunks: AsyncIterable[bytes]) -> None:
        async for _ in chunks:
            pass


async def test_a_repair_that_did_not_take_is_an_error_not_a_repair() -> None:
    source = MemoryBackend("src")
    dest = Forgetful("dst")
    await stored.store(source, REPO, "1.0", INDEX)
    for m in INDEX.walk():  # what store() would do, with the blobs put in place directly
        for blob in m.blobs:
            dest.blobs[blob.digest] = blob.data
            dest._repo(REPO).blobs.add(blob.digest)
    await stored.store(dest, REPO, "1.0", INDEX)
    dest.repos[REPO].blobs.discard(LAYER.digest)
    engine = CopyEngine(source, dest, BlobLedger(), asyncio.Semaphore(2))

    result = await repair(engine, dest)

    assert result.repaired == []
    assert result.errors == [f"repair {REPO}:1.0: still lacks 1 items"]


async def test_each_tag_is_counted_and_shared_content_checked_once() -> None:
    _, dest, _ = await mirrored()
    await stored.store(dest, REPO, "latest", INDEX)
    result = VerifyResult("r")
    walk = _RepoWalk(dest, REPO, result)
    for tag in ("1.0", "latest"):
        assert (await walk.tag(tag))[1] == []
    assert (result.tags, result.manifests, result.blobs) == (2, 3, 4)


async def test_a_lost_child_manifest_and_its_lost_blob_both_come_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, dest, engine = await mirrored()
    del dest.repos[REPO].manifests[IMAGE.digest]
    dest.repos[REPO].blobs.discard(LAYER.digest)

    with caplog.at_level(logging.WARNING, logger="regsync.verify"):
        result = await repair(engine, dest)

    assert result.repaired == [f"{REPO}:1.0"] and result.errors == []
    assert (await check(dest))[1] == []
    assert caplog.messages == [f"verify: repaired {REPO}:1.0 ({INDEX.digest})"]


class TagLinkOnly(MemoryBackend):
    """A tag still resolves (HEAD) though its manifest is gone, like a registry whose tag
    link outlived a deleted manifest revision."""

    async def manifest_head(self, repo: str, ref: str) -> Descriptor | None:
        digest = self.repos[repo].tags.get(ref)
        if digest is not None and digest not in self.repos[repo].manifests:
            return Descriptor(INDEX.media_type, digest, len(INDEX.raw))
        return await super().manifest_head(repo, ref)


async def test_a_tag_whose_own_manifest_is_gone_is_copied_again_by_its_digest() -> None:
    source, dest = MemoryBackend("src"), TagLinkOnly("dst")
    for backend in (source, dest):
        await stored.store(backend, REPO, "1.0", INDEX)
    del dest.repos[REPO].manifests[INDEX.digest]
    engine = CopyEngine(source, dest, BlobLedger(), asyncio.Semaphore(2))
    digest, missing, _ = await check(dest)
    assert digest == INDEX.digest
    assert missing == [Missing(f"{REPO}:1.0", INDEX.digest, "manifest")]

    result = await repair(engine, dest)

    assert result.repaired == [f"{REPO}:1.0"] and result.errors == []
    assert dest.repos[REPO].tags["1.0"] == INDEX.digest
    assert INDEX.digest in dest.repos[REPO].manifests


class Reading(MemoryBackend):
    """A destination that reads and hashes blobs to verify them (a tar bundle does)."""

    async def blob_verify(self, repo: str, desc: Descriptor) -> bool:
        return await self.blob_check(repo, desc)


async def test_a_truncated_blob_is_found_where_the_backend_can_read_it() -> None:
    dest = Reading("dst")
    await stored.store(dest, REPO, "1.0", INDEX)
    dest.blobs[LAYER.digest] = LAYER.data[:-1]  # a tar bundle member cut short
    _, missing, _ = await check(dest)
    assert missing == [Missing(f"{REPO}:1.0", LAYER.digest, "blob")]
    assert dest.count("blob_head") == 0


class HeadsOnly:
    """A destination that can only HEAD blobs (a registry): no blob_check, no left_out."""

    def __init__(self, inner: MemoryBackend) -> None:
        self.inner = inner
        self.manifest_head = inner.manifest_head
        self.manifest_get = inner.manifest_get
        self.blob_head = inner.blob_head


async def test_a_registry_destination_has_its_blobs_headed() -> None:
    _, dest, _ = await mirrored()
    dest.repos[REPO].blobs.discard(LAYER.digest)
    result = VerifyResult("r")
    _, missing = await _RepoWalk(HeadsOnly(dest), REPO, result).tag("1.0")  # type: ignore[arg-type]
    assert missing == [Missing(f"{REPO}:1.0", LAYER.digest, "blob")]
    assert dest.count("blob_head") == 4 and dest.count("blob_check") == 0


class Delta(MemoryBackend):
    """A delta bundle: manifests an earlier bundle of the series carried are left out."""

    def left_out(self, digest: str) -> bool:
        return digest == ARM.digest


async def test_what_an_earlier_bundle_carried_is_not_missing_from_a_delta() -> None:
    dest = Delta("dst")
    await stored.store(dest, REPO, "1.0", INDEX)
    del dest.repos[REPO].manifests[ARM.digest]
    _, missing, result = await check(dest)
    assert missing == [] and result.blobs == 2  # the amd64 image's layer and config only
