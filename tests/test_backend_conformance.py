"""The Backend contract, one suite for every backend: registry, layout, tarball, fallback, memory.

The registry and the fallback wrapper run against one real ``docker-registry`` (distribution
2.8, deletes enabled) started for the module; each test works in its own repository. Every
assertion holds for all four backends: that is what lets the engine treat them alike.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from regsync.backends import Backend
from regsync.backends.fallback import FallbackBackend
from regsync.backends.layout import Layout
from regsync.backends.memory import MemoryBackend
from regsync.backends.registry.client import RegistryClient
from regsync.backends.registry.retry import RetryPolicy
from regsync.backends.registry.transport import Transport
from regsync.backends.tarball import Tarball
from regsync.errors import IntegrityError, NotFoundError, RegsyncError, TransportError
from regsync.oci.manifest import Descriptor, Manifest, parse_manifest
from tests.support import Blob, Image, Index, Registry
from tests.support import Manifest as Built
from tests.support.stored import one_chunk, store

KINDS = ["registry", "layout", "tarball", "fallback", "memory"]
MISSING = "sha256:" + "1" * 64


@pytest.fixture(scope="module")
def module_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    reg = Registry(tmp_path_factory.mktemp("conformance")).start()
    yield reg
    reg.stop()


@pytest.fixture(params=KINDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    kind = request.param
    if kind == "memory":
        yield MemoryBackend()
        return
    if kind == "layout":
        yield Layout(tmp_path / "layout")
        return
    if kind == "tarball":
        tarball = Tarball(tmp_path / "bundle.tar")
        yield tarball
        await tarball.finish()  # what the test wrote must pack into a readable archive
        tarball.discard()
        return
    reg: Registry = request.getfixturevalue("module_registry")
    async with aiohttp.ClientSession() as session:
        retry = RetryPolicy(attempts=2, initial=0.01, maximum=0.02)
        client = RegistryClient(Transport(session, reg.host, reg.url, retry=retry))
        yield client if kind == "registry" else FallbackBackend([client])


@pytest.fixture
def repo(request: pytest.FixtureRequest) -> str:
    """A repository of this test's own in the shared registry."""
    return "conformance/t" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:12]


def image(seed: str) -> Built:
    return Image.oci([Blob.random(300, seed=seed)])


async def test_tags_of_an_unknown_repository_is_empty(backend: Backend, repo: str) -> None:
    assert list((await backend.tags(repo + "/none")).names) == []


async def test_head_of_a_missing_tag_or_digest_is_none(backend: Backend, repo: str) -> None:
    await store(backend, repo, "1", image("a"))
    assert await backend.manifest_head(repo, "nope") is None
    assert await backend.manifest_head(repo, MISSING) is None


async def test_get_of_a_missing_tag_or_digest_raises_not_found(backend: Backend, repo: str) -> None:
    await store(backend, repo, "1", image("a"))
    with pytest.raises(NotFoundError):
        await backend.manifest_get(repo, "nope")
    with pytest.raises(NotFoundError):
        await backend.manifest_get(repo, MISSING)


@pytest.mark.parametrize("kind", ["docker", "oci", "oci-index"])
async def test_put_then_get_returns_identical_bytes(backend: Backend, repo: str, kind: str) -> None:
    layer = Blob.random(500, seed=kind)
    built = {
        "docker": lambda: Image.docker([layer]),
        "oci": lambda: Image.oci([layer]),
        "oci-index": lambda: Index.oci([Image.oci([layer]), Image.oci([layer], "linux/arm64")]),
    }[kind]()
    await store(backend, repo, "v1", built)

    by_tag = await backend.manifest_get(repo, "v1")
    by_digest = await backend.manifest_get(repo, built.digest)
    head = await backend.manifest_head(repo, "v1")

    assert by_tag.raw == by_digest.raw == built.raw
    assert by_tag.digest == built.digest and by_tag.media_type == built.media_type
    assert head is not None and (head.digest, head.media_type) == (built.digest, built.media_type)
    assert sorted((await backend.tags(repo)).names) == ["v1"]
    assert repo in (await backend.repositories()).names


async def test_a_manifest_whose_bytes_do_not_match_its_digest_is_refused(
    backend: Backend, repo: str
) -> None:
    good = await store(backend, repo, "1", image("a"))
    other = image("b")
    lying = Manifest(other.raw, other.media_type, good.digest)  # bytes of b, digest of a

    with pytest.raises(IntegrityError):
        await backend.manifest_put(repo, "2", lying)

    assert sorted((await backend.tags(repo)).names) == ["1"]
    assert (await backend.manifest_get(repo, "1")).raw == good.raw


async def test_a_manifest_with_missing_blobs_is_refused(backend: Backend, repo: str) -> None:
    orphan = image("orphan")
    with pytest.raises(RegsyncError):
        await backend.manifest_put(repo, "1", parse_manifest(orphan.raw, orphan.media_type))
    assert await backend.manifest_head(repo, "1") is None


async def test_blob_upload_verifies_and_read_returns_the_bytes(backend: Backend, repo: str) -> None:
    blob = Blob.random(70_000, seed="blob")
    desc = Descriptor("application/octet-stream", blob.digest, blob.size)
    wrong = Blob.random(70_000, seed="other")

    with pytest.raises(RegsyncError):
        await backend.blob_upload(repo, desc, one_chunk(wrong.data))
    assert not await backend.blob_head(repo, blob.digest)

    await backend.blob_upload(repo, desc, one_chunk(blob.data))
    assert await backend.blob_head(repo, blob.digest)
    assert b"".join([c async for c in backend.blob_read(repo, desc)]) == blob.data
    with pytest.raises(NotFoundError):
        missing = Descriptor("application/octet-stream", MISSING, 1)
        _ = [c async for c in backend.blob_read(repo, missing)]


async def test_blob_check_proves_digest_and_size_in_the_repository(
    backend: Backend, repo: str
) -> None:
    """The proof the copy engine asks before reusing content: held, with that exact size."""
    blob = Blob.random(1000, seed="check")
    desc = Descriptor("application/octet-stream", blob.digest, blob.size)
    assert not await backend.blob_check(repo, desc)
    await backend.blob_upload(repo, desc, one_chunk(blob.data))

    assert await backend.blob_check(repo, desc)
    assert not await backend.blob_check(repo, Descriptor(desc.media_type, blob.digest, 999))
    if not backend.shares_blobs:  # a registry links blobs per repository
        assert not await backend.blob_check(repo + "/other", desc)


async def test_mount_makes_a_blob_of_another_repository_present(
    backend: Backend, repo: str
) -> None:
    blob = Blob.random(1000, seed="mount")
    desc = Descriptor("application/octet-stream", blob.digest, blob.size)
    await backend.blob_upload(repo + "/from", desc, one_chunk(blob.data))

    assert await backend.blob_mount(repo + "/to", blob.digest, repo + "/from")
    assert await backend.blob_head(repo + "/to", blob.digest)
    assert not await backend.blob_mount(repo + "/to", MISSING, repo + "/from")
    assert backend.shares_blobs is isinstance(backend, Layout)


async def test_manifest_delete_drops_every_tag_of_the_digest(backend: Backend, repo: str) -> None:
    shared = await store(backend, repo, "a", image("shared"))
    await backend.manifest_put(repo, "b", shared)
    kept = await store(backend, repo, "c", image("kept"))

    await backend.manifest_delete(repo, shared.digest)

    assert sorted((await backend.tags(repo)).names) == ["c"]
    assert await backend.manifest_head(repo, "a") is None
    assert (await backend.manifest_get(repo, "c")).digest == kept.digest
    with pytest.raises(ValueError):
        await backend.manifest_delete(repo, "c")


async def test_tag_delete_drops_only_that_tag_even_when_another_shares_the_digest(
    backend: Backend, repo: str
) -> None:
    shared = await store(backend, repo, "old", image("shared"))
    await backend.manifest_put(repo, "kept", shared)
    other = await store(backend, repo, "other", image("other"))

    await backend.tag_delete(repo, "old")

    assert sorted((await backend.tags(repo)).names) == ["kept", "other"]
    assert await backend.manifest_head(repo, "old") is None
    kept = await backend.manifest_get(repo, "kept")
    assert (kept.digest, kept.raw) == (shared.digest, shared.raw)
    assert (await backend.manifest_get(repo, "other")).digest == other.digest
    with pytest.raises(NotFoundError):
        await backend.tag_delete(repo, "old")
    with pytest.raises(ValueError):
        await backend.tag_delete(repo, shared.digest)


async def test_tag_delete_of_a_docker_manifest_keeps_the_shared_digest(
    backend: Backend, repo: str
) -> None:
    """The registry's placeholder is a Docker manifest here: the family of the original."""
    shared = await store(backend, repo, "old", Image.docker([Blob.random(200, seed="d")]))
    await backend.manifest_put(repo, "kept", shared)

    await backend.tag_delete(repo, "old")

    assert sorted((await backend.tags(repo)).names) == ["kept"]
    assert (await backend.manifest_get(repo, "kept")).raw == shared.raw


async def test_referrers_without_a_referrers_api_is_none(backend: Backend, repo: str) -> None:
    """None of these backends has the API (distribution 2.8 answers 404): None, not []."""
    stored = await store(backend, repo, "1", image("subject"))

    assert await backend.referrers(repo, stored.digest) is None
    assert await backend.referrers(repo, MISSING) is None


class _WithReferrersAPI(MemoryBackend):
    """A memory backend whose referrers API lists ``listed``, or fails like a dead registry."""

    def __init__(self, name: str, listed: list[Descriptor] | None, *, down: bool = False) -> None:
        super().__init__(name)
        self.listed, self.down = listed, down

    async def referrers(self, repo: str, digest: str) -> list[Descriptor] | None:
        self.calls.append(("referrers", repo, digest))
        if self.down:
            raise TransportError(f"{self.name}: connection refused")
        return self.listed


async def test_fallback_takes_referrers_from_the_registry_that_answers() -> None:
    artifact = Descriptor("application/vnd.oci.image.manifest.v1+json", MISSING, 10)
    primary = _WithReferrersAPI("primary", None, down=True)
    mirror = _WithReferrersAPI("mirror", [artifact])
    fallback = FallbackBackend([primary, mirror])  # type: ignore[list-item]

    assert await fallback.referrers("team/app", MISSING) == [artifact]
    assert (primary.count("referrers"), mirror.count("referrers")) == (1, 1)
    assert fallback.serving == "mirror"
    # a registry that answers "no API" is an answer, not a failure: no fail-over
    alone = FallbackBackend([_WithReferrersAPI("a", None), mirror])  # type: ignore[list-item]
    assert await alone.referrers("team/app", MISSING) is None
    assert mirror.count("referrers") == 1
