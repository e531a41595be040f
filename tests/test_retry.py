"""The retry policy: what is retried, how long it waits, that every retry is counted, and the
environment knobs that tune it."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

import regsync.backends.registry.retry as retry_module
from regsync.backends.registry.client import RegistryClient
from regsync.backends.registry.retry import (
    TRANSFER,
    RetryPolicy,
    Timeouts,
    is_retryable,
    retry_reason,
    retrying,
)
from regsync.backends.registry.transport import Transport
from regsync.errors import ConfigError, IntegrityError, RegistryError, TransportError
from regsync.oci.manifest import Descriptor
from tests.support import OCI_LAYER, Blob
from tests.support.scripted import ScriptedRegistry, error
from tests.support.servers import TokenServer

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


def test_every_timeout_knob_is_read_from_its_own_variable_and_checked_at_its_minimum() -> None:
    env = {
        "REGSYNC_CONNECT_TIMEOUT": "0.01",
        "REGSYNC_READ_TIMEOUT": "0.02",
        "REGSYNC_REQUEST_TIMEOUT": "0.03",
        "REGSYNC_MIN_RATE": "0",  # 0 switches the minimum rate off
        "REGSYNC_RATE_WINDOW": "0.04",
    }
    assert Timeouts.from_env(env) == Timeouts(0.01, 0.02, 0.03, 0, 0.04)
    assert RetryPolicy.from_env({"REGSYNC_RETRY_ATTEMPTS": "1"}).attempts == 1
    for name in ("CONNECT_TIMEOUT", "READ_TIMEOUT", "REQUEST_TIMEOUT", "RATE_WINDOW"):
        with pytest.raises(ConfigError) as caught:
            Timeouts.from_env({f"REGSYNC_{name}": "0.009"})
        assert str(caught.value) == (
            f"environment REGSYNC_{name}='0.009': expected a number >= 0.01"
        )
    with pytest.raises(ConfigError, match=r"REGSYNC_MIN_RATE='-1': expected a number >= 0$"):
        Timeouts.from_env({"REGSYNC_MIN_RATE": "-1"})


def test_a_body_gets_the_total_deadline_plus_its_time_at_the_minimum_rate() -> None:
    timeouts = Timeouts(total=30, min_rate=1024)
    assert timeouts.for_body(0) == 30
    assert timeouts.for_body(2048) == 32
    off = Timeouts(total=30, min_rate=0)
    assert off.for_body(0) == 30 and off.for_body(2048) is None


def test_backoff_ceiling_doubles_from_initial_up_to_the_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("random.uniform", lambda low, high: high)  # the ceiling itself
    policy = RetryPolicy(attempts=10, initial=0.5, maximum=3)
    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1, 2, 3, 3]
    assert RetryPolicy(initial=1, maximum=100).delay(4) == 8


def test_a_retry_after_exactly_at_the_cap_is_waited_for() -> None:
    policy = RetryPolicy(max_retry_after=5)
    assert policy.wait(RegistryError("429", status=429, retry_after=5), 1) == 5


def test_retry_labels_are_the_status_or_the_kind_of_failure() -> None:
    assert retry_reason(RegistryError("x", status=503)) == "503"
    assert retry_reason(TransportError("reset")) == "connection"
    assert retry_reason(IntegrityError("bad digest")) == "integrity"
    assert retry_reason(RegistryError("no status")) == "registry"
    assert retry_reason(None) == "unknown"


async def test_a_loop_gives_up_after_its_attempts_with_the_last_error_itself() -> None:
    """Not tenacity's RetryError: callers read the registry's error; retries are charged to
    the registry named by the error, else to the loop's."""
    seen: list[tuple[str, str]] = []

    class Observer(Retries):
        def request_retried(self, registry: str, reason: str) -> None:
            seen.append((registry, reason))

    tries = 0
    policy = RetryPolicy(attempts=3, initial=0, maximum=0)
    with pytest.raises(IntegrityError, match="try 3"):
        async for attempt in retrying(policy, Observer(), "dst:5000", on=TRANSFER):
            with attempt:
                tries += 1
                if tries < 4:  # would succeed on a 4th try, which must never come
                    raise IntegrityError(f"try {tries}")
    assert tries == 3
    assert seen == [("dst:5000", "integrity")] * 2
    seen.clear()
    with pytest.raises(TransportError):
        async for attempt in retrying(policy, Observer(), "dst:5000", on=TRANSFER):
            with attempt:
                raise TransportError("reset", registry="src:5000")  # the source's failure
    assert seen == [("src:5000", "connection")] * 2


# -- resumed blob reads ------------------------------------------------------------------------

BIG = Blob.random(1_000_000, seed="resume-big")


async def read_blob(
    script: Callable[[web.Request, int], Awaitable[web.StreamResponse]],
    retry: RetryPolicy = FAST,
) -> tuple[bytes, list[str | None], list[tuple[str, str]]]:
    """``BIG`` read through ``script(request, n)`` (n: the GET's number, from 1): the bytes
    read, each GET's Range header, and the retries counted (registry, reason)."""
    async with ScriptedRegistry() as reg, aiohttp.ClientSession() as session:
        ranges: list[str | None] = []
        retried: list[tuple[str, str]] = []

        async def handler(request: web.Request, match: re.Match[str]) -> web.StreamResponse:
            ranges.append(request.headers.get("Range"))
            return await script(request, len(ranges))

        class Seen(Retries):
            def request_retried(self, registry: str, reason: str) -> None:
                retried.append((registry, reason))

        reg.override("GET", r"/blobs/", handler)
        c = RegistryClient(
            Transport(
                session, reg.host, reg.url, retry=retry, observer=Seen(), timeouts=Timeouts(5, 5)
            )
        )
        desc = Descriptor(OCI_LAYER, BIG.digest, BIG.size)
        try:
            data = b"".join([chunk async for chunk in c.blob_read("a/b", desc)])
        finally:
            host = reg.host
    return data, ranges, [(r.replace(host, "HOST"), why) for r, why in retried]


async def broken_after(request: web.Request, sent: int) -> web.StreamResponse:
    """200 for the whole blob, the connection cut after ``sent`` bytes."""
    resp = web.StreamResponse()
    resp.content_length = BIG.size
    await resp.prepare(request)
    await resp.write(BIG.data[:sent])
    await resp.drain()
    assert request.transport is not None
    request.transport.abort()
    return resp


async def partial(request: web.Request, start: int, content_range: str | None) -> web.Response:
    headers = {} if content_range is None else {"Content-Range": content_range}
    return web.Response(status=206, body=BIG.data[start:], headers=headers)


def asked_from(header: str | None) -> int:
    match = re.fullmatch(r"bytes=(\d+)-", header or "")
    assert match is not None, header
    return int(match[1])


async def test_a_broken_download_asks_for_the_rest_and_a_206_continues_there() -> None:
    served: list[int] = []

    async def script(request: web.Request, n: int) -> web.StreamResponse:
        if n == 1:
            return await broken_after(request, 600_000)
        start = asked_from(request.headers.get("Range"))
        served.append(len(BIG.data) - start)
        return await partial(request, start, f"bytes {start}-{BIG.size - 1}/{BIG.size}")

    data, ranges, retried = await read_blob(script)

    assert data == BIG.data
    assert ranges[0] is None and 0 < asked_from(ranges[1]) <= 600_000
    assert served == [BIG.size - asked_from(ranges[1])]  # only the rest crossed the wire
    assert retried == [("HOST", "connection")]


async def test_a_server_ignoring_range_is_skipped_to_where_the_stream_stopped() -> None:
    """The resumed GET gets the whole blob (200): what was already passed on is skipped, across
    several reads, and each byte is yielded once."""

    async def script(request: web.Request, n: int) -> web.StreamResponse:
        if n == 1:
            return await broken_after(request, 700_000)
        return web.Response(body=BIG.data)

    data, ranges, _ = await read_blob(script)
    assert data == BIG.data and asked_from(ranges[1]) > 256 * 1024  # more than one read


@pytest.mark.parametrize(
    "content_range",
    ["bytes 5-999999/1000000", None, "items 0-1/2"],
    ids=["another-start", "none", "not-bytes"],
)
async def test_a_206_for_a_range_not_asked_for_is_refused(content_range: str | None) -> None:
    async def script(request: web.Request, n: int) -> web.StreamResponse:
        if n == 1:
            return await broken_after(request, 600_000)
        return await partial(request, 5, content_range)

    with pytest.raises(RegistryError) as caught:
        await read_blob(script)
    assert "answered a range we did not ask for" in str(caught.value)
    assert caught.value.status == 206 and caught.value.registry.startswith("127.0.0.1:")


async def test_a_206_to_a_request_without_range_is_refused() -> None:
    async def script(request: web.Request, n: int) -> web.StreamResponse:
        return await partial(request, 0, f"bytes 0-{BIG.size - 1}/{BIG.size}")

    with pytest.raises(RegistryError, match="answered a range we did not ask for"):
        await read_blob(script)


async def short(request: web.Request) -> web.Response:
    """A complete answer that is shorter than the blob (its own Content-Length)."""
    return web.Response(body=BIG.data[:1000])


async def test_a_body_that_ends_early_is_read_again_within_the_attempts() -> None:
    async def script(request: web.Request, n: int) -> web.StreamResponse:
        return await short(request) if n == 1 else web.Response(body=BIG.data)

    data, ranges, retried = await read_blob(script, RetryPolicy(attempts=2, initial=0, maximum=0))
    assert data == BIG.data and asked_from(ranges[1]) == 1000
    assert retried == [("HOST", "connection")]


async def test_a_body_that_always_ends_early_fails_after_the_attempts_saying_where() -> None:
    gets = 0

    async def script(request: web.Request, n: int) -> web.StreamResponse:
        nonlocal gets
        gets = n
        return await short(request)

    with pytest.raises(TransportError) as caught:
        await read_blob(script, RetryPolicy(attempts=3, initial=0, maximum=0))
    assert gets == 3
    assert re.fullmatch(
        rf"127\.0\.0\.1:\d+: GET /v2/a/b/blobs/{BIG.digest} ended after 1000 of {BIG.size} bytes",
        str(caught.value),
    ), str(caught.value)
    assert caught.value.registry.startswith("127.0.0.1:")


async def test_a_blob_read_asks_for_pull_on_its_repository_and_is_counted_as_a_get(
    tmp_path: Path,
) -> None:
    """The token a blob GET needs (pull on that repository), and the method the request
    metrics see."""
    tokens = TokenServer(tmp_path, {}).start()
    try:
        async with ScriptedRegistry() as reg, aiohttp.ClientSession() as session:
            reg.blobs[BIG.digest] = BIG.data

            async def bearer(request: web.Request, match: re.Match[str]) -> web.Response | None:
                if request.headers.get("Authorization", "").startswith("Bearer "):
                    return None
                challenge = f'Bearer realm="{tokens.url}/token",service="reg"'
                return web.Response(status=401, headers={"WWW-Authenticate": challenge})

            reg.override("*", r"^/v2/", bearer)
            methods: list[str] = []

            class Seen(Retries):
                def request_done(
                    self, registry: str, method: str, status: str, seconds: float
                ) -> None:
                    methods.append(f"{method} {status}")

            c = RegistryClient(Transport(session, reg.host, reg.url, retry=FAST, observer=Seen()))
            desc = Descriptor(OCI_LAYER, BIG.digest, BIG.size)
            data = b"".join([chunk async for chunk in c.blob_read("team/app", desc)])
        asked = [r.scopes for r in tokens.requests()]
    finally:
        tokens.stop()
    assert data == BIG.data
    assert asked == [("repository:team/app:pull",)]
    assert methods[-1] == "GET 200"


async def test_a_blob_read_slower_than_the_minimum_rate_names_the_request() -> None:
    async def script(request: web.Request, n: int) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_length = BIG.size
        await resp.prepare(request)
        for _ in range(100):  # one byte a while, until the client gives up
            try:
                await resp.write(b"x")
            except (ConnectionError, RuntimeError):
                break
            await asyncio.sleep(0.05)
        return resp

    async with ScriptedRegistry() as reg, aiohttp.ClientSession() as session:

        async def handler(request: web.Request, match: re.Match[str]) -> web.StreamResponse:
            return await script(request, 1)

        reg.override("GET", r"/blobs/", handler)
        slow = Timeouts(5, 5, 5, min_rate=1000, rate_window=0.2)
        c = RegistryClient(
            Transport(session, reg.host, reg.url, retry=RetryPolicy(attempts=1), timeouts=slow)
        )
        desc = Descriptor(OCI_LAYER, BIG.digest, BIG.size)
        with pytest.raises(TransportError) as caught:
            async for _ in c.blob_read("a/b", desc):
                pass
    assert f"GET /v2/a/b/blobs/{BIG.digest} is slower than 1000 bytes/s" in str(caught.value)


async def test_a_request_answered_at_once_builds_no_retry_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The common path pays nothing for tenacity: its loop is built only once a try failed in
    a way worth retrying, and then takes that failure as its first try."""
    built: list[int] = []

    def counted(*args: object, **kwargs: object) -> object:
        built.append(1)
        return retrying(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(retry_module, "retrying", counted)
    async with ScriptedRegistry() as reg, aiohttp.ClientSession() as session:
        reg.tags["a/b"] = {"x": "sha256:" + "0" * 64}
        seen = Retries()
        c = await client(reg, session, seen)
        for _ in range(3):
            assert list((await c.tags("a/b")).names) == ["x"]
        assert built == [] and seen.reasons == []
        reg.override("GET", r"/tags/list$", failing(1, lambda: error(503, "X")))
        assert list((await c.tags("a/b")).names) == ["x"]
    assert built == [1] and seen.reasons == ["503"]
    assert reg.count("GET", "/tags/list") == 5


async def test_a_request_failing_every_try_is_sent_exactly_attempts_times() -> None:
    """The first try outside the loop counts as the loop's first: FAST allows 3 in all."""
    async with ScriptedRegistry() as reg, aiohttp.ClientSession() as session:
        reg.override("GET", r"/tags/list$", failing(9, lambda: error(503, "X")))
        seen = Retries()
        with pytest.raises(RegistryError) as info:
            await (await client(reg, session, seen)).tags("a/b")
    assert info.value.status == 503
    assert seen.reasons == ["503", "503"] and reg.count("GET", "/tags/list") == 3
