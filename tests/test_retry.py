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
