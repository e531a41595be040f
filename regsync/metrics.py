"""Prometheus metrics: the names and labels the README lists, one registry per process.

``Metrics`` implements both seams the run reports through -- ``RunEvents`` (rules, tags, blobs,
bytes, as work happens) and ``RequestObserver`` (every HTTP exchange) -- so counters move while
a sync runs, not only at its end. Each instance owns its own ``CollectorRegistry``: nothing is
registered globally, so tests and several runs in one process never collide.

Labels stay low-cardinality: rule, registry, method, status, outcome, result. Never a tag or a
digest. Beyond the core contract: ``regsync_rule_interval_seconds`` (for staleness alerts),
``regsync_last_run_result`` (alerts that work for one-shot textfile runs too, where counters
restart every run), ``regsync_ratelimit_limit``,
``regsync_registry_paused_until_timestamp_seconds`` and ``regsync_sync_running``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    push_to_gateway,
    write_to_textfile,
)

from regsync.events import NoEvents
from regsync.shard import Shard

if TYPE_CHECKING:
    from regsync.result import RuleResult

RUN_RESULTS = ("success", "partial", "failed")
TAG_OUTCOMES = ("copied", "up_to_date", "pruned", "failed")
BLOB_OUTCOMES = ("copied", "mounted", "present")
SYNC_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, float("inf"))
EVENT_OUTCOMES = ("copied", "ignored", "refused", "failed", "overflow")
LAG_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, float("inf"))
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, float("inf"))


@dataclass(frozen=True)
class Family:
    """One metric family: adding a metric is a row here plus its call site."""

    name: str  # counters without the _total suffix (prometheus_client appends it)
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()  # histograms only


SYNC_RUNS = Family("regsync_sync_runs", "Rule runs by result.", ("rule", "result"))
LAST_SUCCESS = Family(
    "regsync_last_success_timestamp_seconds",
    "Unix time the rule's last fully successful run ended.",
    ("rule",),
)
SYNC_DURATION = Family(
    "regsync_sync_duration_seconds", "Duration of rule runs.", ("rule",), SYNC_BUCKETS
)
TAGS = Family("regsync_tags", "Tags by outcome.", ("rule", "outcome"))
OUT_OF_SYNC = Family(
    "regsync_out_of_sync_tags",
    "Tags the last run's plan found to change that are still not in sync after it.",
    ("rule",),
)
BLOBS = Family("regsync_blobs", "Blobs by outcome.", ("rule", "outcome"))
BACKUPS = Family(
    "regsync_backups", "Backup tags made before a changed tag was overwritten.", ("rule",)
)
BYTES_COPIED = Family("regsync_bytes_copied", "Blob bytes sent to destinations.", ("rule",))
REQUESTS = Family(
    "regsync_registry_requests",
    "HTTP requests by registry, method and status (status 'error': no answer).",
    ("registry", "method", "status"),
)
REQUEST_DURATION = Family(
    "regsync_registry_request_duration_seconds",
    "Time to a registry's response headers.",
    ("registry", "method"),
    REQUEST_BUCKETS,
)
RETRIES = Family(
    "regsync_registry_retries",
    "Requests retried (and blob transfers restarted or resumed), by registry and reason"
    " (an HTTP status, 'connection', or 'integrity').",
    ("registry", "reason"),
)
RATELIMIT_REMAINING = Family(
    "regsync_ratelimit_remaining",
    "Pulls left in the registry's rate-limit window (RateLimit-Remaining).",
    ("registry",),
)
RATELIMIT_LIMIT = Family(
    "regsync_ratelimit_limit",
    "The registry's pull limit per window (RateLimit-Limit).",
    ("registry",),
)
REGISTRY_UP = Family(
    "regsync_registry_up",
    "1 if the last request to the registry got an HTTP answer, 0 if it failed to connect.",
    ("registry",),
)
PAUSED_UNTIL = Family(
    "regsync_registry_paused_until_timestamp_seconds",
    "Unix time a rate-limit pause of requests to the registry ends (0: not paused).",
    ("registry",),
)
ORPHANED = Family(
    "regsync_orphaned_repositories",
    "Destination repositories in the rule's scope that the source no longer has.",
    ("rule",),
)
RULE_INTERVAL = Family(
    "regsync_rule_interval_seconds",
    "The rule's interval (for a cron schedule: the time between two runs).",
    ("rule",),
)
LAST_RESULT = Family(
    "regsync_last_run_result",
    "1 for the result of the rule's last run, 0 for the other results.",
    ("rule", "result"),
)
EVENTS = Family(
    "regsync_events",
    "Registry events (notifications, webhooks) by registry and outcome: copied (the tag is in"
    " place), ignored, refused, failed, overflow (a full cycle instead).",
    ("registry", "outcome"),
)
REPLICATION_LAG = Family(
    "regsync_replication_lag_seconds",
    "From a push event's timestamp to the destination tag in place.",
    ("rule",),
    LAG_BUCKETS,
)
RUNNING = Family("regsync_sync_running", "1 while a run of the rule is in progress.", ("rule",))
# Which share of the catalogue this agent handles (--shard INDEX/COUNT; 0/1 = all).
SHARD_INFO = Family(
    "regsync_shard_info",
    "Always 1; the labels say which shard of how many this agent is.",
    ("index", "count"),
)


@dataclass
class RegistryState:
    """What /status shows about one registry (mirrors the gauges; no credentials)."""

    up: bool | None = None
    ratelimit_remaining: int | None = None
    ratelimit_limit: int | None = None
    paused_until: float | None = None  # unix time a rate-limit pause ends
    last_error: str | None = None

    def to_json(self, name: str) -> dict[str, object]:
        return {
            "name": name,
            "up": self.up,
            "ratelimit_remaining": self.ratelimit_remaining,
            "ratelimit_limit": self.ratelimit_limit,
            # A pause whose run ended before it did is over by now.
            "paused_until": iso_time(self.paused_until)
            if self.paused_until and self.paused_until > time.time()
            else None,
        }


class Metrics(NoEvents):
    """Every regsync metric, in a registry of its own. Implements RunEvents and RequestObserver.

    ``record_success=False`` (dry runs) keeps ``regsync_last_success_timestamp_seconds`` unset:
    a plan is not a sync.
    """

    def __init__(
        self, *, process: bool = False, record_success: bool = True, shard: Shard | None = None
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.record_success = record_success
        self.registries: dict[str, RegistryState] = {}
        if process:  # only a long-lived process: process_start_time_seconds etc.
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
        self.runs = self._counter(SYNC_RUNS)
        self.last_success = self._gauge(LAST_SUCCESS)
        self.duration = self._histogram(SYNC_DURATION)
        self.tags = self._counter(TAGS)
        self.out_of_sync = self._gauge(OUT_OF_SYNC)
        self.blobs = self._counter(BLOBS)
        self.backups = self._counter(BACKUPS)
        self.bytes = self._counter(BYTES_COPIED)
        self.requests = self._counter(REQUESTS)
        self.request_duration = self._histogram(REQUEST_DURATION)
        self.retries = self._counter(RETRIES)
        self.ratelimit_remaining = self._gauge(RATELIMIT_REMAINING)
        self.ratelimit_limit = self._gauge(RATELIMIT_LIMIT)
        self.registry_up = self._gauge(REGISTRY_UP)
        self.paused_until = self._gauge(PAUSED_UNTIL)
        self.interval = self._gauge(RULE_INTERVAL)
        self.orphaned = self._gauge(ORPHANED)
        self.last_result = self._gauge(LAST_RESULT)
        self.running = self._gauge(RUNNING)
        self.events = self._counter(EVENTS)
        self.lag = self._histogram(REPLICATION_LAG)
        self.shard = self._gauge(SHARD_INFO)
        shard = shard or Shard()
        self.shard.labels(str(shard.index), str(shard.count)).set(1)

    def _counter(self, family: Family) -> Counter:
        return Counter(family.name, family.help, family.labels, registry=self.registry)

    def _gauge(self, family: Family) -> Gauge:
        return Gauge(family.name, family.help, family.labels, registry=self.registry)

    def _histogram(self, family: Family) -> Histogram:
        return Histogram(
            family.name, family.help, family.labels, buckets=family.buckets, registry=self.registry
        )

    # -- set-up ----------------------------------------------------------------------------

    def rule_configured(self, rule: str, interval_seconds: float) -> None:
        """Declare a rule: its interval, and every outcome series at 0 so rate() works."""
        self.interval.labels(rule).set(interval_seconds)
        for result in RUN_RESULTS:
            self.runs.labels(rule, result)
        for outcome in TAG_OUTCOMES:
            self.tags.labels(rule, outcome)
        for outcome in BLOB_OUTCOMES:
            self.blobs.labels(rule, outcome)
        self.bytes.labels(rule)
        self.backups.labels(rule)
        self.running.labels(rule)  # 0 when new; a reload must not reset a run in progress

    def rule_removed(self, rule: str) -> None:
        """Forget a rule a reload dropped, so no alert fires on a series nobody updates."""
        for metric in (
            self.interval,
            self.last_success,
            self.out_of_sync,
            self.running,
            self.orphaned,
        ):
            _remove(metric, (rule,))
        _remove(self.duration, (rule,))
        _remove(self.lag, (rule,))
        _remove(self.bytes, (rule,))
        _remove(self.backups, (rule,))
        for result in RUN_RESULTS:
            _remove(self.runs, (rule, result))
            _remove(self.last_result, (rule, result))
        for outcome in TAG_OUTCOMES:
            _remove(self.tags, (rule, outcome))
        for outcome in BLOB_OUTCOMES:
            _remove(self.blobs, (rule, outcome))

    def events_configured(self, registry: str) -> None:
        """Declare a registry that may send events: every outcome series at 0."""
        for outcome in EVENT_OUTCOMES:
            self.events.labels(registry, outcome)

    def event_counted(self, registry: str, outcome: str, count: int = 1) -> None:
        self.events.labels(registry, outcome).inc(count)

    def lag_observed(self, rule: str, seconds: float) -> None:
        self.lag.labels(rule).observe(seconds)

    # -- RunEvents -------------------------------------------------------------------------

    def rule_started(self, rule: str) -> None:
        self.running.labels(rule).set(1)

    def rule_finished(self, result: RuleResult) -> None:
        rule = result.name
        self.running.labels(rule).set(0)
        self.runs.labels(rule, result.result).inc()
        for name in RUN_RESULTS:
            self.last_result.labels(rule, name).set(1 if name == result.result else 0)
        self.duration.labels(rule).observe(result.duration_seconds)
        self.backups.labels(rule).inc(result.backups)
        if result.result == "success" and self.record_success:
            self.last_success.labels(rule).set(time.time())
        if result.orphans is not None:  # unknown (no destination catalog): no series
            self.orphaned.labels(rule).set(len(result.orphans.names))  # at least
        if result.plans or not result.rule_failed:
            # A rule that could not list knows nothing new: keep the last known figure.
            self.out_of_sync.labels(rule).set(out_of_sync(result))

    def repos_found(self, rule: str, count: int) -> None:
        pass

    def tag_done(self, rule: str, outcome: str) -> None:
        self.tags.labels(rule, outcome).inc()

    def blob_done(self, rule: str, outcome: str) -> None:
        self.blobs.labels(rule, outcome).inc()

    def bytes_copied(self, rule: str, count: int) -> None:
        self.bytes.labels(rule).inc(count)

    # -- RequestObserver -------------------------------------------------------------------

    def request_done(self, registry: str, method: str, status: str, seconds: float) -> None:
        self.requests.labels(registry, method, status).inc()
        self.request_duration.labels(registry, method).observe(seconds)
        up = status != "error"
        self.registry_up.labels(registry).set(1 if up else 0)
        self._state(registry).up = up

    def ratelimit_seen(self, registry: str, remaining: int, limit: int | None) -> None:
        self.ratelimit_remaining.labels(registry).set(remaining)
        state = self._state(registry)
        state.ratelimit_remaining = remaining
        if limit is not None:
            self.ratelimit_limit.labels(registry).set(limit)
            state.ratelimit_limit = limit

    def request_retried(self, registry: str, reason: str) -> None:
        self.retries.labels(registry, reason).inc()

    def registry_paused(self, registry: str, until: float | None) -> None:
        """A rate-limit pause of `registry` until unix time `until` (None: pause over)."""
        state = self._state(registry)
        self.paused_until.labels(registry).set(until or 0)
        state.paused_until = until

    def _state(self, registry: str) -> RegistryState:
        state = self.registries.get(registry)
        if state is None:
            state = self.registries[registry] = RegistryState()
            self.paused_until.labels(registry).set(0)  # 0: not paused (never absent)
        return state

    # -- output ----------------------------------------------------------------------------

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)

    def write_textfile(self, path: str) -> None:
        """Write the node-exporter textfile atomically (temp file + rename beside `path`)."""
        write_to_textfile(path, self.registry)

    def push(self, gateway: str, job: str = "regsync", timeout: float = 10) -> None:
        """Replace this job's metrics on a Pushgateway."""
        push_to_gateway(gateway, job=job, registry=self.registry, timeout=timeout)

    def registry_status(self) -> list[dict[str, object]]:
        return [state.to_json(name) for name, state in sorted(self.registries.items())]


def out_of_sync(result: RuleResult) -> int:
    """Tags the plan wanted to change (copy, prune) that the run did not bring in sync."""
    return max(0, result.drift - result.copied - result.pruned)


def _remove(metric: Counter | Gauge | Histogram, labels: Iterable[str]) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)


def iso_time(ts: float | None) -> str | None:
    """Unix time as ISO 8601 UTC (what /status shows), None stays None."""
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
