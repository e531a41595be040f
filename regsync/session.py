"""One run setup, shared by `once`, `check`, `serve` and `verify`.

A run opens one aiohttp session and, through it, one `BackendPool` that opens every backend it
needs (registry clients, a source registry together with its `mirrors:`, OCI layout
directories) and each source's repository lister (catalog, Hub API, layout index). Per rule
it computes once what every repository of the rule shares: the backends, the lister and the
policy. Discovery and the one-to-one source -> destination mapping happen here too, so every
command sees the same repositories.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from regsync import pruneplan
from regsync.backends import Backend
from regsync.backends.pool import BackendPool, RepositoryLister
from regsync.backends.registry.observer import RequestObserver
from regsync.backends.registry.retry import RetryPolicy, Timeouts
from regsync.config import Config, Rule
from regsync.discovery import Discovered, discover, empty_source, map_repositories
from regsync.errors import RegsyncError
from regsync.mediafilter import MediaTypeFilter
from regsync.oci.ref import DestinationSpec, Listed, SourceSpec
from regsync.platforms import PlatformFilter
from regsync.survey import SyncPolicy
from regsync.tagpolicy import TagPolicy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RuleSetup:
    """What every repository of one rule shares, computed once per rule and run."""

    rule: Rule
    policy: SyncPolicy
    source: Backend  # with the registry's mirrors:, if any
    destination: Backend
    lister: RepositoryLister  # the source's catalog, Hub API or layout index


class RunSetup:
    """The backends of one run, opened lazily and cached; see `open_run`."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        config: Config,
        *,
        retry: RetryPolicy,
        timeouts: Timeouts,
        observer: RequestObserver | None = None,
        state_dir: Path | None = None,
    ) -> None:
        self.config, self.retry = config, retry
        self.pool = BackendPool(
            session, config, observer=observer, retry=retry, timeouts=timeouts, state_dir=state_dir
        )
        self._rules: dict[str, RuleSetup] = {}
        self._catalogs: dict[str, asyncio.Task[Listed | None]] = {}

    def source(self, spec: SourceSpec) -> Backend:
        """What a rule reads from: a layout, or a registry followed by its `mirrors:`."""
        return self.pool.reader(spec)

    def destination(self, spec: DestinationSpec) -> Backend:
        return self.pool.writer(spec)

    def rule(self, rule: Rule) -> RuleSetup:
        setup = self._rules.get(rule.name)
        if setup is None or setup.rule != rule:
            setup = self._rules[rule.name] = RuleSetup(
                rule,
                policy_for(rule),
                self.source(rule.source),
                self.pool.writer(rule.destination, rule.name if rule.delta else None),
                self.pool.lister(rule.source),
            )
        return setup

    async def destination_catalog(self, setup: RuleSetup) -> Listed | None:
        """The destination's repositories, listed once per run and destination (shared by
        the rules); None when it keeps its catalog closed or cannot list it now."""
        name = setup.destination.name
        if name not in self._catalogs:
            self._catalogs[name] = asyncio.ensure_future(_listing(setup.destination))
        return await asyncio.shield(self._catalogs[name])

    async def repositories(self, setup: RuleSetup) -> Discovered:
        """The rule's repositories with their destinations; MappingError unless one-to-one,
        EmptySourceError when a glob matches nothing (unless the rule allows it)."""
        rule = setup.rule
        found = await discover(setup.lister, rule.source)
        if rule.source.is_glob and not found.names and not found.rejected:
            what = f"source {rule.source} matches no repository"
            empty_source(what, rule=rule.name, allowed=rule.allow_empty)
        return map_repositories(rule.destination, found)


@asynccontextmanager
async def open_run(
    config: Config,
    *,
    observer: RequestObserver | None = None,
    retry: RetryPolicy | None = None,
    timeouts: Timeouts | None = None,
    state_dir: Path | None = None,
) -> AsyncIterator[RunSetup]:
    """A run's setup over one HTTP session, closed on exit.

    Retry policy and timeouts default to the REGSYNC_RETRY_* / REGSYNC_*_TIMEOUT environment.
    On a normal exit the tar bundles written are packed (``BackendPool.finish``; the runner
    calls it itself first, to charge a failure to its rules); on any exit their working
    directories go. ``state_dir`` holds delta bundles' series.
    """
    connector = aiohttp.TCPConnector(limit=128, limit_per_host=32, ttl_dns_cache=300)
    # trust_env stays off: each Transport reads the proxy settings once per host instead.
    async with aiohttp.ClientSession(connector=connector) as session:
        setup = RunSetup(
            session,
            config,
            retry=retry or RetryPolicy.from_env(os.environ),
            timeouts=timeouts or Timeouts.from_env(os.environ),
            observer=observer,
            state_dir=state_dir,
        )
        try:
            yield setup
            for name, error in (await setup.pool.finish()).items():
                log.error("%s: %s", name, error)
        finally:
            setup.pool.discard()


async def _listing(backend: Backend) -> Listed | None:
    try:
        return await backend.repositories()
    except RegsyncError as exc:
        log.debug("%s: no catalog to find orphaned repositories in: %s", backend.name, exc)
        return None


def tag_policy(rule: Rule) -> TagPolicy:
    """The rule's tag filters alone (what an event's routing reads, without the rest)."""
    t = rule.tags
    return TagPolicy(t.include, t.exclude, t.semver, t.latest)


def policy_for(rule: Rule) -> SyncPolicy:
    """The rule's settings as the planner reads them (built once per rule, see RunSetup.rule)."""
    t, p = rule.tags, rule.prune
    platforms = None if rule.platforms == "all" else PlatformFilter.parse(rule.platforms)
    return SyncPolicy(
        tags=tag_policy(rule),
        platforms=platforms,
        referrers=rule.referrers,
        prune=pruneplan.PrunePolicy(p.allow_empty, p.max_fraction) if p.enabled else None,
        immutable=t.immutable,
        backup=rule.backup,
        media_types=None if rule.media_types is None else MediaTypeFilter(rule.media_types),
        referrer_filter=rule.referrer_filter,
    )
