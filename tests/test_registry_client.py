"""The registry client against a real distribution registry: every verb, auth, errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest

from regsync.backends.registry.client import RegistryClient
from regsync.backends.registry.retry import RetryPolicy
from regsync.backends.registry.transport import Transport
from regsync.errors import AuthError, NotFoundError, TransportError, UnsupportedError
from regsync.oci.manifest import Descriptor
from tests.support import Blob, Image, Index, Registry, RegistryFactory, dead_port, push

FAST_RETRY = RetryPolicy(attempts=2, initial=0.01, maximum=0.02)


@asynccontextmanager
async def client_for(
    reg: Registry | str, *, username: str | None = None, password: str | None = None, **kw: int
) -> AsyncIterator[RegistryClient]:
    url = reg if isinstance(reg, str) else reg.url
    async with aiohttp.ClientSession() as session:
        transport = Transport(
            session,
            url.split("://")[1],
            url,
            username=username,
            password=password,
            retry=FAST_RETRY,
        )
        yield RegistryClient(transport, **kw)


async def chunks_of(data: bytes, size: int = 700) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def test_tags_and_catalog_follow_link_pagination(source_registry: Registry) -> None:
    layer = Blob.random(100, seed=1)
    for tag in ("a", "b", "c", "d", "e"):
        push(source_registry, "team/one", tag, Image.docker([layer]))
    push(source_registry, "team/two", "x", Image.docker([layer]))
    push(source_registry, "zeta", "x", Image.docker([layer]))
    async with client_for(source_registry, page_size=2) as client:
        assert sorted((await client.tags("team/one")).names) == ["a", "b", "c", "d", "e"]
        assert list((await client.repositories()).names) == ["team/one", "team/two", "zeta"]
        assert list((await client.tags("no/such")).names) == []


@pytest.mark.parametrize("kind", ["docker", "oci", "oci-index", "docker-list"])
async def test_manifest_round_trip_keeps_exact_bytes(kind: str, source_registry: Registry) -> None:
    base = Blob.random(500, seed="b")
    build = {
        "docker": lambda: Image.docker([base]),
        "oci": lambda: Image.oci([base]),
        "oci-index": lambda: Index.oci([Image.oci([base]), Image.oci([base], "linux/arm64")]),
        "docker-list": lambda: Index.docker_list(
            [Image.docker([base]), Image.docker([base], "linux/arm64")]
        ),
    }[kind]
    pushed = push(source_registry, "src/app", "1", build())
    async with client_for(source_registry) as client:
        head = await client.manifest_head("src/app", "1")
        assert head is not None and head.digest == pushed.digest
        assert head.media_type == pushed.media_type
        manifest = await client.manifest_get("src/app", "1")
        assert manifest.digest == pushed.digest
        # Children first, each after its blobs; mounting sends no bytes.
        children = [await client.manifest_get("src/app", c.digest) for c in manifest.children]
        for image in [*children, manifest]:
            for blob in image.blobs:
                assert await client.blob_mount("dst/app", blob.digest, "src/app")
        for child in children:
            await client.manifest_put("dst/app", child.digest, child)
        await client.manifest_put("dst/app", "1", manifest)
    assert source_registry.manifest("dst/app", "1") == source_registry.manifest("src/app", "1")


async def test_monolithic_and_chunked_uploads_store_exact_bytes(dest_registry: Registry) -> None:
    mono, chunked = Blob.random(3500, seed="m"), Blob.random(3500, seed="c")
    async with client_for(dest_registry) as client:
        await client.blob_upload("r", Descriptor("x", mono.digest, mono.size), chunks_of(mono.data))
        await client.blob_upload_chunked(
            "r", Descriptor("x", chunked.digest, chunked.size), chunks_of(chunked.data), 1000
        )
        assert await client.blob_head("r", mono.digest)
        streamed = b"".join(
            [c async for c in client.blob_read("r", Descriptor("x", chunked.digest, chunked.size))]
        )
    assert dest_registry.blob("r", mono.digest) == mono.data
    assert streamed == chunked.data


async def test_mount_from_a_repo_without_the_blob_declines(dest_registry: Registry) -> None:
    blob = Blob.random(100, seed="x")
    async with client_for(dest_registry) as client:
        assert not await client.blob_mount("b", blob.digest, "nowhere")
    assert not dest_registry.blob_exists("b", blob.digest)


async def test_registry_errors_become_typed_errors(registry_factory: RegistryFactory) -> None:
    reg = registry_factory(delete_enabled=False)
    pushed = push(reg, "app", "1", Image.docker([Blob.random(10, seed=1)]))
    async with client_for(reg) as client:
        with pytest.raises(NotFoundError) as missing:
            await client.manifest_get("app", "nope")
        assert missing.value.codes == ("MANIFEST_UNKNOWN",)
        assert await client.manifest_head("app", "nope") is None
        with pytest.raises(UnsupportedError) as refused:
            await client.manifest_delete("app", pushed.digest)
        assert refused.value.status == 405


async def test_unreachable_registry_is_a_transport_error() -> None:
    async with client_for(f"http://127.0.0.1:{dead_port()}") as client:
        with pytest.raises(TransportError, match="cannot connect"):
            await client.ping()


async def test_htpasswd_registry_needs_and_accepts_credentials(
    registry_factory: RegistryFactory,
) -> None:
    reg = registry_factory(htpasswd={"mirror": "s3cret"})
    push(reg, "app", "1", Image.docker([Blob.random(10, seed=1)]))
    async with client_for(reg, username="mirror", password="s3cret") as client:
        assert list((await client.tags("app")).names) == ["1"]
    async with client_for(reg) as client:
        with pytest.raises(AuthError, match="requires credentials"):
            await client.tags("app")
    async with client_for(reg, username="mirror", password="wrong") as client:
        with pytest.raises(AuthError, match="refused the configured credentials") as err:
            await client.tags("app")
        assert "wrong" not in str(err.value)
