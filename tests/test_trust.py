"""Trust boundaries: names from a source registry or a layout are data, never paths.

A hostile source lists a repository ``ns/../../prod/app`` and a tag
``../../../../prod/web/manifests/v1``; a hostile layout says the same in each of its three
name annotations. Joined into a URL, either would land on ``prod/app`` or ``prod/web`` of the
destination. Each is skipped with an error naming it, the valid names still mirror, the run
exits 1, and no request path holding ``..`` is sent anywhere.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from regsync.backends.layoutindex import CONTAINERD_NAME, REF_NAME, REPOSITORY
from regsync.backends.registry.client import RegistryClient
from regsync.backends.registry.hub import HubCatalog
from regsync.backends.registry.transport import Transport
from regsync.errors import InvalidNameError, ManifestError, RegistryError
from regsync.oci.manifest import parse_manifest
from regsync.oci.ref import (
    DestinationSpec,
    Listed,
    SourceSpec,
    is_reference,
    is_repository,
    is_tag,
    shown,
)
from tests.support import (
    FAST_RETRIES,
    Blob,
    Image,
    Registry,
    layout_import_yaml,
    plain_config,
    push,
    regsync_json,
    write_config,
)
from tests.support.accesslog import ACCESS_LOG, AccessLog
from tests.support.images import Manifest
from tests.support.registry import RegistryFactory
from tests.support.scripted import Handler, ScriptedRegistry
from tests.support.servers import HubApi

GOOD = Image.docker([Blob.random(2000, seed="trust-good")])
EVIL_APP = Image.docker([Blob.random(2000, seed="trust-evil-app")])
EVIL_WEB = Image.docker([Blob.random(2000, seed="trust-evil-web")])
PROD_APP = Image.docker([Blob.random(2000, seed="trust-prod-app")])
PROD_WEB = Image.docker([Blob.random(2000, seed="trust-prod-web")])
HOSTILE_REPO = "ns/../../prod/app"
HOSTILE_TAG = "../../../../prod/web/manifests/v1"


# -- the grammar (no sockets) ------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["a", "library/nginx", "a.b/c_d/e__f/g-h/i---j", "0/1", "a/" * 100 + "z"],
)
def test_valid_repository_names(name: str) -> None:
    assert is_repository(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "A/b",  # upper case
        "a//b",
        "a/./b",
        "a/../b",
        "..",
        ".",
        "/a",
        "a/",
        ".a",
        "-a",
        "a-",
        "a_.b",
        "%2e%2e/a",
        "a/%2e%2e/b",
        "a b",
        "a\nb",
        "a?b",
        "a#b",
        "a:b",
        "a" * 256,
    ],
)
def test_invalid_repository_names(name: str) -> None:
    assert not is_repository(name)


def test_repository_length_counts_the_host() -> None:
    name = "a" * 240
    assert is_repository(name)
    assert is_repository(name, "host:5000")  # 250 characters in all
    assert not is_repository(name, "registry.example.com:5000")  # 266


@pytest.mark.parametrize("tag", ["v1", "_x", "1.0.0-rc.1", "A_b.C-d", "a" * 128, "latest"])
def test_valid_tags(tag: str) -> None:
    assert is_tag(tag) and is_reference(tag)


@pytest.mark.parametrize(
    "tag",
    [
        "",
        "a" * 129,
        ".hidden",
        "-dash",
        "..",
        ".",
        HOSTILE_TAG,
        "a/b",
        "%2e%2e",
        "a:b",
        "v1\n",
        "v 1",
        "sha256:" + "a" * 64,  # a digest is a reference, not a tag
    ],
)
def test_invalid_tags(tag: str) -> None:
    assert not is_tag(tag)


def test_references_are_tags_or_digests() -> None:
    assert is_reference("sha256:" + "a" * 64)
    assert is_reference("sha512:" + "b" * 128)
    assert not is_reference("sha256:" + "A" * 64)
    assert not is_reference("sha256:../../x")


def test_a_listing_splits_valid_and_refused_names_in_order() -> None:
    listed = Listed.tags(["v1", HOSTILE_TAG, "v2", ".x"])
    assert listed.names == ("v1", "v2")
    assert listed.rejected == (HOSTILE_TAG, ".x")
    assert listed.skipped("tag")[0] == f"skipped tag {HOSTILE_TAG!r}: not a valid tag name"
    repos = Listed.repositories(["ns/good", HOSTILE_REPO, "NS/x"], "host:5000")
    assert repos.names == ("ns/good",) and repos.rejected == (HOSTILE_REPO, "NS/x")


def test_a_refused_name_is_shown_escaped_and_truncated() -> None:
    hostile = "\x1b[31mred\r\nfake log line" + "x" * 500
    text = shown(hostile)
    assert "\x1b" not in text and "\n" not in text and "\r" not in text
    assert len(text) < 120 and text.endswith(f"({len(hostile)} characters)")
    assert shown("ns/app") == "'ns/app'"


def test_a_destination_is_the_mapping_of_a_valid_name() -> None:
    dest = DestinationSpec.parse("registry.local:5000/mirror")
    assert dest.repo_for("ns/good") == "mirror/ns/good"
    with pytest.raises(InvalidNameError, match="invalid source repository"):
        dest.repo_for(HOSTILE_REPO)
    with pytest.raises(InvalidNameError, match="not a valid name"):
        dest.repo_for("a/" * 124 + "z")  # valid alone, too long once mapped


def test_a_configured_source_name_is_checked_whole() -> None:
    with pytest.raises(ValueError, match="over 255 characters"):
        SourceSpec.parse("r.local:5000/" + "a/" * 125 + "z")
    with pytest.raises(ValueError, match=re.escape("segment '..'")):
        SourceSpec.parse("r.local:5000/ns/../prod/app")


async def test_urls_are_built_from_checked_names_only() -> None:
    """Every API URL comes from one builder: refused names never become a request."""
    async with aiohttp.ClientSession() as session:  # opens no socket until a request
        client = RegistryClient(Transport(session, "r.local:5000", "http://r.local:5000"))
        url = client.api_url("ns/good", "manifests", "v1")
        assert str(url) == "http://r.local:5000/v2/ns/good/manifests/v1"
        for repo, endpoint, ref in [
            (HOSTILE_REPO, "manifests", "v1"),
            ("ns/good", "manifests", HOSTILE_TAG),
            ("ns/good", "blobs", "v1"),  # blobs only by digest
            ("ns/good", "referrers", "../x"),
            ("ns/good", "tags/list", "extra"),
            ("ns/%2e%2e/x", "tags/list", ""),
        ]:
            with pytest.raises(InvalidNameError):
                client.api_url(repo, endpoint, ref)
        for path in ["/v2/a/../b", "/v2/./a", "/v2/a%2f..", "/v2/a?x=1", "v2/a", "/v2//a"]:
            with pytest.raises(InvalidNameError, match="refusing to request"):
                client.transport.url(path)


@pytest.mark.parametrize("digest", ["sha256:../../../prod/app", "sha256:" + "A" * 64, "v1"])
def test_referrer_descriptors_need_a_digest(digest: str) -> None:
    """A referrers index is parsed like any index: a descriptor's digest must be one."""
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": 1}
        ],
    }
    with pytest.raises(ManifestError, match="invalid digest"):
        parse_manifest(json.dumps(index).encode(), "application/vnd.oci.image.index.v1+json")


# -- a hostile source registry ---------------------------------------------------------------


def _record(paths: list[str]) -> Handler:
    async def handler(request: web.Request, match: re.Match[str]) -> web.StreamResponse | None:
        paths.append(request.raw_path)
        return None  # falls through to the scripted API

    return handler


def _collapsed(src: ScriptedRegistry) -> Handler:
    """Serve what a `..`-collapsed path lands on (`/prod/app/...` -> repository prod/app), so
    that a client which joins names into URLs really would copy the hostile image."""

    async def handler(request: web.Request, match: re.Match[str]) -> web.StreamResponse | None:
        return await src._default(request.clone(rel_url="/v2" + request.raw_path))

    return handler


@pytest.fixture
def logged_dest(registry_factory: RegistryFactory) -> Registry:
    return registry_factory(extra_config=ACCESS_LOG)


def _seed_prod(dest: Registry) -> None:
    push(dest, "prod/app", "v1", PROD_APP)
    push(dest, "prod/web", "v1", PROD_WEB)


def _assert_prod_untouched(dest: Registry, log: AccessLog) -> None:
    assert dest.manifest_digest("prod/app", "v1") == PROD_APP.digest
    assert dest.manifest_digest("prod/web", "v1") == PROD_WEB.digest
    paths = [r.path for r in log.requests()]
    assert paths and not [p for p in paths if ".." in p or "%2e" in p.lower()], paths


async def test_hostile_catalog_and_tag_names_are_skipped(
    logged_dest: Registry, tmp_path: Path
) -> None:
    _seed_prod(logged_dest)
    log = AccessLog(logged_dest)
    async with ScriptedRegistry() as src:
        seen: list[str] = []
        src.override("*", r"", _record(seen))
        src.override("*", r"^/(?!v2/)", _collapsed(src))
        src.add("ns/good", "v1", GOOD)
        src.add("ns/good", HOSTILE_TAG, EVIL_WEB)
        src.add(HOSTILE_REPO, "v1", EVIL_APP)
        src.add("prod/app", "v1", EVIL_APP)  # what the collapsed paths would read
        src.add("prod/web", "v1", EVIL_WEB)
        config = plain_config(
            tmp_path,
            src,
            logged_dest,
            f"""
            - name: hostile
              source: {src.host}/ns/**
              destination: {logged_dest.host}/mirror
            """,
        )
        run = await asyncio.to_thread(regsync_json, "once", config, env=FAST_RETRIES)
    assert run.code == 1, run.stderr
    rule = run.rule
    assert rule["result"] == "partial" and rule["tags"]["copied"] == 1, rule
    errors = rule["errors"]
    assert errors == [
        f"skipped repository {HOSTILE_REPO!r}: not a valid repository name",
        f"ns/good: skipped source tag {HOSTILE_TAG!r}: not a valid tag name",
    ], errors
    warnings = [line for line in run.stderr.splitlines() if " WARNING " in line]
    for name in (HOSTILE_REPO, HOSTILE_TAG):  # one warning each, naming it
        assert sum(repr(name) in line for line in warnings) == 1, run.stderr
    assert logged_dest.manifest_digest("mirror/ns/good", "v1") == GOOD.digest
    _assert_prod_untouched(logged_dest, log)
    assert seen and not [p for p in seen if ".." in p], seen
    assert not [p for p in seen if not p.startswith("/v2/")], seen  # nothing collapsed


async def test_hub_api_names_are_checked() -> None:
    """The Hub API's names become `<ns>/<name>` only when that is a repository name."""
    listed = ["app", "../../prod/app", "Upper", "web", "a/../b", "%2e%2e"]
    hub = HubApi({"diamol": listed}, page_size=100)
    await asyncio.to_thread(hub.start)
    try:
        async with aiohttp.ClientSession() as session:
            host = hub.url.split("://", 1)[1]
            catalog = HubCatalog(Transport(session, host, hub.url), "docker.io")
            found = await catalog.repositories("diamol")
    finally:
        await asyncio.to_thread(hub.stop)
    assert found.names == ("diamol/app", "diamol/web")
    refused = ["../../prod/app", "Upper", "a/../b", "%2e%2e"]
    assert sorted(found.rejected) == sorted(f"diamol/{n}" for n in refused)


async def test_a_next_page_link_may_not_change_the_path() -> None:
    """Only the query of a `Link: rel=next` is followed: its path is the listing's own."""
    async with ScriptedRegistry() as src, aiohttp.ClientSession() as session:
        src.add("ns/good", "v1", GOOD)
        src.add("prod/app", "v1", EVIL_APP)
        link = '</v2/prod/app/tags/list?n=1000>; rel="next"'
        src.override(
            "GET",
            r"^/v2/ns/good/tags/list$",
            _answer(lambda: web.json_response({"tags": ["v1"]}, headers={"Link": link})),
        )
        client = RegistryClient(Transport(session, src.host, src.url))
        with pytest.raises(RegistryError, match="pagination points to another path"):
            await client.tags("ns/good")
    assert src.count("GET", "^/v2/prod/") == 0


def _answer(make: Callable[[], web.StreamResponse]) -> Handler:
    async def handler(request: web.Request, match: re.Match[str]) -> web.StreamResponse | None:
        return make()

    return handler


# -- a hostile layout --------------------------------------------------------------------------


def _write_layout(root: Path, entries: list[tuple[Manifest, dict[str, str]]]) -> None:
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    index = []
    for manifest, names in entries:
        (blobs / manifest.digest[7:]).write_bytes(manifest.raw)
        for blob in manifest.blobs:
            (blobs / blob.digest[7:]).write_bytes(blob.data)
        index.append({**manifest.descriptor(), "annotations": names})
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": index}))


def test_hostile_layout_annotations_are_skipped_on_import(
    logged_dest: Registry, tmp_path: Path
) -> None:
    _seed_prod(logged_dest)
    log = AccessLog(logged_dest)
    layout = tmp_path / "layout"
    _write_layout(
        layout,
        [
            (GOOD, {REF_NAME: "good/app:v1", REPOSITORY: "good/app"}),
            # Under destination `mirror`, each of these would collapse onto /v2/prod/...
            (EVIL_APP, {REF_NAME: "../prod/app:v1", REPOSITORY: "../prod/app"}),
            (EVIL_WEB, {REF_NAME: f"good/app:{HOSTILE_TAG}", REPOSITORY: "good/app"}),
            (EVIL_APP, {REF_NAME: "x/../../prod/app:v1"}),
            (EVIL_APP, {CONTAINERD_NAME: "docker.io/ns/../../prod/app:v1"}),
        ],
    )
    config = write_config(tmp_path, layout_import_yaml(layout, logged_dest))
    run = regsync_json("once", config, env=FAST_RETRIES)
    assert run.code == 1, run.stderr
    rule = run.rule
    assert rule["tags"]["copied"] == 1 and rule["result"] == "partial", rule
    assert sorted(rule["errors"]) == sorted(
        [
            "skipped repository '../prod/app': not a valid repository name",
            "skipped repository 'x/../../prod/app': not a valid repository name",
            "skipped repository 'ns/../../prod/app': not a valid repository name",
            f"good/app: skipped source tag {HOSTILE_TAG!r}: not a valid tag name",
        ]
    ), rule["errors"]
    assert logged_dest.manifest_digest("mirror/good/app", "v1") == GOOD.digest
    _assert_prod_untouched(logged_dest, log)


async def test_a_hub_next_page_url_yarl_cannot_parse_is_a_registry_error() -> None:
    """A `next` that is no URL at all (bad port, open IPv6 bracket) is the Hub's error."""
    async with ScriptedRegistry() as hub, aiohttp.ClientSession() as session:
        page = {"results": [{"name": "app"}], "next": "http://[::1/v2/namespaces/diamol"}
        hub.override(
            "GET",
            r"^/v2/namespaces/diamol/repositories$",
            _answer(lambda: web.json_response(page)),
        )
        catalog = HubCatalog(Transport(session, hub.host, hub.url), "docker.io")
        with pytest.raises(RegistryError, match=r"Hub API paging link .* is not a URL"):
            await catalog.repositories("diamol")
    assert hub.count("GET", "^/v2/namespaces/") == 1
