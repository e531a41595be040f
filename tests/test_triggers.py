"""Events without sockets: parsing untrusted payloads, routing to rules, the coalescing queue,
and the daemon's rule loop running event work through a scripted runner."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Collection, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from regsync import eventhttp, triggers
from regsync.backends.memory import MemoryBackend
from regsync.backup import BackupTemplate
from regsync.config import Config, Rule, load_config, parse_config
from regsync.daemon import Daemon
from regsync.errors import ConfigError
from regsync.eventparse import (
    MAX_EVENTS,
    EventKind,
    PayloadError,
    RegistryEvent,
    parse_distribution,
    parse_harbor,
)
from regsync.metrics import Metrics
from regsync.plan import Action, RepoPlan, TagAction
from regsync.result import RuleResult, RunResult
from regsync.shard import Shard
from regsync.survey import SETTLE_DELAYS, SyncPolicy, survey_tags
from regsync.tagpolicy import TagPattern, TagPolicy
from regsync.triggers import Pending, RuleQueue, needs_discovery, route
from tests.support import Blob, Image, stored, write_config

SRC = "127.0.0.1:9"
SECRET = "s3cret-token-0123456789"
D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


def distribution(*events: dict[str, Any]) -> bytes:
    return json.dumps({"events": list(events)}).encode()


def dist_event(action: str, repo: str, tag: str | None = None, **target: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"repository": repo, "digest": D1, **target}
    if tag is not None:
        body["tag"] = tag
    return {"id": "x", "timestamp": "2026-12-06T17:20:00.5Z", "action": action, "target": body}


def harbor(kind: str, repo: str = "library/app", **resource: Any) -> bytes:
    """A webhook as Harbor documents it (v2.x ``default`` payload format)."""
    namespace, name = repo.split("/", 1)
    return json.dumps(
        {
            "type": kind,
            "occur_at": 1765041600,
            "operator": "admin",
            "event_data": {
                "resources": [
                    {
                        "digest": D1,
                        "tag": "1.0",
                        "resource_url": f"harbor.local/{repo}:1.0",
                        **resource,
                    }
                ],
                "repository": {
                    "date_created": 1765041000,
                    "name": name,
                    "namespace": namespace,
                    "repo_full_name": repo,
                    "repo_type": "private",
                },
            },
        }
    ).encode()


# -- parsing ---------------------------------------------------------------------------------


def test_distribution_manifest_push_with_a_tag_is_a_push_and_blobs_pulls_are_ignored() -> None:
    events = parse_distribution(
        distribution(
            dist_event(
                "push", "team/app", "1.0", mediaType="application/vnd.oci.image.manifest.v1+json"
            ),
            dist_event("push", "team/app", mediaType="application/octet-stream"),
            dist_event("push", "team/app"),  # a manifest pushed by digest
            dist_event("pull", "team/app", "1.0"),
            dist_event("mount", "team/app"),
            dist_event("delete", "team/app"),
        )
    )
    kinds = [e.kind for e in events]
    assert kinds == [EventKind.PUSH] + [EventKind.IGNORED] * 4 + [EventKind.DELETE]
    push = events[0]
    assert (push.repository, push.tag, push.digest) == ("team/app", "1.0", D1)
    assert push.timestamp == pytest.approx(1796577600.5)  # 2026-12-06T17:20:00.5Z


@pytest.mark.parametrize(
    ("repo", "tag", "digest"),
    [
        ("../etc", "1", D1),
        ("team/App", "1", D1),
        ("team//app", "1", D1),
        ("team/app", "../1", D1),
        ("team/app", "a" * 129, D1),
        ("team/app", "1", "sha256:../x"),
        (["team"], "1", D1),
        ("team/app", 7, D1),
    ],
)
def test_names_off_the_grammar_are_refused_event_by_event(repo: Any, tag: Any, digest: Any) -> None:
    body = distribution(dist_event("push", repo, tag, digest=digest), dist_event("push", "ok", "1"))
    first, second = parse_distribution(body)
    assert first.kind is EventKind.REFUSED and first.why
    assert second.kind is EventKind.PUSH


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b"[]",
        b'{"events": {}}',
        b'{"events": [1]}',
        b'{"events": [{"action": "push"}]}',
        b"[" * 10_000 + b"]" * 10_000,
        b'{"events": [' + b"[" * 20 + b"]" * 20 + b"]}",
        b"\xff\xfe",
        json.dumps({"events": [dist_event("push", "a", "1")] * (MAX_EVENTS + 1)}).encode(),
    ],
)
def test_malformed_distribution_bodies_raise_payload_error(body: bytes) -> None:
    with pytest.raises(PayloadError):
        parse_distribution(body)


def test_unreadable_timestamps_are_none_not_errors() -> None:
    for value in ("yesterday", 12, None, "2026-12-06T17:20:00", "9" * 100):
        event = {**dist_event("push", "a", "1"), "timestamp": value}
        assert parse_distribution(distribution(event))[0].timestamp is None


def test_harbor_push_delete_and_other_types() -> None:
    (push,) = parse_harbor(harbor("PUSH_ARTIFACT"))
    assert push == RegistryEvent(EventKind.PUSH, "library/app", "1.0", D1, 1765041600.0)
    (delete,) = parse_harbor(harbor("DELETE_ARTIFACT"))
    assert delete.kind is EventKind.DELETE and delete.tag == "1.0"
    (scan,) = parse_harbor(harbor("SCANNING_COMPLETED"))
    assert scan.kind is EventKind.IGNORED
    # Harbor names a push by digest (a replication, an untagged artifact) with the digest as tag.
    (untagged,) = parse_harbor(harbor("PUSH_ARTIFACT", tag=D1))
    assert untagged.kind is EventKind.IGNORED
    (no_tag,) = parse_harbor(harbor("PUSH_ARTIFACT", tag=None))
    assert no_tag.kind is EventKind.IGNORED
    (bad,) = parse_harbor(harbor("PUSH_ARTIFACT", repo="library/../x"))
    assert bad.kind is EventKind.REFUSED
    for body in (b'{"type": "PUSH_ARTIFACT"}', b"[]", b'{"type": 1, "event_data": {}}'):
        with pytest.raises(PayloadError):
            parse_harbor(body)


# -- routing and the queue -------------------------------------------------------------------


def config(tmp_path: Path, rules: str) -> Config:
    text = (
        f'version: 1\nregistries:\n  "{SRC}": {{tls: http, notifications: {{token: tok-123456}}}}\n'
        f"rules:\n{rules}"
    )
    return load_config(write_config(tmp_path, text))


def push_of(repo: str, tag: str, digest: str = D1) -> RegistryEvent:
    return RegistryEvent(EventKind.PUSH, repo, tag, digest, None)


def test_a_push_reaches_rules_whose_source_and_tag_filters_cover_it(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        f"  - {{name: glob, source: '{SRC}/team/*', destination: '127.0.0.1:8/m'}}\n"
        f"  - {{name: one, source: '{SRC}/team/app', destination: '127.0.0.1:8/o',"
        " tags: {include: ['v.*']}}\n"
        f"  - {{name: deep, source: '{SRC}/team/**', destination: '127.0.0.1:8/d', prune: true,"
        " tags: {semver: '>=2'}}\n"
        f"  - {{name: other, source: '127.0.0.1:7/team/*', destination: '127.0.0.1:8/x'}}\n"
        f"  - {{name: bundle, source: '{SRC}/team/*', destination: 'tar:{tmp_path}/b.tar'}}\n",
    )
    names = lambda routed: [r.name for r in routed]  # noqa: E731
    assert names(route(cfg, Shard(), SRC, push_of("team/app", "v1")).pushes) == ["glob", "one"]
    assert names(route(cfg, Shard(), SRC, push_of("team/app", "2.0")).pushes) == ["glob", "deep"]
    assert names(route(cfg, Shard(), SRC, push_of("team/a/b", "2.0")).pushes) == ["deep"]
    long = "team/" + "x" * 240  # valid alone, too long under the rule's destination path
    too_long = route(cfg, Shard(), SRC, push_of(long, "2.0"))
    assert too_long.refused and not too_long.pushes
    nothing = route(cfg, Shard(), SRC, push_of("else/app", "1"))
    assert not nothing.pushes and "no rule" in nothing.why
    delete = RegistryEvent(EventKind.DELETE, "team/app", "2.0", D1)
    assert names(route(cfg, Shard(), SRC, delete).cycles) == ["glob", "deep"]  # not "one": v.*
    untagged = RegistryEvent(EventKind.DELETE, "team/app", "", D1)
    assert names(route(cfg, Shard(), SRC, untagged).cycles) == ["glob", "one", "deep"]
    # Each shard routes only its own share; together they cover every rule once.
    shares = [route(cfg, Shard(i, 3), SRC, push_of("team/app", "2.0")).pushes for i in range(3)]
    assert sorted(n for share in shares for n in names(share)) == ["deep", "glob"]


def test_the_queue_coalesces_per_tag_latest_digest_wins_and_overflow_wants_a_cycle() -> None:
    queue = RuleQueue(limit=2)
    assert queue.push("a", "1", Pending(D1, 10.0, SRC))
    assert queue.push("a", "1", Pending(D2, 11.0, SRC))
    assert queue.push("a", "2", Pending(D1, 12.0, SRC))
    assert not queue.cycle_wanted
    assert not queue.push("b", "1", Pending(D1, 13.0, SRC))  # full: a cycle instead
    assert queue.cycle_wanted and len(queue.items) == 2
    assert queue.push("a", "1", Pending(D1, 14.0, SRC))  # a known entry still coalesces
    taken = queue.take()
    assert taken[("a", "1")] == Pending(D1, 14.0, SRC, events=3)
    assert queue.items == {}


def test_only_name_templates_need_discovery(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        f"  - {{name: a, source: '{SRC}/t/**', destination: '127.0.0.1:8/m/{{name}}'}}\n"
        f"  - {{name: b, source: '{SRC}/u/*', destination: '127.0.0.1:8/m/{{path}}'}}\n"
        f"  - {{name: c, source: '{SRC}/v/*', destination: '127.0.0.1:8/c'}}\n",
    )
    assert [needs_discovery(r) for r in cfg.rules] == [True, False, False]


# -- the daemon's loop with a scripted runner ------------------------------------------------


class Scripted:
    """A runner that records each call's targets, holds chosen calls, and reports every
    targeted tag as copied."""

    def __init__(self, hold: Collection[int] = ()) -> None:
        self.calls: list[dict[str, set[str]] | None] = []
        self.hold = set(hold)
        self.gate = asyncio.Event()
        self.active = self.peak = 0

    async def __call__(
        self,
        config: Config,
        rules: list[Rule],
        *,
        targets: Mapping[str, Collection[str]] | None = None,
        **kwargs: object,
    ) -> RunResult:
        self.active += 1
        self.peak = max(self.peak, self.active)
        self.calls.append(None if targets is None else {r: set(t) for r, t in targets.items()})
        if len(self.calls) in self.hold:
            await self.gate.wait()
        result = RuleResult(rules[0].name)
        for repo, tags in (targets or {}).items():
            actions = tuple(TagAction(t, Action.COPY, D1) for t in sorted(tags))
            result.plans.append(RepoPlan(repo, f"m/{repo}", actions))
            result.placed.extend((repo, t) for t in tags)
        self.active -= 1
        return RunResult([result])


async def until(predicate: Any, what: str) -> None:
    for _ in range(400):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"gave up waiting for {what}")


def event_count(metrics: Metrics, outcome: str) -> float:
    value = metrics.registry.get_sample_value(
        "regsync_events_total", {"registry": SRC, "outcome": outcome}
    )
    return value or 0.0


async def test_events_mid_cycle_wait_for_it_coalesce_and_never_overlap(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        f"  - {{name: r, source: '{SRC}/team/*', destination: '127.0.0.1:8/m', interval: 1h}}\n",
    )
    runner = Scripted(hold={1})  # the first cycle runs until the gate opens
    metrics = Metrics()
    daemon = Daemon(str(tmp_path / "sync.yaml"), cfg, metrics, grace=5, runner=runner)
    task = asyncio.create_task(daemon.run())
    await until(lambda: len(runner.calls) == 1, "the first cycle")
    daemon.events.accept(
        SRC,
        [
            push_of("team/a", "1", D1),
            push_of("team/a", "1", D2),
            push_of("team/a", "2"),
            push_of("team/b", "1"),
        ],
    )
    assert daemon.events.queue("r").items[("team/a", "1")].digest == D2  # latest wins
    assert daemon.start_cycle("r") == "running"
    for _ in range(20):
        await asyncio.sleep(0)
    assert len(runner.calls) == 1  # nothing starts while the cycle runs
    runner.gate.set()
    await until(lambda: len(runner.calls) == 2, "the queued events")
    assert runner.calls[1] == {"team/a": {"1", "2"}, "team/b": {"1"}}
    await until(lambda: event_count(metrics, "copied") == 4, "the events counted")
    lag = metrics.registry.get_sample_value("regsync_replication_lag_seconds_count", {"rule": "r"})
    assert lag == 3  # one per (repository, tag) put in place
    assert daemon.states["r"].runs == 1  # an event-triggered copy is not a cycle
    assert runner.peak == 1
    daemon.stop()
    await asyncio.wait_for(task, 10)


async def test_overflow_and_the_run_request_run_a_full_cycle_first(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        f"  - {{name: r, source: '{SRC}/team/*', destination: '127.0.0.1:8/m', interval: 1h}}\n",
    )
    runner = Scripted(hold={1})
    metrics = Metrics()
    daemon = Daemon(str(tmp_path / "sync.yaml"), cfg, metrics, grace=5, runner=runner)
    task = asyncio.create_task(daemon.run())
    await until(lambda: len(runner.calls) == 1, "the first cycle")
    daemon.events.queue("r").limit = 2
    daemon.events.accept(SRC, [push_of("team/a", str(n)) for n in range(5)])
    assert event_count(metrics, "overflow") == 3
    assert daemon.events.rule_status("r") == {"pending": 2, "cycle_requested": True}
    runner.gate.set()
    await until(lambda: len(runner.calls) == 3, "the cycle, then the queued events")
    assert runner.calls[1] is None  # a full cycle covers what overflowed
    assert runner.calls[2] == {"team/a": {"0", "1"}}
    assert daemon.start_cycle("nope") == "unknown"
    assert daemon.start_cycle("r") == "started"
    await until(lambda: len(runner.calls) == 4, "the requested cycle")
    assert runner.calls[3] is None and runner.peak == 1
    daemon.stop()
    await asyncio.wait_for(task, 10)


async def test_a_name_template_rule_copies_events_only_into_repositories_a_cycle_mapped(
    tmp_path: Path,
) -> None:
    """`{name}` can map two sources onto one destination: only a full cycle can tell, so an
    event for a repository the last cycle did not map asks for a cycle instead."""
    cfg = config(
        tmp_path,
        f"  - {{name: r, source: '{SRC}/team/**', destination: '127.0.0.1:8/m/{{name}}',"
        " interval: 1h}\n",
    )
    runner = Scripted()
    daemon = Daemon(str(tmp_path / "sync.yaml"), cfg, Metrics(), grace=5, runner=runner)
    task = asyncio.create_task(daemon.run())
    await until(lambda: len(runner.calls) == 1, "the first cycle")
    await until(lambda: daemon.states["r"].last_result is not None, "its result")
    daemon.events.accept(SRC, [push_of("team/x/app", "1")])
    await until(lambda: len(runner.calls) == 2, "the cycle the unknown repository asks for")
    assert runner.calls[1] is None
    daemon.stop()
    await asyncio.wait_for(task, 10)


# -- config ----------------------------------------------------------------------------------


@pytest.mark.parametrize("token", ["has space", "tab\there", "caf\u00e9-token"])
def test_an_api_token_off_the_header_alphabet_is_refused_naming_its_source(token: str) -> None:
    with pytest.raises(ValueError, match=r"REGSYNC_API_TOKEN: the token must be printable"):
        eventhttp.load_api_token(None, {"REGSYNC_API_TOKEN": token})


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ('""', "is empty"),
        ('"${UNSET_EVENTS_TOKEN}"', "UNSET_EVENTS_TOKEN"),
        ('"has space"', "printable ASCII without spaces"),
    ],
)
def test_a_bad_notifications_token_is_a_config_error_naming_the_key(
    token: str, message: str
) -> None:
    text = (
        f'version: 1\nregistries:\n  "{SRC}":\n    notifications: {{token: {token}}}\n'
        f"rules:\n  - {{name: r, source: '{SRC}/a', destination: '127.0.0.1:8/m'}}\n"
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text, env={})
    error = str(info.value)
    assert "notifications" in error and message in error and "has space" not in error


# -- planning the tags events named (survey_tags) --------------------------------------------


class Racing(MemoryBackend):
    """Links a pushed tag only after answering its first HEAD, as distribution may."""

    pending: Any = None

    async def manifest_head(self, repo: str, ref: str) -> Any:
        found = await super().manifest_head(repo, ref)
        if self.pending is not None and ref == "1":
            built, self.pending = self.pending, None
            await stored.store(self, repo, ref, built)
        return found


async def test_event_plans_head_the_source_and_wait_for_a_tag_the_event_raced() -> None:
    """distribution sends a push event before it links the tag: the plan HEADs the tag again
    until it shows the event's digest, then copies what the source says (never the hint)."""
    source, dest = Racing("src"), MemoryBackend("dst")
    old = await stored.store(source, "team/app", "1", Image.oci([Blob.random(100, seed="old")]))
    new = source.pending = Image.oci([Blob.random(100, seed="new")])
    policy = SyncPolicy(tags=TagPolicy(exclude=(TagPattern("skip-.*"),)))
    hints = {"1": new.digest, "skip-me": new.digest, "gone": old.digest}
    plan = await survey_tags(source, dest, "team/app", "team/app", policy, hints)
    assert [(a.tag, a.action, a.source_digest) for a in plan.actions] == [
        ("1", Action.COPY, new.digest)
    ]
    assert plan.selected == ("1", "gone")  # skip-me: dropped by name, never HEADed
    assert ("manifest_head", "team/app", "skip-me") not in source.calls
    assert source.count("tags") == 0  # no listing without tags.latest
    # A hint naming a digest the tag never gets: after the settle delays, the source decides.
    stale = {"1": old.digest}
    plan = await survey_tags(source, dest, "team/app", "team/app", SyncPolicy(), stale)
    assert [(a.tag, a.source_digest) for a in plan.actions] == [("1", new.digest)]


async def test_event_plans_with_latest_read_the_listing_to_select() -> None:
    source, dest = MemoryBackend("src"), MemoryBackend("dst")
    for tag in ("1.0", "2.0", "3.0"):
        await stored.store(source, "team/app", tag, Image.oci([Blob.random(50, seed=tag)]))
    policy = SyncPolicy(tags=TagPolicy(latest=2))
    hints = {"1.0": "", "3.0": ""}
    plan = await survey_tags(source, dest, "team/app", "team/app", policy, hints)
    assert [a.tag for a in plan.actions] == ["3.0"] and source.count("tags") == 1


# -- the numbers the README states -----------------------------------------------------------


def test_the_documented_bounds() -> None:
    assert RuleQueue().limit == 1000 and MAX_EVENTS == 1000
    assert eventhttp.MAX_BODY == 1024 * 1024 and eventhttp.BODY_DEADLINE == 10
    assert 1.4 <= sum(SETTLE_DELAYS) <= 1.6  # "up to about 1.5 s"
    assert triggers.DELETE_SETTLE == 1.0 and triggers.LOG_EVERY == 60


def test_an_event_time_off_by_more_than_five_minutes_is_replaced_by_its_arrival() -> None:
    now = time.time()
    assert triggers._trusted_time(now - 10) == pytest.approx(now - 10)
    assert triggers._trusted_time(now - 400) == pytest.approx(now, abs=5)
    assert triggers._trusted_time(now + 400) == pytest.approx(now, abs=5)
    assert triggers._trusted_time(None) == pytest.approx(now, abs=5)


class _StalledBody:
    """The parts of an aiohttp request `read_body` uses: a body that never finishes."""

    content_length = None

    class content:
        @staticmethod
        async def iter_any() -> Any:
            yield b"{"
            await asyncio.Event().wait()


async def test_a_body_not_sent_within_the_deadline_is_refused_408(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(eventhttp, "BODY_DEADLINE", 0.05)
    with pytest.raises(eventhttp._Refusal) as info:
        await eventhttp.read_body(_StalledBody())  # type: ignore[arg-type]
    assert info.value.status == 408


def test_the_token_must_match_whole_and_the_scheme_is_bearer() -> None:
    class Req:
        def __init__(self, header: str) -> None:
            self.headers = {"Authorization": header}

    ok = [f"Bearer {SECRET}", f"bearer {SECRET}", f"BEARER  {SECRET} "]
    bad = [SECRET, f"Basic {SECRET}", f"Bearer {SECRET}x", f"Bearer {SECRET[:-1]}", "Bearer ", ""]
    assert all(eventhttp.authorised(Req(h), SECRET) for h in ok)  # type: ignore[arg-type]
    assert not any(eventhttp.authorised(Req(h), SECRET) for h in bad)  # type: ignore[arg-type]


async def test_a_stream_of_events_never_starves_the_scheduled_cycle(tmp_path: Path) -> None:
    """Each event-triggered run ends with another event queued (an endless stream): the
    rule's interval still brings its full cycle."""
    cfg = config(
        tmp_path,
        f"  - {{name: r, source: '{SRC}/team/*', destination: '127.0.0.1:8/m', interval: 1s}}\n",
    )
    daemon: Daemon | None = None
    n = 0

    class Streaming(Scripted):
        async def __call__(self, config: Config, rules: list[Rule], **kwargs: Any) -> RunResult:
            nonlocal n
            result = await super().__call__(config, rules, **kwargs)
            assert daemon is not None
            n += 1
            daemon.events.accept(SRC, [push_of("team/a", str(n))])  # the next one is waiting
            await asyncio.sleep(0.01)
            return result

    runner = Streaming()
    daemon = Daemon(str(tmp_path / "sync.yaml"), cfg, Metrics(), grace=5, runner=runner)
    task = asyncio.create_task(daemon.run())
    await until(lambda: runner.calls.count(None) >= 2, "the next scheduled cycle")
    first, second = [i for i, call in enumerate(runner.calls) if call is None][:2]
    assert second - first > 1  # events ran in between
    daemon.stop()
    await asyncio.wait_for(task, 10)


def test_a_notifications_token_is_redacted_once_serve_has_the_config(tmp_path: Path) -> None:
    from regsync.secrets import redact

    cfg = config(tmp_path, f"  - {{name: r, source: '{SRC}/a', destination: '127.0.0.1:8/m'}}\n")
    Daemon(str(tmp_path / "sync.yaml"), cfg, Metrics(), grace=5)
    assert redact("a registry echoed tok-123456 back") == "a registry echoed *** back"


async def test_event_plans_refuse_a_backup_name_the_source_has_as_a_cycle_does() -> None:
    """An event names one tag, but a backup of it named like another mirrored source tag
    (`{tag}-prev` for `1` is `1-prev`) would overwrite that tag: refused as in a cycle."""
    source, dest = MemoryBackend("src"), MemoryBackend("dst")
    prev = Image.oci([Blob.random(50, seed="prev")])
    await stored.store(source, "team/app", "1-prev", prev)
    await stored.store(dest, "team/app", "1-prev", prev)
    await stored.store(dest, "team/app", "1", Image.oci([Blob.random(50, seed="old")]))
    await stored.store(source, "team/app", "1", Image.oci([Blob.random(50, seed="new")]))
    policy = SyncPolicy(backup=BackupTemplate.parse("{tag}-prev"))
    plan = await survey_tags(source, dest, "team/app", "team/app", policy, {"1": ""})
    assert [(a.tag, a.backup, a.backup_clash) for a in plan.actions] == [("1", "1-prev", True)]
    # A backup name outside the tag filters is no mirrored tag: no clash.
    policy = replace(policy, tags=TagPolicy(exclude=(TagPattern(".*-prev"),)))
    plan = await survey_tags(source, dest, "team/app", "team/app", policy, {"1": ""})
    assert [(a.tag, a.backup, a.backup_clash) for a in plan.actions] == [("1", "1-prev", False)]
