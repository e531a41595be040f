"""Event-triggered sync: which rules an event concerns, and each rule's queue of work.

An accepted event (``eventparse``) is routed here, at once and without I/O, so the endpoint
answers 202 before any copy starts:

- ``route``: a PUSH goes to every rule whose source covers the repository (same registry,
  the repository or a glob matching it) and whose tag filters select the tag by name, in this
  agent's shard; a DELETE to every such rule (whose tag filters cover the tag, when it names
  one) as a full cycle, which prunes where the rule prunes.
- ``RuleQueue``: per rule, pending (repository, tag) entries coalesced (the latest digest
  wins) and bounded; an entry beyond the bound asks for a full cycle of the rule instead.
- ``EventDispatcher``: the daemon's side. It routes, queues, wakes the rule's loop, and,
  once the loop has run the work through the runner (the same executor as a cycle), counts
  each event's outcome and the replication lag. The rule's loop is the only thing that runs
  a rule, so a rule never runs twice at once: work arriving mid-run waits for the next turn.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

from regsync.config import Config, Rule
from regsync.errors import InvalidNameError
from regsync.eventparse import EventKind, RegistryEvent
from regsync.events import FanOut
from regsync.httpport import LOG_EVERY, Throttled  # one log throttle for the port and events
from regsync.metrics import EVENT_OUTCOMES, Metrics, iso_time
from regsync.oci.ref import Kind, shown
from regsync.result import RuleResult
from regsync.secrets import SECRETS
from regsync.session import tag_policy
from regsync.shard import Shard

log = logging.getLogger(__name__)

MAX_PENDING = 1000  # (repository, tag) entries waiting per rule; beyond: a full cycle
CLOCK_SKEW = 300.0  # an event time further off than this is not trusted for the lag
DELETE_SETTLE = 1.0  # seconds a delete's cycle waits for the rest of the delete's events


@dataclass
class Pending:
    """One (repository, tag) waiting to be copied: the latest event's digest and time."""

    digest: str
    timestamp: float
    registry: str
    events: int = 1  # events coalesced into this entry (each is counted when it resolves)


@dataclass
class RuleQueue:
    limit: int = MAX_PENDING
    items: dict[tuple[str, str], Pending] = field(default_factory=dict)
    cycle_wanted: bool = False
    cycle_events: Counter[str] = field(default_factory=Counter)  # registry -> waiting events
    cycle_after: float = 0.0  # monotonic time the wanted cycle may start

    def push(self, repo: str, tag: str, pending: Pending) -> bool:
        """Queue (or coalesce) an entry; False when the queue is full (a cycle is wanted)."""
        known = self.items.get((repo, tag))
        if known is not None:
            known.digest, known.timestamp, known.registry = (
                pending.digest,
                pending.timestamp,
                pending.registry,
            )
            known.events += pending.events
            return True
        if len(self.items) >= self.limit:
            self.want_cycle()
            return False
        self.items[(repo, tag)] = pending
        return True

    def want_cycle(self, registry: str | None = None, events: int = 1, *, after: float = 0) -> None:
        """Ask for a full cycle, ``after`` seconds from now at the latest (a delete waits a
        little: distribution sends a delete as two events, and one cycle covers both)."""
        when = time.monotonic() + after
        self.cycle_after = min(self.cycle_after, when) if self.cycle_wanted else when
        self.cycle_wanted = True
        if registry is not None:
            self.cycle_events[registry] += events

    def cycle_delay(self) -> float | None:
        """Seconds until the wanted cycle may start (<= 0: now); None: none is wanted."""
        return self.cycle_after - time.monotonic() if self.cycle_wanted else None

    def take(self) -> dict[tuple[str, str], Pending]:
        taken, self.items = self.items, {}
        return taken

    def take_cycle(self) -> Counter[str]:
        """A full cycle starts: what asked for it (events arriving from now wait for another)."""
        taken, self.cycle_events = self.cycle_events, Counter()
        self.cycle_wanted = False
        return taken


@dataclass(frozen=True)
class Routed:
    pushes: tuple[Rule, ...] = ()  # rules that copy the event's tag
    cycles: tuple[Rule, ...] = ()  # rules that run a full cycle (a delete)
    why: str = ""  # why nothing was done, when both are empty
    refused: bool = False  # nothing done because the event's names cannot be used


def needs_discovery(rule: Rule) -> bool:
    """Whether a repository's destination may collide with another's (a ``{name}`` template):
    only a full cycle, which sees every repository, can tell whether the mapping is one-to-one,
    so events copy only into repositories the last cycle mapped."""
    template = rule.destination.template
    return "{name}" in template and "{path}" not in template


def covers(rule: Rule, host: str, repo: str) -> bool:
    """Whether the rule's source is ``repo`` on ``host`` or a glob there matching it."""
    src = rule.source
    if src.kind is not Kind.REGISTRY or src.registry != host:
        return False
    return src.matches(repo) if src.is_glob else src.pattern == repo


def route(config: Config, shard: Shard, host: str, event: RegistryEvent) -> Routed:
    """The rules an event concerns (names already checked by the parser)."""
    rules = [r for r in config.rules if covers(r, host, event.repository)]
    if not rules:
        return Routed(why="no rule's source covers the repository")
    rules = [r for r in rules if r.destination.kind is not Kind.TARBALL]
    if not rules:
        return Routed(why="a tar: bundle is written by full cycles only")
    rules = [r for r in rules if shard.owns(r.name, event.repository)]
    if not rules:
        return Routed(why="another shard's repository")
    if event.kind is EventKind.DELETE:
        if event.tag:
            rules = [r for r in rules if tag_policy(r).in_scope(event.tag)]
        return Routed(cycles=tuple(rules), why="" if rules else "no rule's filters cover the tag")
    selected = tuple(r for r in rules if tag_policy(r).in_scope(event.tag))
    if not selected:
        return Routed(why="no rule's tag filters select the tag")
    mapped = tuple(r for r in selected if _maps(r, event.repository))
    if not mapped:
        return Routed(why="its destination name would be invalid", refused=True)
    return Routed(pushes=mapped)


def _maps(rule: Rule, repo: str) -> bool:
    """Whether the rule maps ``repo`` to a valid destination name (a template can make one
    too long): checked here, so such an event costs no run and no log line."""
    try:
        rule.destination.repo_for(repo)
    except InvalidNameError:
        return False
    return True


class Loops(Protocol):
    """What the dispatcher needs of the daemon."""

    config: Config
    shard: Shard

    def wake(self, rule: str) -> None: ...

    def accepting(self) -> bool: ...


@dataclass
class RegistryEvents:
    """What /status shows per registry that sends events."""

    host: str
    last_event_at: float | None = None
    counts: Counter[str] = field(default_factory=Counter)
    refusals: Throttled = field(init=False)  # their log line, at most once a minute

    def __post_init__(self) -> None:
        what = f"events from {self.host}: refused requests or events"
        self.refusals = Throttled(what, LOG_EVERY, logger=log)

    def to_json(self) -> dict[str, Any]:
        return {
            "last_event_at": iso_time(self.last_event_at),
            "counts": {o: self.counts[o] for o in EVENT_OUTCOMES},
        }


class EventDispatcher:
    """Routes accepted events into rule queues; counts outcomes once the loops ran them."""

    def __init__(self, loops: Loops, metrics: Metrics) -> None:
        self.loops, self.metrics = loops, metrics
        self.queues: dict[str, RuleQueue] = {}
        self.registries: dict[str, RegistryEvents] = {}

    def configured(self) -> None:
        """(Re)declare the registries that may send events (config loaded or reloaded)."""
        for host, settings in self.loops.config.registries.items():
            if settings.notifications is not None:
                SECRETS.add(settings.notifications.token.get_secret_value())  # never shown
                self.metrics.events_configured(host)
                self._stats(host)
        names = {rule.name for rule in self.loops.config.rules}
        for gone in [n for n in self.queues if n not in names]:
            del self.queues[gone]

    def token(self, host: str) -> str | None:
        """The bearer token a registry's events must carry; None: it sends none."""
        settings = self.loops.config.registries.get(host)
        if settings is None or settings.notifications is None:
            return None
        return settings.notifications.token.get_secret_value()

    def queue(self, rule: str) -> RuleQueue:
        return self.queues.setdefault(rule, RuleQueue())

    # -- intake (the HTTP handlers, on the event loop, no I/O) -------------------------------

    def accepting(self) -> bool:
        return self.loops.accepting()

    def refused(self, host: str, why: str) -> None:
        """A request refused (auth, size, type, body): counted, logged at most once a minute."""
        self.count(host, "refused")
        self._stats(host).refusals.hit(f"(last: {why})")

    def _stats(self, host: str) -> RegistryEvents:
        stats = self.registries.get(host)
        if stats is None:
            stats = self.registries[host] = RegistryEvents(host)
        return stats

    def accept(self, host: str, events: list[RegistryEvent]) -> None:
        stats = self._stats(host)
        stats.last_event_at = time.time()
        for event in events:
            self._one(host, event)

    def _one(self, host: str, event: RegistryEvent) -> None:
        if event.kind is EventKind.REFUSED:
            self.refused(host, event.why)
            return
        if event.kind is EventKind.IGNORED:
            self.count(host, "ignored")
            return
        routed = route(self.loops.config, self.loops.shard, host, event)
        if routed.refused:
            self.refused(host, f"{shown(event.repository)}: {routed.why}")
        elif not (routed.pushes or routed.cycles):
            log.debug("event for %s:%s ignored: %s", event.repository, event.tag, routed.why)
            self.count(host, "ignored")
        for rule in routed.cycles:
            self.queue(rule.name).want_cycle(host, after=DELETE_SETTLE)
            self.loops.wake(rule.name)
        when = _trusted_time(event.timestamp)
        for rule in routed.pushes:
            pending = Pending(event.digest, when, host)
            if not self.queue(rule.name).push(event.repository, event.tag, pending):
                self.count(host, "overflow")
            self.loops.wake(rule.name)

    def run_requested(self, rule: str) -> None:
        """``POST /v1/rules/RULE/run``: a full cycle of the rule at its loop's next turn."""
        self.queue(rule).want_cycle()
        self.loops.wake(rule)

    # -- the rule's loop ---------------------------------------------------------------------

    def take(self, rule: Rule, last: RuleResult | None) -> dict[tuple[str, str], Pending]:
        """The rule's queued entries, to run now. For a rule that needs discovery, entries of
        repositories its last cycle did not map ask for a full cycle instead."""
        queue = self.queue(rule.name)
        taken = queue.take()
        if needs_discovery(rule):
            known = {p.source_repo for p in last.plans} if last is not None else set()
            for key in [k for k in taken if k[0] not in known]:
                pending = taken.pop(key)
                queue.want_cycle(pending.registry, pending.events)
        return taken

    # -- outcomes (the rule's loop, after the runner) -----------------------------------------

    def settle(
        self, rule: str, taken: dict[tuple[str, str], Pending], result: RuleResult | None
    ) -> None:
        """Count what an event-triggered run did for each entry; observe the lag of each tag
        now in place."""
        placed = set(result.placed) if result is not None else set()
        plans = result.plans if result is not None else []
        planned = {(p.source_repo, a.tag) for p in plans for a in p.actions}
        surveyed = {p.source_repo for p in plans}
        now = time.time()
        for key, pending in taken.items():
            if key in placed:
                self.count(pending.registry, "copied", pending.events)
                self.metrics.lag_observed(rule, max(0.0, now - pending.timestamp))
            elif key in planned or result is None or key[0] not in surveyed:
                self.count(pending.registry, "failed", pending.events)
            else:  # no action: tags.latest dropped it, or the source no longer has it
                self.count(pending.registry, "ignored", pending.events)

    def settle_cycle(self, waiting: Counter[str], result: RuleResult) -> None:
        """Events that asked for this full cycle (deletes) resolve with it."""
        outcome = "copied" if result.result == "success" else "failed"
        for host, count in waiting.items():
            self.count(host, outcome, count)

    def count(self, host: str, outcome: str, n: int = 1) -> None:
        self.metrics.event_counted(host, outcome, n)
        self._stats(host).counts[outcome] += n

    def merged(self, registries: list[dict[str, object]]) -> list[dict[str, object]]:
        """/status's registries (health, rate limits) with the event counts of those that
        send events."""
        listed = {str(r["name"]): dict(r) for r in registries}
        for host, stats in self.registries.items():
            listed.setdefault(host, {"name": host})["events"] = stats.to_json()
        return [listed[name] for name in sorted(listed)]

    def rule_status(self, rule: str) -> dict[str, Any]:
        queue = self.queues.get(rule)
        return {
            "pending": len(queue.items) if queue else 0,
            "cycle_requested": bool(queue and queue.cycle_wanted),
        }


class EventRunEvents(FanOut):
    """The hooks of an event-triggered run: tags, blobs and bytes count as in any run, but it
    is no cycle, so run results (runs, duration, last success, out of sync) are left alone."""

    def rule_started(self, rule: str) -> None:
        pass

    def rule_finished(self, result: RuleResult) -> None:
        pass


def targets_of(taken: dict[tuple[str, str], Pending]) -> dict[str, dict[str, str]]:
    """The runner's ``targets``: repository -> tag -> the event's digest (a hint)."""
    targets: dict[str, dict[str, str]] = {}
    for (repo, tag), pending in taken.items():
        targets.setdefault(repo, {})[tag] = pending.digest
    return targets


def _trusted_time(timestamp: float | None) -> float:
    """The event's own time when plausible (lag starts at the push), else its arrival."""
    now = time.time()
    if timestamp is None or abs(now - timestamp) > CLOCK_SKEW:
        return now
    return min(timestamp, now)
