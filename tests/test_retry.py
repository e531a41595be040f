"""The retry policy: what is retried, how long it waits, that every retry is counted, and the
environment knobs that tune it."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

import aiohttp
import pytest
from aiohttp import web

from regsync.backends.registry.client import RegistryClient
from regsync.backends.registry.retry import RetryPolicy, Timeouts, is_retryable
from regsync.backends.registry.transport import Transport
from regsync.errors import ConfigError, RegistryError
from regsync.oci.manifest import Descriptor
from tests.support import OCI_LAYER, Blob
from tests.support.scripted import ScriptedRegistry, error

FAST = RetryPolicy(attempts=3, initial=0.01, maximum=0.02, max_retry_after=1)


class Retries:
    """A RequestObserver that records retries."""

    def __init__(self) -> None:
        self.reasons: list[str] = []

    def request_done(self, registry: str, method: str, status: str, seconds: float) -> None:
        pass

    def ratelimit_seen(self, registry: str, remaining: int, limit: int | None) -> None:
        pass

    def request_retried(self, registry: str, reason: str) -> None:
        self.reasons.append(reason)


def failing(times: int, make: Callable[[], web.StreamResponse]) -> Callable[..., object]:
    left = [times]

    async def handler(request: web.Request, match: re.Match[str]) -> web.StreamResponse | None:
        if left[0] <= 0:
            return None
        left[0] -= 1
        return make()

    return handler


async def client(
    reg: ScriptedRegistry, session: aiohttp.ClientSession, seen: Retries
) -> RegistryClient:
    return RegistryClient(
        Transport(session, reg.host, reg.url, retry=FAST, observer=seen, timeouts=Timeouts(2, 1))
    )


@pytest.mark.parametrize(
    ("status", "headers", "reason"),
    [(503, {}, "503"), (502, {}, "502"), (429, {"Retry-After": "0"}, "429"), (408, {}, "408")],
)
async def test_retryable_statuses_are_retried_and_counted(
    status: int, headers: dict[str, str], reason: str
) -> None:
    async with ScriptedRegistry() as reg, aiohttp.ClientSession() as session:
        reg.tags["a/b"] = {"x": "sha256:" + "0" * 64}
        reg.override(
            "GET",
            r"/tags/list$",
            failing(2, lambda: web.Response(status=status, headers=headers, text="busy")),
        )
        seen = Retries()
        tags = list((await (await client(reg, session, seen)).tags("a/b")).names)
    assert tags == ["x"]
    assert seen.reasons == [reason, reason]
    assert reg.count("GET", "/tags/list") == 3


@pytest.mark.parametrize("status", [400, 403, 404, 500, 501])
async def test_other_statuses_are_final(status: int) -> None:
    async with ScriptedRegistry() as reg, aiohttp.ClientSession() as session:
        reg.override("GET", r"/manifests/", failing(5, lambda: error(status, "X")))
        seen = Retries()
        c = await client(reg, session, seen)
        with pytest.raises(RegistryError) as info:
            await c.manifest_get("a/b", "x")
    assert info.value.status == status and not is_retryable(info.value)
    assert seen.reasons == [] and reg.count("GET", "/manifests/") == 1


async def test_retry_after_beyond_the_cap_fails_at_once() -> None:
    async with ScriptedRegistry() as reg, aiohttp.ClientSession() as session:
        reg.override(
            "GET",
            r"/manifests/",
            failing(5, lambda: web.Response(status=429, headers={"Retry-After": "120"})),
        )
        seen = Retries()
        with pytest.raises(RegistryError, match="429"):
            await (await client(reg, session, seen)).manifest_get("a/b", "x")
    assert reg.count("GET", "/manifests/") == 1


async def test_stalled_server_times_out_and_is_retried() -> None:
    async with ScriptedRegistry() as reg, aiohttp.ClientSession() as session:
        reg.tags["a/b"] = {"x": "sha256:" + "0" * 64}

        async def stall(request: web.Request, match: re.Match[str]) -> web.StreamResponse | None:
            if reg.count("GET", "/tags/list") == 1:
                await asyncio.sleep(5)
            return None

        reg.override("GET", r"/tags/list$", stall)
        seen = Retries()
        assert list((await (await client(reg, session, seen)).tags("a/b")).names) == ["x"]
    assert seen.reasons == ["connection"]


async def test_blob_download_resumes_and_a_200_answer_skips_what_was_sent() -> None:
    """The first GET breaks halfway; the second ignores Range (200, whole blob): the stream
    still yields each byte exactly once and verifies, and the resume is counted."""
    blob = Blob.random(300_000, seed="resume")
    async with ScriptedRegistry() as reg, aiohttp.ClientSession() as session:
        reg.blobs[blob.digest] = blob.data
        ranges: list[str | None] = []

        async def handler(request: web.Request, match: re.Match[str]) -> web.StreamResponse:
            ranges.append(request.headers.get("Range"))
            resp = web.StreamResponse()
            resp.content_length = len(blob.data)
            await resp.prepare(request)
            if len(ranges) == 1:
                await resp.write(blob.data[:100_000])
                assert request.transport is not None
                request.transport.abort()
                return resp
            await resp.write(blob.data)
            return resp

        reg.override("GET", r"/blobs/", handler)
        seen = Retries()
        c = await client(reg, session, seen)
        desc = Descriptor(OCI_LAYER, blob.digest, blob.size)
        data = b"".join([chunk async for chunk in c.blob_read("a/b", desc)])
    assert data == blob.data
    assert ranges[0] is None and re.fullmatch(r"bytes=\d+-", ranges[1] or "")
    assert seen.reasons == ["connection"]


def test_policy_and_timeouts_from_the_environment() -> None:
    env = {
        "REGSYNC_RETRY_ATTEMPTS": "7",
        "REGSYNC_RETRY_INITIAL": "0.1",
        "REGSYNC_RETRY_MAX": "3",
        "REGSYNC_RETRY_AFTER_MAX": "30",
        "REGSYNC_CONNECT_TIMEOUT": "4",
        "REGSYNC_READ_TIMEOUT": "9.5",
    }
    assert RetryPolicy.from_env(env) == RetryPolicy(7, 0.1, 3, 30)
    assert Timeouts.from_env(env) == Timeouts(4, 9.5)
    assert RetryPolicy.from_env({}) == RetryPolicy() and Timeouts.from_env({}) == Timeouts()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("REGSYNC_RETRY_ATTEMPTS", "0"),
        ("REGSYNC_READ_TIMEOUT", "soon"),
        ("REGSYNC_RETRY_MAX", "-1"),
        ("REGSYNC_CONNECT_TIMEOUT", "inf"),
    ],
)
def test_bad_environment_values_are_config_errors_naming_the_variable(
    name: str, value: str
) -> None:
    with pytest.raises(ConfigError, match=name):
        (Timeouts if "TIMEOUT" in name else RetryPolicy).from_env({name: value})


def test_backoff_is_capped_full_jitter() -> None:
    policy = RetryPolicy(attempts=10, initial=0.5, maximum=4)
    for retry in range(1, 10):
        ceiling = min(4, 0.5 * 2 ** (retry - 1))
        assert all(0 <= policy.delay(retry) <= ceiling for _ in range(50))
