"""Removing one tag from a registry: by tag where supported, else through a placeholder.

Scripted registries play the registries' answers (distribution 2.8's 400 to a delete by tag,
a registry with the OCI tag delete, deletes disabled, a failing placeholder delete) and count
the requests; the conformance suite covers the same method against real docker-registry.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import aiohttp
import pytest
from aiohttp import web

from regsync.backends.registry.client import RegistryClient
from regsync.backends.registry.retry import RetryPolicy
from regsync.backends.registry.tagdelete import PROBE_DIGEST, build_placeholder, tag_delete
from regsync.backends.registry.transport import Transport
from regsync.errors import NotFoundError, RegistryError, UnsupportedError
from regsync.oci import mediatypes
from tests.support import Blob, Image, sha256
from tests.support.scripted import ScriptedRegistry, error

REPO = "team/app"


@asynccontextmanager
async def scripted(**settings: bool) -> AsyncIterator[tuple[ScriptedRegistry, RegistryClient]]:
    """A scripted registry holding ``old`` and ``kept`` on one digest, ``other`` on another."""
    async with ScriptedRegistry() as reg, aiohttp.ClientSession() as session:
        reg.tag_deletes = settings.get("tag_deletes", False)
        reg.deletes_keep_tags = settings.get("deletes_keep_tags", False)
        shared = Image.oci([Blob.random(100, seed="shared")])
        for tag in ("old", "old2", "kept"):
            reg.add(REPO, tag, shared)
        reg.add(REPO, "other", Image.docker([Blob.random(100, seed="other")]))
        retry = RetryPolicy(attempts=2, initial=0.01, maximum=0.02)
        yield reg, RegistryClient(Transport(session, reg.host, reg.url, retry=retry))


def manifest_requests(reg: ScriptedRegistry, method: str) -> list[str]:
    return [p.rsplit("/", 1)[1] for m, p in reg.requests if m == method and "/manifests/" in p]


async def test_a_registry_with_tag_deletes_gets_one_delete_by_tag() -> None:
    async with scripted(tag_deletes=True) as (reg, client):
        shared = reg.tags[REPO]["kept"]
        await client.tag_delete(REPO, "old")
        await client.tag_delete(REPO, "old2")

    assert manifest_requests(reg, "DELETE") == ["old", "old2"]
    assert manifest_requests(reg, "PUT") == []
    assert reg.tags[REPO] == {"kept": shared, "other": reg.tags[REPO]["other"]}


async def test_digest_only_registry_gets_a_placeholder_then_remembers() -> None:
    """distribution 2.8: 400 to the tag delete, probe, placeholder; the 2nd tag skips both."""
    async with scripted() as (reg, client):
        shared, other = reg.tags[REPO]["kept"], reg.tags[REPO]["other"]
        await client.tag_delete(REPO, "old")
        await client.tag_delete(REPO, "old2")

    deletes = manifest_requests(reg, "DELETE")
    puts = manifest_requests(reg, "PUT")
    assert deletes[:2] == ["old", PROBE_DIGEST] and len(deletes) == 4
    assert puts == ["old", "old2"]  # one placeholder per tag, under the tag
    assert shared not in deletes and len(set(deletes[2:])) == 2  # never the shared digest
    placeholders = [reg.manifests[d] for d in deletes[2:]]
    assert {json.loads(raw)["mediaType"] for _, raw in placeholders} == {mediatypes.OCI_MANIFEST}
    assert reg.tags[REPO] == {"kept": shared, "other": other}


async def test_a_failing_placeholder_delete_puts_the_original_back() -> None:
    async with scripted() as (reg, client):
        shared = reg.tags[REPO]["kept"]

        async def storage_down(request: web.Request, match: re.Match[str]) -> web.Response | None:
            if match["ref"] in reg.manifests:  # the probe's digest falls through to a 404
                return error(500, "UNKNOWN", "storage backend gone")
            return None

        reg.override(
            "DELETE", r"^/v2/team/app/manifests/(?P<ref>sha256:[a-f0-9]{64})$", storage_down
        )
        with pytest.raises(RegistryError, match=f"points at {shared} again") as caught:
            await client.tag_delete(REPO, "old")

    assert (caught.value.registry, caught.value.status) == (reg.host, 500)
    assert reg.tags[REPO]["old"] == shared  # the original bytes, under the tag again
    assert reg.tags[REPO]["kept"] == shared
    puts = manifest_requests(reg, "PUT")
    assert puts == ["old", "old"]  # the placeholder, then the original
    (_, raw) = reg.manifests[shared]
    assert sha256(raw) == shared


async def test_a_failed_restore_says_what_the_tag_points_at_and_how_to_fix_it() -> None:
    async with scripted() as (reg, client):
        shared = reg.tags[REPO]["kept"]
        puts = 0

        async def fail(request: web.Request, match: re.Match[str]) -> web.Response | None:
            nonlocal puts
            if request.method == "PUT":
                puts += 1
                if puts == 1:
                    return None  # the placeholder lands; the restore will not
            elif match["ref"] not in reg.manifests:
                return None  # the probe: 404 MANIFEST_UNKNOWN
            return error(500, "UNKNOWN", "storage backend gone")

        reg.override("*", r"^/v2/team/app/manifests/(?P<ref>[^/]+)$", fail)
        with pytest.raises(RegistryError, match="the tag may point at the placeholder") as caught:
            await client.tag_delete(REPO, "old")

    assert f"push {shared} to it" in str(caught.value)
    assert "failed (" in str(caught.value) and "storage backend gone) and putting" in str(
        caught.value
    )  # the first failure is named, not only the restore's
    assert caught.value.registry == reg.host
    assert reg.tags[REPO]["kept"] == shared


async def test_a_tag_still_there_after_a_202_delete_by_tag_is_an_error() -> None:
    """A tag counts as deleted only once a HEAD finds nothing: a 202 alone proves nothing."""
    async with scripted(tag_deletes=True, deletes_keep_tags=True) as (reg, client):
        shared = reg.tags[REPO]["kept"]
        with pytest.raises(RegistryError, match="still there after deleting it") as caught:
            await client.tag_delete(REPO, "old")

    assert manifest_requests(reg, "DELETE") == ["old"]
    assert reg.count("HEAD", r"/manifests/old$") == 1
    assert caught.value.registry == reg.host
    assert reg.tags[REPO]["old"] == shared


async def test_a_placeholder_the_registry_keeps_is_an_error_and_the_original_comes_back() -> None:
    """The placeholder's delete answers 202 but the tag stays on it: the tag is put back."""
    async with scripted(deletes_keep_tags=True) as (reg, client):
        shared = reg.tags[REPO]["kept"]
        with pytest.raises(
            RegistryError,
            match=f"still tagged .* after deleting its placeholder.* points at {shared} again",
        ):
            await client.tag_delete(REPO, "old")

    assert manifest_requests(reg, "PUT") == ["old", "old"]  # the placeholder, then the original
    assert reg.tags[REPO]["old"] == shared and reg.tags[REPO]["kept"] == shared


async def test_cancelled_between_placeholder_and_delete_the_tag_points_at_its_original_again() -> (
    None
):
    """A shutdown lands while the placeholder's delete is in flight: the original goes back."""
    async with scripted() as (reg, client):
        shared = reg.tags[REPO]["kept"]
        reached, release = asyncio.Event(), asyncio.Event()

        async def hang(request: web.Request, match: re.Match[str]) -> web.Response | None:
            if match["ref"] not in reg.manifests:
                return None  # the probe: 404 MANIFEST_UNKNOWN
            reached.set()
            await release.wait()
            return error(500, "UNKNOWN", "answered too late")

        reg.override("DELETE", r"^/v2/team/app/manifests/(?P<ref>sha256:[a-f0-9]{64})$", hang)
        deleting = asyncio.create_task(client.tag_delete(REPO, "old"))
        await reached.wait()
        assert reg.tags[REPO]["old"] != shared  # on the placeholder now
        deleting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await deleting
        release.set()

    assert reg.tags[REPO]["old"] == shared
    assert manifest_requests(reg, "PUT") == ["old", "old"]


def refuse_deletes(reg: ScriptedRegistry, status: int, code: str, message: str) -> None:
    """Every manifest DELETE on ``reg`` is answered ``status`` with that registry error."""

    async def refuse(request: web.Request, match: re.Match[str]) -> web.Response:
        return error(status, code, message)

    reg.override("DELETE", r"/manifests/", refuse)


async def test_deletes_disabled_is_unsupported_and_writes_nothing() -> None:
    async with scripted() as (reg, client):
        refuse_deletes(reg, 405, "UNSUPPORTED", "The operation is unsupported.")
        before = dict(reg.tags[REPO])
        with pytest.raises(UnsupportedError):
            await client.tag_delete(REPO, "old")
        with pytest.raises(UnsupportedError) as caught:
            await client.tag_delete(REPO, "old2")

    assert manifest_requests(reg, "PUT") == []
    assert manifest_requests(reg, "DELETE") == ["old", PROBE_DIGEST]  # then known: no more
    assert reg.tags[REPO] == before
    assert str(caught.value) == f"{reg.host} refuses deletes (405 UNSUPPORTED)"
    assert (caught.value.registry, caught.value.status) == (reg.host, 405)


async def test_no_verifiable_digest_delete_never_tries_the_placeholder() -> None:
    async with scripted() as (reg, client):
        refuse_deletes(reg, 404, "UNSUPPORTED", "no such route")
        before = dict(reg.tags[REPO])
        with pytest.raises(RegistryError) as caught:
            await client.tag_delete(REPO, "old")

    assert manifest_requests(reg, "PUT") == []
    assert reg.tags[REPO] == before
    assert str(caught.value) == (
        f"{reg.host}/{REPO}:old: the registry deletes neither by tag nor (verifiably) by "
        "digest, so this tag cannot be removed without the tags sharing its digest"
    )
    assert caught.value.registry == reg.host


async def test_a_missing_tag_is_not_found() -> None:
    async with scripted(tag_deletes=True) as (reg, client):
        with pytest.raises(NotFoundError):
            await client.tag_delete(REPO, "nope")
        await client.tag_delete(REPO, "old")  # still known to delete by tag: no probe
        assert manifest_requests(reg, "DELETE") == ["nope", "old"]
    async with scripted() as (reg, client):
        with pytest.raises(NotFoundError):
            await client.tag_delete(REPO, "nope")
        assert manifest_requests(reg, "PUT") == []


async def test_a_404_to_a_tag_delete_of_a_tag_that_exists_falls_back_to_the_placeholder() -> None:
    """Some registries take the tag for a digest and answer 404 MANIFEST_UNKNOWN: only a HEAD
    tells that from "no such tag"."""
    async with scripted() as (reg, client):
        shared = reg.tags[REPO]["kept"]

        async def not_a_digest(request: web.Request, match: re.Match[str]) -> web.Response:
            return error(404, "MANIFEST_UNKNOWN", "manifest unknown")

        reg.override("DELETE", r"/manifests/old$", not_a_digest)
        await client.tag_delete(REPO, "old")

    assert "old" not in reg.tags[REPO] and reg.tags[REPO]["kept"] == shared
    assert manifest_requests(reg, "PUT") == ["old"]  # through a placeholder


async def test_the_placeholder_names_the_tag_and_its_blobs_go_up_once_per_repository() -> None:
    async with scripted() as (reg, client):
        await client.tag_delete(REPO, "old")
        await client.tag_delete(REPO, "old2")

    assert reg.count("POST", r"/blobs/uploads/$") == 3  # the empty layer once, each config
    configs = [json.loads(raw) for digest, raw in reg.blobs.items() if raw.startswith(b"{")]
    labels = sorted(
        c["config"]["Labels"]["io.regsync.delete-tag"]
        for c in configs
        if "io.regsync.delete-tag" in (c.get("config") or {}).get("Labels", {})
    )
    assert labels == [f"{REPO}:old", f"{REPO}:old2"]


async def test_a_connection_lost_on_the_placeholder_delete_puts_the_original_back() -> None:
    async with scripted() as (reg, client):
        shared = reg.tags[REPO]["kept"]

        async def drop(request: web.Request, match: re.Match[str]) -> web.Response | None:
            if match["ref"] not in reg.manifests:
                return None  # the probe: 404 MANIFEST_UNKNOWN
            assert request.transport is not None
            request.transport.close()
            return web.Response()

        reg.override("DELETE", r"^/v2/team/app/manifests/(?P<ref>sha256:[a-f0-9]{64})$", drop)
        with pytest.raises(RegistryError, match=f"points at {shared} again") as caught:
            await client.tag_delete(REPO, "old")

    assert caught.value.status == 0  # no HTTP status: the connection broke
    assert reg.tags[REPO]["old"] == shared


def test_a_digest_is_refused_with_the_method_to_use() -> None:
    with pytest.raises(
        ValueError, match=r"takes a tag, not the digest sha256:.*use manifest_delete"
    ):
        asyncio.run(tag_delete(None, REPO, PROBE_DIGEST))  # type: ignore[arg-type]


def test_the_placeholder_config_is_a_valid_image_config_saying_what_it_is() -> None:
    """Should a restore fail, the tag shows an image any tool can inspect, naming the tag."""
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    manifest, (_, (_, raw)) = build_placeholder(mediatypes.DOCKER_MANIFEST, REPO, "1.0", now=when)
    body = json.loads(manifest.raw)
    assert body["schemaVersion"] == 2 and body["mediaType"] == mediatypes.DOCKER_MANIFEST
    assert manifest.media_type == mediatypes.DOCKER_MANIFEST
    parsed = json.loads(raw)
    nonce = parsed["config"]["Labels"].pop("io.regsync.nonce")
    assert re.fullmatch(r"[0-9a-f]{16}", nonce)
    stamp = "2026-01-02T03:04:05+00:00"
    assert parsed == {
        "architecture": "amd64",
        "os": "linux",
        "created": stamp,
        "config": {
            "Labels": {"io.regsync.delete-tag": f"{REPO}:1.0", "io.regsync.delete-time": stamp}
        },
        "rootfs": {"type": "layers", "diff_ids": [sha256(bytes(1024))]},
        "history": [{"created": stamp, "created_by": "regsync prune: placeholder to delete a tag"}],
    }
    now = json.loads(build_placeholder(mediatypes.OCI_MANIFEST, REPO, "1.0")[1][1][1])
    assert now["created"].endswith("+00:00")  # UTC, with its offset


def test_placeholder_is_unique_and_in_the_original_family() -> None:
    oci, oci_blobs = build_placeholder(mediatypes.OCI_INDEX, REPO, "1.0")
    docker, docker_blobs = build_placeholder(mediatypes.DOCKER_LIST, REPO, "1.0")
    again, _ = build_placeholder(mediatypes.OCI_INDEX, REPO, "1.0")

    assert oci.media_type == mediatypes.OCI_MANIFEST
    assert docker.media_type == mediatypes.DOCKER_MANIFEST
    assert docker.layers[0].media_type == "application/vnd.docker.image.rootfs.diff.tar.gzip"
    assert len({oci.digest, docker.digest, again.digest}) == 3
    (layer, layer_raw), (config, config_raw) = oci_blobs
    assert oci.layers == (layer,) and oci.config == config
    assert sha256(layer_raw) == layer.digest and sha256(config_raw) == config.digest
    assert json.loads(config_raw)["config"]["Labels"]["io.regsync.delete-tag"] == f"{REPO}:1.0"
    assert docker_blobs[0][1] == layer_raw  # the same empty layer: uploaded once per repo
