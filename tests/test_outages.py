"""Rate limits, 429s, per-registry concurrency, mirrors, and registries that are down."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from regsync.backends.registry.observer import NullObserver
from regsync.backends.registry.ratelimit import PullGate, Quota, parse_quota
from regsync.backends.registry.retry import RetryPolicy
from regsync.config import load_config
from regsync.runner import run
from tests.support import (
    Blob,
    Image,
    Registry,
    RegistryFactory,
    dead_port,
    mirrored_config,
    push,
    run_regsync,
    write_config,
)
from tests.support.servers import ProxyScript, RateLimitProxy

FAST = {"REGSYNC_RETRY_INITIAL": "0.01", "REGSYNC_RETRY_MAX": "0.05"}


# -- pull quota: unit tests -------------------------------------------------------------------


def test_quota_headers_parse_with_windows_in_any_case() -> None:
    quota = parse_quota({"RateLimit-Limit": "100;w=21600", "RateLimit-Remaining": "76;w=21600"})
    assert quota == Quota(remaining=76, limit=100, window=21600.0)
    assert quota.pause == 21600.0
    reset = parse_quota({"RateLimit-Remaining": "0", "RateLimit-Reset": "30"})
    assert reset is not None and reset.pause == 30.0 and reset.limit is None
    assert parse_quota({"RateLimit-Remaining": "many"}) is None
    assert parse_quota({}) is None


class Recorder(NullObserver):
    def __init__(self) -> None:
        self.events: list[tuple[str, str, object]] = []

    def registry_paused(self, registry: str, until: float | None) -> None:
        self.events.append(("paused", registry, until))

    def request_done(self, registry: str, method: str, status: str, seconds: float) -> None:
        self.events.append(("request", registry, method))

    def request_retried(self, registry: str, reason: str) -> None:
        self.events.append(("retried", registry, reason))


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.now + 1_700_000_000

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_pull_gate_pauses_below_the_floor_once_until_the_window_passes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    t, observer = FakeTime(), Recorder()
    gate = PullGate("docker.io", 20, observer, clock=t.clock, wall=t.wall, sleep=t.sleep)
    gate.seen(Quota(remaining=25, window=100))
    await gate.wait()
    assert not gate.paused and t.slept == []

    with caplog.at_level(logging.INFO):
        gate.seen(Quota(remaining=19, limit=100, window=100))
        gate.seen(Quota(remaining=18, limit=100, window=100))  # same pause: not logged again
        assert gate.paused
        await gate.wait()

    assert sum(t.slept) == pytest.approx(100) and not gate.paused
    assert observer.events == [
        ("paused", "docker.io", 1000.0 + 1_700_000_000 + 100),
        ("paused", "docker.io", None),
    ]
    assert caplog.text.count("pausing source pulls for 1m40s") == 1
    assert "resuming" in caplog.text
    unlimited = PullGate("x", None, observer)
    unlimited.seen(Quota(remaining=0))
    assert not unlimited.paused


# -- rate limits and concurrency against a real registry behind a scripted proxy --------------


@pytest.fixture
def proxy(source_registry: Registry) -> Iterator[RateLimitProxy]:
    server = RateLimitProxy(source_registry.url)
    server.start()
    yield server
    server.stop()


def seed(src: Registry, repo: str, count: int) -> dict[str, str]:
    return {
        f"{n}.0": push(
            src, repo, f"{n}.0", Image.docker([Blob.random(800, seed=f"{repo}{n}")])
        ).digest
        for n in range(count)
    }


def config_for(
    tmp_path: Path, src: str, dst: Registry, settings: str, source: str, mirror: str = "m:1"
) -> Path:
    return write_config(
        tmp_path,
        f"""
        version: 1
        registries:
          "{src}": {{tls: http, {settings}}}
          "{dst.host}": {{tls: http}}
          "{mirror}": {{tls: http}}
        rules:
          - {{name: r, source: "{src}/{source}", destination: "{dst.host}"}}
        """,
    )


async def test_low_quota_pauses_pulls_until_the_window_resets(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry, proxy: RateLimitProxy
) -> None:
    """The first HEAD reports 1 left (< min_remaining 5, w=1): the pause is logged once and
    reported to the observer, and no GET reaches the source until it is over."""
    digests = seed(source_registry, "team/app", 3)
    proxy.script = ProxyScript(ratelimit=(100, 1), remaining_script=[1, 90])
    config = load_config(
        config_for(
            tmp_path, proxy.host, dest_registry, "rate_limit: {min_remaining: 5}", "team/app"
        )
    )
    observer = Recorder()

    result = await run(config, config.rules, observer=observer)

    assert result.ok, result.rules[0].errors
    assert {t: dest_registry.manifest_digest("team/app", t) for t in digests} == digests
    events = [e for e in observer.events if e[1] == proxy.host]
    pauses = [i for i, e in enumerate(events) if e[0] == "paused"]
    assert len(pauses) == 2 and events[pauses[1]][2] is None  # paused once, then resumed
    start, end = pauses
    assert isinstance(events[start][2], float)
    assert not any(e[2] == "GET" for e in events[start:end])  # no pulls while paused
    assert sum(1 for e in events[end:] if e[2] == "GET") >= 3  # the pulls came after
    assert proxy.state().pulls == 3


async def test_a_pull_pause_sends_pulls_to_the_mirror_instead_of_waiting(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry, proxy: RateLimitProxy
) -> None:
    """Quota low on the primary with an hour left in its window: manifests come from the
    mirror at once; the primary still answers the free HEADs."""
    digests = seed(source_registry, "team/app", 2)
    proxy.script = ProxyScript(ratelimit=(100, 3600), remaining_script=[1])
    mirror = f"localhost:{source_registry.port}"  # the seeded registry, by another name
    settings = f'rate_limit: {{min_remaining: 5}}, mirrors: ["{mirror}"]'
    config = load_config(
        config_for(tmp_path, proxy.host, dest_registry, settings, "team/app", mirror)
    )
    observer = Recorder()

    result = await run(config, config.rules, observer=observer)

    assert result.ok, result.rules[0].errors
    assert {t: dest_registry.manifest_digest("team/app", t) for t in digests} == digests
    state = proxy.state()
    assert state.pulls == 0 and any(m == "HEAD" for m, _, _ in state.log)
    assert [e[0] for e in observer.events if e[0] == "paused"] == ["paused"]  # never resumed


async def test_429_retry_after_is_honoured_and_max_concurrency_holds(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry, proxy: RateLimitProxy
) -> None:
    digests = seed(source_registry, "team/app", 6)
    proxy.script = ProxyScript(fail_429=2, retry_after=1)
    config = load_config(
        config_for(tmp_path, proxy.host, dest_registry, "max_concurrency: 2", "team/app")
    )
    observer = Recorder()

    result = await run(config, config.rules, observer=observer, retry=RetryPolicy(initial=0.01))

    assert result.ok, result.rules[0].errors
    assert {t: dest_registry.manifest_digest("team/app", t) for t in digests} == digests
    state = proxy.state()
    assert [s for _, _, s in state.log].count(429) == 2
    assert [e for e in observer.events if e[0] == "retried"] == [("retried", proxy.host, "429")] * 2
    assert 1 <= state.max_in_flight <= 2


# -- mirrors and down registries ---------------------------------------------------------------


@pytest.mark.parametrize("failure", ["down", "503", "429"])
def test_failing_primary_falls_back_to_its_mirror(
    tmp_path: Path,
    source_registry: Registry,
    dest_registry: Registry,
    proxy: RateLimitProxy,
    failure: str,
) -> None:
    """Reads move to the mirror, with the same repository paths, and the switch is one line."""
    digests = seed(source_registry, "team/app", 2)
    primary = f"127.0.0.1:{dead_port()}" if failure == "down" else proxy.host
    if failure == "503":
        proxy.script = ProxyScript(fail_all=503)
    elif failure == "429":
        proxy.script = ProxyScript(fail_429=1000, retry_after=0)
    config = mirrored_config(tmp_path, primary, source_registry, dest_registry)

    proc = run_regsync("once", "-c", config, "--json", env={**FAST, "REGSYNC_RETRY_ATTEMPTS": "2"})

    assert proc.returncode == 0, proc.stderr
    (rule,) = json.loads(proc.stdout)["rules"]
    assert rule["tags"]["copied"] == 2
    assert {t: dest_registry.manifest_digest("team/app", t) for t in digests} == digests
    switch = f"registry {primary} failed ("
    assert proc.stderr.count(switch) == 1
    assert f"): reading from mirror {source_registry.host}" in proc.stderr
    # A fallback that works is a warning, not an error (nor is the primary found down).
    assert "ERROR" not in proc.stderr and "WARNING registry " in proc.stderr, proc.stderr


async def test_a_404_from_the_primary_is_an_answer_not_a_reason_to_fall_back(
    tmp_path: Path,
    source_registry: Registry,
    dest_registry: Registry,
    proxy: RateLimitProxy,
    registry_factory: RegistryFactory,
) -> None:
    """The primary lacks the repository: that is the answer (the rule's error: the source has
    no such repository); the mirror is never asked."""
    seed(source_registry, "team/app", 1)  # only the mirror (behind the proxy) has it
    primary = registry_factory()
    config = load_config(
        config_for(
            tmp_path,
            primary.host,
            dest_registry,
            f'mirrors: ["{proxy.host}"]',
            "team/app",
            mirror=proxy.host,
        )
    )
    result = await run(config, config.rules)

    assert not result.ok and result.rules[0].copied == 0
    assert result.rules[0].errors == [
        f"source repository {primary.host}/team/app does not exist; nothing was synced (set "
        "allow_empty: true on the rule if it may be empty on purpose)"
    ]
    assert proxy.state().log == []


def test_a_down_registry_fails_its_rules_fast_and_the_others_carry_on(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    digests = seed(source_registry, "team/app", 1)
    down = f"127.0.0.1:{dead_port()}"
    config = write_config(
        tmp_path,
        f"""
        version: 1
        registries:
          "{down}": {{tls: http}}
          "{source_registry.host}": {{tls: http}}
          "{dest_registry.host}": {{tls: http}}
        rules:
          - {{name: glob, source: "{down}/team/*", destination: "{dest_registry.host}/a"}}
          - {{name: single, source: "{down}/team/app", destination: "{dest_registry.host}/b"}}
          - name: fine
            source: "{source_registry.host}/team/app"
            destination: "{dest_registry.host}"
        """,
    )

    proc = run_regsync("once", "-c", config, "--json", env=FAST)

    assert proc.returncode == 1
    rules = {r["name"]: r for r in json.loads(proc.stdout)["rules"]}
    assert rules["fine"]["result"] == "success" and rules["fine"]["tags"]["copied"] == 1
    assert dest_registry.manifest_digest("team/app", "1.0") is None  # seeded 0.0 only
    assert dest_registry.manifest_digest("team/app", "0.0") == digests["0.0"]
    for name in ("glob", "single"):
        (error,) = rules[name]["errors"]
        assert down in error and f"connection refused by {down}" in error
        assert rules[name]["result"] == "failed"
    down_line = f"registry {down} is down: cannot connect (connection refused by {down}: nothing"
    assert proc.stderr.count(down_line) == 1
