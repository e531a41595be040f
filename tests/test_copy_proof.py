"""The copy engine's blob and child-manifest decisions between memory backends (no sockets):
content is reused (taken as present, mounted) only once the source proved it holds it
(invariant 10), and each proof or placement is asked for once.

The hostile end-to-end cases (another tenant's blob, real registries) are in
``test_hostile_mounts.py``; these pin each decision and what it costs in requests.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path

import pytest

from regsync.backends.memory import MemoryBackend
from regsync.blobindex import BlobIndex
from regsync.blobledger import BlobLedger
from regsync.copy import CopyEngine
from regsync.errors import NotFoundError, RegistryError
from regsync.oci.manifest import Descriptor, parse_manifest
from tests.support import Blob, Image, Index, stored

SRC = "team/app"
L1 = Blob.random(300, seed="proof-1")
L2 = Blob.random(300, seed="proof-2")


def desc(blob: Blob) -> Descriptor:
    return Descriptor("application/octet-stream", blob.digest, blob.size)


class Mounts(MemoryBackend):
    """Records where each mount was asked to come from; can fail mounts like a registry."""

    def __init__(self, name: str, fail_mounts: bool = False) -> None:
        super().__init__(name)
        self.mounted_from: list[tuple[str, str]] = []  # (into, from)
        self.fail_mounts = fail_mounts

    async def blob_mount(self, repo: str, digest: str, from_repo: str) -> bool:
        self.mounted_from.append((repo, from_repo))
        if self.fail_mounts:
            raise RegistryError(f"{self.name}: mount refused", registry=self.name, status=500)
        return await super().blob_mount(repo, digest, from_repo)


class Source(MemoryBackend):
    """A source whose blob HEADs can fail (a flaky registry)."""

    def __init__(self) -> None:
        super().__init__("src")
        self.check_fails = False
        self.head_fails = False

    async def manifest_head(self, repo: str, ref: str) -> Descriptor | None:
        if self.head_fails:
            raise RegistryError("src: HEAD -> 503", registry="src", status=503)
        return await super().manifest_head(repo, ref)

    async def blob_check(self, repo: str, desc: Descriptor) -> bool:
        if self.check_fails:
            self.calls.append(("blob_check", repo, desc.digest))
            raise RegistryError("src: HEAD -> 503", registry="src", status=503)
        return await super().blob_check(repo, desc)


async def put_blob(backend: MemoryBackend, repo: str, blob: Blob) -> None:
    await backend.blob_upload(repo, desc(blob), stored.one_chunk(blob.data))
    backend.calls.clear()


class Run:
    """An engine and what it reported: each blob's outcome and transfer begin/end."""

    def __init__(
        self, source: MemoryBackend, dest: MemoryBackend, ledger: BlobLedger | None = None
    ) -> None:
        self.outcomes: list[str] = []
        self.transfers: list[tuple[str, str, bool]] = []
        self.engine = CopyEngine(
            source,
            dest,
            ledger or BlobLedger(),
            asyncio.Semaphore(2),
            on_blob=self.outcomes.append,
            on_transfer=lambda repo, d, begins: self.transfers.append((repo, d.digest, begins)),
        )

    async def blob(self, dst_repo: str, blob: Blob, src_repo: str = SRC) -> None:
        await self.engine.copy_blob(src_repo, dst_repo, desc(blob))


async def test_a_blob_at_the_destination_is_present_once_the_source_showed_it() -> None:
    source, dest = Source(), Mounts("dst")
    await put_blob(source, SRC, L1)
    await put_blob(dest, "m/app", L1)
    run = Run(source, dest)

    await run.blob("m/app", L1)

    assert run.outcomes == ["present"] and run.engine.stats.blobs_present == 1
    assert source.calls == [("blob_check", SRC, L1.digest)]  # the proof; nothing read
    assert dest.calls == [("blob_head", "m/app", L1.digest)] and run.transfers == []


async def test_a_blob_the_source_cannot_show_is_read_from_it_even_if_the_destination_has_it() -> (
    None
):
    """A source naming a digest it lacks gets an error, not the destination's copy."""
    source, dest = Source(), Mounts("dst")
    await put_blob(source, "other/app", L1)  # the source holds it, but not in this repository
    await put_blob(dest, "m/app", L1)
    run = Run(source, dest)

    with pytest.raises(NotFoundError):
        await run.blob("m/app", L1)
    assert run.outcomes == [] and ("blob_read", SRC, L1.digest) in source.calls


async def test_a_proof_holds_for_its_own_blob_only() -> None:
    source, dest = Source(), Mounts("dst")
    await put_blob(source, SRC, L1)
    for blob in (L1, L2):
        await put_blob(dest, "m/app", blob)
    run = Run(source, dest)

    await run.blob("m/app", L1)
    with pytest.raises(NotFoundError):
        await run.blob("m/app", L2)
    assert run.outcomes == ["present"]


async def test_a_blob_placed_this_run_is_present_again_without_asking_anyone() -> None:
    source, dest = Source(), Mounts("dst")
    await put_blob(source, SRC, L1)
    run = Run(source, dest)
    run.engine.fresh.add("m/app")

    await run.blob("m/app", L1)
    await run.blob("m/app", L1)

    assert run.outcomes == ["copied", "present"]
    assert source.calls == [("blob_read", SRC, L1.digest)]  # served it: proof enough
    assert dest.count("blob_head") == 0 and dest.count("blob_upload") == 1
    assert run.transfers == [("m/app", L1.digest, True), ("m/app", L1.digest, False)]


async def test_a_blob_placed_this_run_is_mounted_into_the_next_repository() -> None:
    source, dest = Source(), Mounts("dst")
    await put_blob(source, SRC, L1)
    run = Run(source, dest)
    run.engine.fresh |= {"m/app", "m/two"}

    await run.blob("m/app", L1)
    await run.blob("m/two", L1)

    assert run.outcomes == ["copied", "mounted"] and run.engine.stats.blobs_mounted == 1
    assert dest.mounted_from == [("m/two", "m/app")]
    assert await dest.blob_head("m/two", L1.digest)
    assert source.calls == [("blob_read", SRC, L1.digest)]


async def test_a_mount_needs_the_proof_of_the_source_being_copied() -> None:
    """m/app got the blob from another source repository: this one must show it too."""
    source, dest = Source(), Mounts("dst")
    await put_blob(source, "other/app", L1)
    run = Run(source, dest)
    run.engine.fresh |= {"m/app", "m/two"}

    await run.blob("m/app", L1, src_repo="other/app")
    with pytest.raises(NotFoundError):
        await run.blob("m/two", L1)
    assert dest.mounted_from == []


async def test_a_first_copy_into_a_new_destination_asks_the_source_nothing_extra() -> None:
    source, dest = Source(), Mounts("dst")
    await put_blob(source, SRC, L1)
    run = Run(source, dest)
    run.engine.fresh.add("m/app")

    await run.blob("m/app", L1)

    assert source.calls == [("blob_read", SRC, L1.digest)] and dest.mounted_from == []


async def test_a_holder_an_earlier_run_saw_is_mounted_from_after_the_proof(
    tmp_path: Path,
) -> None:
    source, dest = Source(), Mounts("dst")
    await put_blob(source, SRC, L1)
    await put_blob(dest, "m/old", L1)
    seed = BlobIndex(tmp_path)
    for repo in ("m/new", "m/gone", "m/old"):  # the repository itself is never asked
        seed.record("dst", L1.digest, repo)
    seed.close()
    index = BlobIndex(tmp_path)
    index.knows("dst")
    run = Run(source, dest, BlobLedger(index=index, registry="dst"))
    run.engine.fresh.add("m/new")

    await run.blob("m/new", L1)

    assert run.outcomes == ["mounted"]
    assert [f for _, f in dest.mounted_from] in (["m/gone", "m/old"], ["m/old"])
    assert source.calls == [("blob_check", SRC, L1.digest)]
    index.close()


async def test_no_mount_from_an_earlier_runs_holder_without_the_sources_proof(
    tmp_path: Path,
) -> None:
    source, dest = Source(), Mounts("dst")
    await put_blob(dest, "m/old", L1)
    seed = BlobIndex(tmp_path)
    seed.record("dst", L1.digest, "m/old")
    seed.close()
    index = BlobIndex(tmp_path)
    index.knows("dst")
    run = Run(source, dest, BlobLedger(index=index, registry="dst"))
    run.engine.fresh.add("m/new")

    with pytest.raises(NotFoundError):
        await run.blob("m/new", L1)
    assert dest.mounted_from == [] and not await dest.blob_head("m/new", L1.digest)
    index.close()


async def test_a_failed_source_head_is_logged_and_asked_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source, dest = Source(), Mounts("dst")
    await put_blob(source, SRC, L1)
    await put_blob(dest, "m/app", L1)
    source.check_fails = True
    run = Run(source, dest)

    with caplog.at_level(logging.DEBUG, logger="regsync.copy"):
        await run.blob("m/app", L1)  # unproven: read from the source, copied
        source.check_fails = False
        await run.blob("m/app", L1)

    assert run.outcomes == ["copied", "present"]
    assert f"source HEAD of {SRC}@{L1.digest} failed: src: HEAD -> 503" in caplog.messages


async def test_a_failed_mount_is_logged_and_the_blob_uploaded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source, dest = Source(), Mounts("dst", fail_mounts=True)
    await put_blob(source, SRC, L1)
    run = Run(source, dest)
    run.engine.fresh |= {"m/app", "m/two"}

    with caplog.at_level(logging.DEBUG, logger="regsync.copy"):
        await run.blob("m/app", L1)
        await run.blob("m/two", L1)

    assert run.outcomes == ["copied", "copied"]
    assert f"mount of {L1.digest} from m/app failed: dst: mount refused" in caplog.messages


IMAGE = Image.oci([L1], "linux/amd64")
INDEX = Index.oci([IMAGE])


async def test_a_child_manifest_at_the_destination_stands_only_once_the_source_shows_it() -> None:
    source, dest = MemoryBackend("src"), Mounts("dst")
    await stored.store(source, SRC, "1.0", INDEX)
    await stored.store(dest, "m/app", "1.0", INDEX)
    index = parse_manifest(INDEX.raw, INDEX.media_type)
    for backend in (source, dest):
        backend.calls.clear()
    run = Run(source, dest)

    await run.engine.copy_content(SRC, "m/app", index)

    assert ("manifest_head", SRC, IMAGE.digest) in source.calls  # the proof
    assert source.count("manifest_get") == 0 and dest.count("manifest_put") == 0


async def test_a_child_the_source_lacks_is_not_taken_from_the_destination() -> None:
    source, dest = MemoryBackend("src"), Mounts("dst")
    await stored.store(dest, "m/app", "1.0", INDEX)
    index = parse_manifest(INDEX.raw, INDEX.media_type)
    run = Run(source, dest)

    with pytest.raises(NotFoundError):
        await run.engine.copy_content(SRC, "m/app", index)


async def test_a_referrer_at_the_destination_stands_only_once_the_source_shows_it() -> None:
    """A manifest copied by digest (a referrer the API lists) is skipped as a child is: the
    destination's HEAD finds it, then the source's HEAD proves it; nothing is read or put."""
    source, dest = MemoryBackend("src"), Mounts("dst")
    await stored.store(source, SRC, "1.0", IMAGE)
    await stored.store(dest, "m/app", "1.0", IMAGE)
    for backend in (source, dest):
        backend.calls.clear()
    run = Run(source, dest)

    await run.engine.copy_by_digest(SRC, "m/app", IMAGE.digest)

    assert dest.calls == [("manifest_head", "m/app", IMAGE.digest)]
    assert source.calls == [("manifest_head", SRC, IMAGE.digest)]  # the proof


async def test_a_referrer_the_source_lacks_is_not_taken_from_the_destination() -> None:
    source, dest = MemoryBackend("src"), Mounts("dst")
    await stored.store(dest, "m/app", "1.0", IMAGE)
    run = Run(source, dest)

    with pytest.raises(NotFoundError):
        await run.engine.copy_by_digest(SRC, "m/app", IMAGE.digest)


async def test_a_referrer_the_destination_lacks_is_copied_and_pushed_by_digest() -> None:
    source, dest = MemoryBackend("src"), Mounts("dst")
    await stored.store(source, SRC, "1.0", IMAGE)
    source.calls.clear()
    run = Run(source, dest)

    await run.engine.copy_by_digest(SRC, "m/app", IMAGE.digest)

    assert ("manifest_put", "m/app", IMAGE.digest) in dest.calls
    assert run.outcomes == ["copied", "copied"]  # the layer and the config
    assert (await dest.manifest_get("m/app", IMAGE.digest)).raw == IMAGE.raw


async def test_a_manifest_fetched_this_run_is_proof_without_a_head() -> None:
    source = MemoryBackend("src")
    await stored.store(source, SRC, "1.0", IMAGE)
    source.calls.clear()
    run = Run(source, MemoryBackend("dst"))

    assert not await run.engine.manifest_proven(SRC, INDEX.digest)  # not in the source
    await run.engine.get_manifest(SRC, IMAGE.digest)
    assert await run.engine.manifest_proven(SRC, IMAGE.digest)
    assert source.count("manifest_head") == 1  # only the first question needed one


async def test_a_failed_source_head_of_a_manifest_is_no_proof(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = Source()
    await stored.store(source, SRC, "1.0", IMAGE)
    source.head_fails = True
    run = Run(source, MemoryBackend("dst"))

    with caplog.at_level(logging.DEBUG, logger="regsync.copy"):
        assert not await run.engine.manifest_proven(SRC, IMAGE.digest)
    assert caplog.messages == [f"source HEAD of {SRC}@{IMAGE.digest} failed: src: HEAD -> 503"]


# -- content a delta bundle declared it left out ------------------------------------------


def declaring(run: Run, holders: list[str]) -> None:
    """The source (a delta bundle) declares it left L1 out, carried to ``holders``."""
    run.engine.declared = lambda digest: list(holders) if digest == L1.digest else None


async def test_declared_content_already_in_the_repository_is_present_without_the_source() -> None:
    source, dest = Source(), Mounts("dst")
    await put_blob(dest, "m/app", L1)
    run = Run(source, dest)
    declaring(run, ["m/app"])

    await run.blob("m/app", L1)

    assert run.outcomes == ["present"] and source.calls == []


async def test_declared_content_is_mounted_only_from_the_declared_repositories() -> None:
    source, dest = Source(), Mounts("dst")
    await put_blob(dest, "m/app", L1)
    await put_blob(dest, "elsewhere/x", L1)
    run = Run(source, dest)
    run.engine.fresh.add("m/new")
    declaring(run, ["m/new", "m/app"])  # the repository itself is never a mount source

    await run.blob("m/new", L1)

    assert run.outcomes == ["mounted"] and dest.mounted_from == [("m/new", "m/app")]
    assert await dest.blob_head("m/new", L1.digest) and source.calls == []


async def test_declared_content_no_declared_repository_holds_is_read_and_fails() -> None:
    source, dest = Source(), Mounts("dst")
    await put_blob(dest, "other/app", L1)  # held, but not where the bundle said
    run = Run(source, dest)
    run.engine.fresh.add("m/new")
    declaring(run, ["m/app"])

    with pytest.raises(NotFoundError):
        await run.blob("m/new", L1)
    assert run.outcomes == [] and not await dest.blob_head("m/new", L1.digest)


class Parked(MemoryBackend):
    """A source whose blob stream yields one chunk, then waits (a slow network)."""

    def __init__(self) -> None:
        super().__init__("src")
        self.parked = asyncio.Event()

    async def blob_read(self, repo: str, desc: Descriptor) -> AsyncIterator[bytes]:
        yield b"x"
        self.parked.set()
        await asyncio.Event().wait()


class EarlyAnswer(MemoryBackend):
    """A destination that reads the body in its own task (as aiohttp's body writer does) and
    answers with an error while that task is still waiting on the source."""

    def __init__(self, source: Parked) -> None:
        super().__init__("dst")
        self.source = source

    async def blob_upload(self, repo: str, desc: Descriptor, chunks: AsyncIterable[bytes]) -> None:
        async def body() -> None:
            async for _ in chunks:
                pass

        writer = asyncio.create_task(body())
        await self.source.parked.wait()
        await asyncio.sleep(0)  # the writer is inside the source's next chunk now
        try:
            raise RegistryError("dst: PUT -> 400 BLOB_UPLOAD_INVALID", registry="dst", status=400)
        finally:
            writer.cancel()


async def test_an_upload_refused_while_its_body_is_being_read_reports_the_refusal() -> None:
    """The source stream is still being read by the upload's own task when the destination
    answers: closing it then must not replace the destination's error with a RuntimeError
    ("aclose(): asynchronous generator is already running", an "internal error")."""
    source = Parked()
    dest = EarlyAnswer(source)
    await put_blob(source, SRC, L1)
    run = Run(source, dest)
    with pytest.raises(RegistryError, match="BLOB_UPLOAD_INVALID"):
        await run.blob("dst/app", L1)
