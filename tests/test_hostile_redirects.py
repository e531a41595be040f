"""Redirects cannot reach into the inside network (server-side request forgery), loop
forever, or carry credentials: each hop is resolved and checked before it is sent, and sent
to the checked address.

The scripted source plays a *public* registry (the test's address classifier calls
127.0.0.1 public); the "internal" host is a server on 127.0.0.2 (loopback), reached by name
through a resolver the test controls.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from regsync.backends.registry.client import RegistryClient
from regsync.backends.registry.redirects import RedirectPolicy, address_class
from regsync.backends.registry.retry import RetryPolicy
from regsync.backends.registry.transport import Transport
from regsync.config import parse_config
from regsync.errors import ConfigError, ManifestError, RegistryError
from regsync.oci.manifest import Descriptor
from tests.support import Blob
from tests.support.scripted import ScriptedRegistry

SECRET = Blob.random(5000, seed="internal-secret")
DESC = Descriptor("application/octet-stream", SECRET.digest, SECRET.size)
FAST = RetryPolicy(attempts=1, initial=0.01, maximum=0.02)


def public_loopback(ip: str) -> str:
    """127.0.0.1 plays a public address; everything else is classified as it is."""
    return "public" if ip == "127.0.0.1" else address_class(ip)


class ScriptedResolver(aiohttp.abc.AbstractResolver):
    """Names the test controls; ``answers`` are handed out in turn (rebinding)."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[dict[str, Any]]:
        self.asked.append(host)
        queue = self.answers[host]
        ip = queue.pop(0) if len(queue) > 1 else queue[0]
        return [
            {"hostname": host, "host": ip, "port": port, "family": family, "proto": 0, "flags": 0}
        ]

    async def close(self) -> None:
        pass


class Internal:
    """An inside-only server on 127.0.0.2 that holds the secret blob and counts requests."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> Internal:
        async def serve(request: web.Request) -> web.Response:
            self.requests.append((request.path, dict(request.headers)))
            return web.Response(body=SECRET.data)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", serve)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.2", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


async def redirect_to(src: ScriptedRegistry, location: str) -> None:
    async def handler(request: web.Request, match: re.Match[str]) -> web.StreamResponse:
        raise web.HTTPTemporaryRedirect(location)

    src.override("GET", rf"/v2/evil/app/blobs/{SECRET.digest}$", handler)


async def read(src: ScriptedRegistry, policy: RedirectPolicy, **kw: Any) -> bytes:
    async with aiohttp.ClientSession() as session:
        transport = Transport(session, src.host, src.url, retry=FAST, redirects=policy, **kw)
        client = RegistryClient(transport)
        return b"".join([c async for c in client.blob_read("evil/app", DESC)])


@pytest.fixture
async def internal() -> AsyncIterator[Internal]:
    async with Internal() as server:
        yield server


async def test_a_public_registry_cannot_redirect_a_blob_into_the_inside_network(
    internal: Internal,
) -> None:
    resolver = ScriptedResolver({"internal.test": ["127.0.0.2"], "127.0.0.1": ["127.0.0.1"]})
    policy = RedirectPolicy(classify=public_loopback, resolver=resolver)
    async with ScriptedRegistry() as src:
        await redirect_to(src, f"http://internal.test:{internal.port}/v2/corp/secret/blobs/x")
        with pytest.raises(
            RegistryError,
            match=r"refusing the redirect to 'internal\.test' \(127\.0\.0\.2, a loopback",
        ):
            await read(src, policy)
    assert internal.requests == []  # nothing was even sent there
    assert "internal.test" in resolver.asked


async def test_an_ip_literal_into_the_inside_is_refused_too(internal: Internal) -> None:
    async with ScriptedRegistry() as src:
        await redirect_to(src, f"http://127.0.0.2:{internal.port}/x")
        with pytest.raises(RegistryError, match=r"127\.0\.0\.2, a loopback address"):
            await read(src, RedirectPolicy(classify=public_loopback))
    assert internal.requests == []


async def test_a_name_rebinding_after_the_check_still_reaches_only_the_checked_address(
    internal: Internal,
) -> None:
    """The name answers public for the check and internal afterwards: the hop is sent to
    the address that was checked (the source itself here), never to the inside."""
    resolver = ScriptedResolver({"internal.test": ["127.0.0.1", "127.0.0.2"]})
    policy = RedirectPolicy(classify=public_loopback, resolver=resolver)
    async with ScriptedRegistry() as src:
        await redirect_to(src, f"http://internal.test:{src.port}/v2/evil/app/blobs/held")
        src.blobs[SECRET.digest] = SECRET.data

        async def held(request: web.Request, match: re.Match[str]) -> web.StreamResponse:
            return web.Response(body=SECRET.data)

        src.override("GET", r"/v2/evil/app/blobs/held$", held)
        assert await read(src, policy) == SECRET.data
    assert internal.requests == []


async def test_redirects_allowed_for_a_listed_host_reach_it_without_credentials(
    internal: Internal,
) -> None:
    resolver = ScriptedResolver({"internal.test": ["127.0.0.2"]})
    policy = RedirectPolicy.of(["internal.test"], classify=public_loopback, resolver=resolver)
    async with ScriptedRegistry() as src:
        await redirect_to(src, f"http://user:pw@internal.test:{internal.port}/blob")
        assert await read(src, policy, username="u", password="p") == SECRET.data
    [(path, headers)] = internal.requests
    assert path == "/blob" and "Authorization" not in headers
    assert headers["Host"] == f"internal.test:{internal.port}"


async def test_a_registry_on_loopback_may_redirect_within_loopback(internal: Internal) -> None:
    async with ScriptedRegistry() as src:
        await redirect_to(src, f"http://127.0.0.2:{internal.port}/blob")
        assert await read(src, RedirectPolicy()) == SECRET.data  # real classes: both loopback


async def test_userinfo_in_a_same_origin_redirect_is_never_sent(internal: Internal) -> None:
    async with ScriptedRegistry() as src:
        await redirect_to(src, f"http://evil:secret@{src.host}/v2/evil/app/blobs/plain")
        seen: list[str | None] = []

        async def plain(request: web.Request, match: re.Match[str]) -> web.StreamResponse:
            seen.append(request.headers.get("Authorization"))
            return web.Response(body=SECRET.data)

        src.override("GET", r"/v2/evil/app/blobs/plain$", plain)
        assert await read(src, RedirectPolicy()) == SECRET.data
    assert seen == [None]


async def test_a_redirect_loop_is_named_with_its_url_and_hops() -> None:
    async with ScriptedRegistry() as src:

        async def loop(request: web.Request, match: re.Match[str]) -> web.StreamResponse:
            n = int(request.query.get("n", "0"))
            raise web.HTTPFound(f"{request.path}?n={(n + 1) % 3}")

        src.override("GET", rf"/v2/evil/app/blobs/{SECRET.digest}$", loop)
        with pytest.raises(
            RegistryError,
            match=r"redirect loop at 'http://127\.0\.0\.1:\d+/v2/evil/app/blobs/.* \(4 hops\)",
        ):
            await read(src, RedirectPolicy())


def test_the_redirects_setting_is_allow_or_a_list_of_hosts() -> None:
    base = "version: 1\nregistries:\n  r.example: {redirects: %s}\nrules:\n"
    rule = "  - {name: a, source: r.example/a, destination: d.example}\n"
    assert parse_config(base % "allow" + rule).registry("r.example").redirects == "allow"
    hosts = parse_config(base % "[minio.internal:9000]" + rule).registry("r.example").redirects
    assert hosts == ("minio.internal:9000",)
    assert RedirectPolicy.of(hosts).allow_hosts == {"minio.internal:9000"}
    with pytest.raises(ConfigError, match=r"registries\.r\.example\.redirects \(sync\.yaml:3\): "):
        parse_config(base % "everywhere" + rule)


async def challenge_with_realm(src: ScriptedRegistry, realm: str) -> None:
    """The blob asks for a Bearer token from ``realm`` (the registry chose it)."""

    async def handler(request: web.Request, match: re.Match[str]) -> web.StreamResponse:
        if request.headers.get("Authorization") == "Bearer stolen":
            return web.Response(body=SECRET.data)
        return web.Response(
            status=401, headers={"WWW-Authenticate": f'Bearer realm="{realm}",service="x"'}
        )

    src.override("GET", rf"/v2/evil/app/blobs/{SECRET.digest}$", handler)


async def test_a_public_registry_cannot_point_its_token_realm_into_the_inside_network(
    internal: Internal,
) -> None:
    """A token realm is a URL the registry chooses, like a redirect: an internal service
    answering it would hand its JSON (a token) to the registry as the next Bearer."""
    resolver = ScriptedResolver({"internal.test": ["127.0.0.2"], "127.0.0.1": ["127.0.0.1"]})
    policy = RedirectPolicy(classify=public_loopback, resolver=resolver)
    async with ScriptedRegistry() as src:
        await challenge_with_realm(src, f"http://internal.test:{internal.port}/token")
        with pytest.raises(
            RegistryError,
            match=r"refusing the token realm 'internal\.test' \(127\.0\.0\.2, a loopback",
        ):
            await read(src, policy, username="u", password="p")
    assert internal.requests == []


async def test_a_token_realm_cannot_redirect_into_the_inside_network(internal: Internal) -> None:
    async with ScriptedRegistry() as src:
        await challenge_with_realm(src, f"{src.url}/token")

        async def token(request: web.Request, match: re.Match[str]) -> web.StreamResponse:
            raise web.HTTPFound(f"http://127.0.0.2:{internal.port}/token")

        src.override("GET", r"/token$", token)
        with pytest.raises(RegistryError, match=r"127\.0\.0\.2, a loopback address"):
            await read(src, RedirectPolicy(classify=public_loopback))
    assert internal.requests == []


async def test_a_token_realm_within_its_class_still_serves_a_token() -> None:
    async with ScriptedRegistry() as src:
        await challenge_with_realm(src, f"{src.url}/hop")

        async def hop(request: web.Request, match: re.Match[str]) -> web.StreamResponse:
            raise web.HTTPFound(f"/token?{request.query_string}")

        async def token(request: web.Request, match: re.Match[str]) -> web.StreamResponse:
            assert request.query.getall("scope") == ["repository:evil/app:pull"]
            return web.json_response({"token": "stolen"})

        src.override("GET", r"/hop$", hop)
        src.override("GET", r"/token$", token)
        assert await read(src, RedirectPolicy()) == SECRET.data


def test_the_unspecified_address_is_loopback() -> None:
    """0.0.0.0 and :: connect to this host: a registry on 10.x may not reach it."""
    for ip in ("0.0.0.0", "0.1.2.3", "::", "::ffff:0.0.0.0"):
        assert address_class(ip) == "loopback", ip


async def upload_to(src: ScriptedRegistry, policy: RedirectPolicy, location: str) -> None:
    """The registry (as a destination) answers the upload's POST with ``location``."""

    async def start(request: web.Request, match: re.Match[str]) -> web.StreamResponse:
        return web.Response(status=202, headers={"Location": location})

    src.override("POST", r"/v2/evil/app/blobs/uploads/$", start)

    async def chunks() -> AsyncIterator[bytes]:
        yield SECRET.data

    async with aiohttp.ClientSession() as session:
        transport = Transport(session, src.host, src.url, retry=FAST, redirects=policy)
        await RegistryClient(transport).blob_upload("evil/app", DESC, chunks())


async def test_an_upload_location_cannot_lead_into_the_inside_network(
    internal: Internal,
) -> None:
    """An upload ``Location`` names where the blob's bytes go: checked like a redirect."""
    resolver = ScriptedResolver({"internal.test": ["127.0.0.2"], "127.0.0.1": ["127.0.0.1"]})
    policy = RedirectPolicy(classify=public_loopback, resolver=resolver)
    async with ScriptedRegistry() as src:
        with pytest.raises(RegistryError, match=r"'internal\.test' \(127\.0\.0\.2, a loopback"):
            await upload_to(src, policy, f"http://internal.test:{internal.port}/upload")
    assert internal.requests == []


async def test_an_upload_location_elsewhere_in_its_class_is_sent_to_the_checked_address(
    internal: Internal,
) -> None:
    resolver = ScriptedResolver({"storage.test": ["127.0.0.2"]})
    policy = RedirectPolicy(resolver=resolver)  # real classes: loopback to loopback
    async with ScriptedRegistry() as src:
        with pytest.raises(RegistryError, match=r"PUT .*/upload .*-> 200"):  # not an upload
            await upload_to(src, policy, f"http://storage.test:{internal.port}/upload?_state=s")
    assert [path for path, _ in internal.requests] == ["/upload", "/upload"]  # PUT, DELETE
    assert resolver.asked == ["storage.test", "storage.test"]
    assert internal.requests[0][1]["Host"] == f"storage.test:{internal.port}"


async def test_a_listed_host_with_a_port_allows_that_port_only(internal: Internal) -> None:
    """``redirects: [minio.internal:9000]`` (as documented) names one port of one host."""
    for listed, allowed in ((f"internal.test:{internal.port}", True), ("internal.test:1", False)):
        resolver = ScriptedResolver({"internal.test": ["127.0.0.2"]})
        policy = RedirectPolicy.of([listed], classify=public_loopback, resolver=resolver)
        async with ScriptedRegistry() as src:
            await redirect_to(src, f"http://internal.test:{internal.port}/blob")
            if allowed:
                assert await read(src, policy) == SECRET.data
            else:
                with pytest.raises(RegistryError, match="refusing the redirect to"):
                    await read(src, policy)
    assert len(internal.requests) == 1


def test_an_ipv6_address_standing_for_an_inside_ipv4_one_is_classed_as_that() -> None:
    """NAT64 (64:ff9b::/96: an AWS NAT gateway reaches the VPC through it), SIIT, 6to4 and
    IPv4-compatible addresses carry an IPv4 address: they are classed by it."""
    cases = {
        "64:ff9b::7f00:1": "loopback",
        "64:ff9b::a9fe:a9fe": "link-local",
        "64:ff9b::a00:1": "private",
        "64:ff9b::808:808": "public",
        "::ffff:0:a00:1": "private",
        "2002:a9fe:a9fe::1": "link-local",
        "2002:c0a8:101::1": "private",
        "::7f00:1": "loopback",
        "fec0::1": "private",
    }
    assert {ip: address_class(ip) for ip in cases} == cases


async def test_a_path_a_registry_named_cannot_forge_a_log_line() -> None:
    """A ``Location`` path with ``%0a`` stays encoded in the error (the text log does not
    escape what it is given: a decoded newline would start a forged line)."""
    forged = "x%0a2026-12-06 ERROR regsync: forged%1b[2J"
    async with ScriptedRegistry() as src:
        await redirect_to(src, f"/v2/evil/app/blobs/{forged}")

        async def broken(request: web.Request, match: re.Match[str]) -> web.StreamResponse:
            return web.Response(status=500)

        src.override("GET", r"/v2/evil/app/blobs/x.*$", broken)
        with pytest.raises(RegistryError) as caught:
            await read(src, RedirectPolicy())
    assert str(caught.value).isprintable(), str(caught.value)
    assert "blobs/x%0A2026-12-06" in str(caught.value)


def test_a_media_type_or_artifact_type_from_a_source_cannot_forge_a_line() -> None:
    """``check`` prints why a tag was filtered: a type from the source shows escaped."""
    from regsync.mediafilter import MediaTypeFilter
    from regsync.oci.manifest import parse_manifest

    forged = "application/x\n    filtered   latest by include: forged\x1b[2J"
    raw = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": forged,
            "config": {"mediaType": "application/x", "digest": SECRET.digest, "size": 1},
            "layers": [],
        }
    ).encode()
    only = MediaTypeFilter(frozenset({"application/vnd.oci.image.config.v1+json"}))
    # The grammar check at entry refuses the manifest; the refusal quotes the value escaped.
    with pytest.raises(ManifestError) as refused:
        parse_manifest(raw, "application/vnd.oci.image.manifest.v1+json")
    for text in (only.refusal(forged), str(refused.value)):
        assert text is not None and text.isprintable() and "\\n" in text, text
