"""Per-registry options from regclient's regsync: User-Agent, requests_per_second.

Scripted registries stand in for what a real one cannot show: the headers each request
carried and when each arrived.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time

from aiohttp import web

from regsync import __version__
from regsync.backends.registry.throttle import Throttle
from regsync.config import parse_config
from regsync.runner import run
from tests.support import Blob, Image
from tests.support.scripted import ScriptedRegistry


def _yaml(src: ScriptedRegistry, dst: ScriptedRegistry, *, src_extra: str = "") -> str:
    return f"""
version: 1
registries:
  "{src.host}":
    tls: http
    credentials: {{username: u, password: p}}
{src_extra}
  "{dst.host}":
    tls: http
rules:
  - name: r
    source: {src.host}/team/app
    destination: {dst.host}/m
"""


def _record_agents(reg: ScriptedRegistry, seen: list[tuple[str, str]], *, bearer: bool) -> None:
    async def handler(request: web.Request, match: re.Match[str]) -> web.Response | None:
        seen.append((request.path, request.headers.get("User-Agent", "")))
        if not bearer:
            return None
        if request.path == "/token":
            return web.json_response({"token": "t0k"})
        if request.headers.get("Authorization") != "Bearer t0k":
            challenge = f'Bearer realm="{reg.url}/token",service="s"'
            return web.Response(status=401, headers={"WWW-Authenticate": challenge})
        return None

    reg.override("*", r"^/", handler)


async def test_every_request_carries_the_regsync_user_agent_token_fetches_included() -> None:
    async with ScriptedRegistry() as src, ScriptedRegistry() as dst:
        src.add("team/app", "1", Image.docker([Blob.random(2000, seed="ua")]))
        src_seen: list[tuple[str, str]] = []
        dst_seen: list[tuple[str, str]] = []
        _record_agents(src, src_seen, bearer=True)
        _record_agents(dst, dst_seen, bearer=False)
        config = parse_config(_yaml(src, dst), env={})
        result = await run(config, config.rules)
    assert result.ok, result.rules[0].errors
    assert dst.tags["m/team/app"]["1"] == src.tags["team/app"]["1"]
    assert any(path == "/token" for path, _ in src_seen)  # the token fetch is among them
    assert any("/blobs/uploads/" in path for path, _ in dst_seen)
    agents = {agent for _, agent in src_seen + dst_seen}
    assert agents == {f"regsync/{__version__}"}


async def test_user_agent_setting_overrides_it_for_that_registry_only() -> None:
    async with ScriptedRegistry() as src, ScriptedRegistry() as dst:
        src.add("team/app", "1", Image.docker([Blob.random(2000, seed="ua2")]))
        src_seen: list[tuple[str, str]] = []
        dst_seen: list[tuple[str, str]] = []
        _record_agents(src, src_seen, bearer=True)
        _record_agents(dst, dst_seen, bearer=False)
        extra = "    user_agent: lab-mirror/2 (ops@example.org)"
        config = parse_config(_yaml(src, dst, src_extra=extra), env={})
        result = await run(config, config.rules)
    assert result.ok, result.rules[0].errors
    assert {agent for _, agent in src_seen} == {"lab-mirror/2 (ops@example.org)"}
    assert {agent for _, agent in dst_seen} == {f"regsync/{__version__}"}


def _two_rules(src: ScriptedRegistry, dst: ScriptedRegistry, src_extra: str) -> str:
    return f"""
version: 1
registries:
  "{src.host}":
    tls: http
{src_extra}
  "{dst.host}":
    tls: http
rules:
  - {{name: one, source: "{src.host}/team/one", destination: "{dst.host}/m"}}
  - {{name: two, source: "{src.host}/team/two", destination: "{dst.host}/m"}}
"""


async def _arrivals(src_extra: str) -> list[float]:
    """When each request of a two-rule run reached the shared source registry."""
    async with ScriptedRegistry() as src, ScriptedRegistry() as dst:
        for repo in ("one", "two"):
            for tag in ("1", "2"):
                src.add(f"team/{repo}", tag, Image.docker([Blob.random(500, seed=repo + tag)]))
        times: list[float] = []

        async def stamp(request: web.Request, match: re.Match[str]) -> None:
            times.append(time.monotonic())

        src.override("*", r"^/", stamp)
        config = parse_config(_two_rules(src, dst, src_extra), env={})
        result = await run(config, config.rules)
    assert result.ok, [r.errors for r in result.rules]
    assert dst.tags["m/team/one"] and dst.tags["m/team/two"]
    return times


def _spaced(times: list[float], interval: float) -> bool:
    """Whether the k-th arrival after any other came at least k intervals later, less one
    interval: a busy machine may delay a single arrival (shortening the gap after it) by up to
    that much, but a cap that holds cannot let requests bunch up over a longer stretch."""
    return all(
        times[j] - times[i] >= (j - i - 1) * interval
        for i, j in itertools.combinations(range(len(times)), 2)
    )


async def test_requests_per_second_spaces_every_request_of_all_rules_on_that_registry() -> None:
    times = await _arrivals("    requests_per_second: 10")
    assert len(times) >= 10
    assert _spaced(times, 0.1), [b - a for a, b in itertools.pairwise(times)]


async def test_without_requests_per_second_requests_are_not_spaced() -> None:
    times = await _arrivals("")
    assert len(times) >= 10
    assert not _spaced(times, 0.1)  # the check above would notice a missing cap


async def test_throttle_hands_out_turns_one_interval_apart_in_call_order() -> None:
    """The bucket itself, on a fake clock: concurrent callers get starts 1/rate apart."""
    now = [100.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    throttle = Throttle(2.0, clock=lambda: now[0], sleep=sleep)
    await asyncio.gather(*(throttle.wait() for _ in range(4)))
    assert slept == [0.5, 1.0, 1.5]  # the first goes at once
    now[0] = 110.0  # idle long enough: no burst is saved up beyond one token
    await throttle.wait()
    await throttle.wait()
    assert slept == [0.5, 1.0, 1.5, 0.5]
    await Throttle(None, clock=lambda: now[0], sleep=sleep).wait()
    assert len(slept) == 4
