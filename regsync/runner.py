"""Runs rules: discover repositories, list and diff tags, execute the plan.

Concurrency is structured (TaskGroups) and bounded: repositories per rule, image copies across
the run, blob streams per destination, and requests per registry (in the transport).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp

from regsync import prune
from regsync.apply import copy_action
from regsync.backend import Backend
from regsync.blobindex import BlobIndex
from regsync.clients import ClientPool
from regsync.config import Config, Rule
from regsync.copy import BlobLedger, CopyEngine
from regsync.errors import RegsyncError
from regsync.events import NoEvents, RunEvents, optional_hook
from regsync.layout import LayoutPool
from regsync.logs import copy_context, log_context, log_scope
from regsync.oci.manifest import Descriptor
from regsync.oci.ref import SourceSpec
from regsync.plan import Action, RepoPlan, TagAction
from regsync.platforms import PlatformFilter
from regsync.registry.hub import HubCatalog
from regsync.registry.observer import NullObserver, RequestObserver
from regsync.registry.retry import RetryPolicy, Timeouts
from regsync.shard import Shard
from regsync.summary import RuleResult, RunResult
from regsync.survey import SyncPolicy, survey
from regsync.tagpolicy import TagPolicy

log = logging.getLogger(__name__)
T = TypeVar("T")

REPO_CONCURRENCY = 8  # repositories listed and planned at once, per rule
IMAGE_CONCURRENCY = 16  # image copies in flight across the run


@dataclass
class RunContext:
    """What the rules of one run share: clients, per-destination ledgers and limits."""

    config: Config
    pool: ClientPool
    events: RunEvents
    dry_run: bool = False
    plan_only: bool = False
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    observer: RequestObserver = field(default_factory=NullObserver)
    stop: asyncio.Event = field(default_factory=asyncio.Event)  # set: start no more copies
    images: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(IMAGE_CONCURRENCY))
    ledgers: dict[str, BlobLedger] = field(default_factory=dict)
    transfers: dict[str, asyncio.Semaphore] = field(default_factory=dict)
    layouts: LayoutPool = field(default_factory=LayoutPool)
    guards: dict[str, prune.DeleteGuard] = field(default_factory=dict)  # per rule
    shard: Shard = field(default_factory=Shard)
    index: BlobIndex | None = None  # holders seen by earlier runs (registry destinations)

    def backend(self, registry: str, layout: str = "") -> Backend:
        """A registry client, or for an `oci:` side (registry "") the layout directory."""
        return self.layouts.get(layout) if layout else self.pool.get(registry)

    def owned(self, rule: Rule, repos: list[str]) -> list[str]:
        """The repositories this agent's shard handles (all of them unless sharded)."""
        if self.shard.is_whole:
            return repos
        mine = [r for r in repos if self.shard.owns(rule.name, r)]
        log.info(
            "rule %s: shard %s takes %d of %d repositories",
            rule.name,
            self.shard,
            len(mine),
            len(repos),
        )
        return mine

    def source(self, registry: str, layout: str = "") -> Backend:
        """What a rule reads from: as `backend`, but a registry comes with its `mirrors:`."""
        return self.layouts.get(layout) if layout else self.pool.source(registry)

    def engine(self, rule: Rule, result: RuleResult) -> CopyEngine:
        dest = rule.destination.registry
        key = str(rule.destination) if rule.destination.layout else dest
        limit = self.config.registry(dest).max_concurrency
        return CopyEngine(
            source=self.source(rule.source.registry, rule.source.layout),
            destination=self.backend(dest, rule.destination.layout),
            ledger=self.ledgers.setdefault(key, self._ledger(rule)),
            transfers=self.transfers.setdefault(key, asyncio.Semaphore(limit)),
            stats=result.stats,
            on_bytes=lambda n: self.events.bytes_copied(rule.name, n),
            on_blob=lambda outcome: self.events.blob_done(rule.name, outcome),
            retry=self.retry,
            observer=self.observer,
            on_transfer=self._transfer_hook(rule.name),
        )

    def _ledger(self, rule: Rule) -> BlobLedger:
        # A layout shares one blob store across its repositories: nothing to remember.
        index = None if rule.destination.layout else self.index
        return BlobLedger(index=index, registry=rule.destination.registry)

    def _transfer_hook(self, rule: str) -> Callable[[str, Descriptor, bool], None]:
        started = optional_hook(self.events, "transfer_started")
        finished = optional_hook(self.events, "transfer_finished")

        def hook(repo: str, desc: Descriptor, begins: bool) -> None:
            if begins:
                started(rule, repo, desc.digest, desc.size)
            else:
                finished(rule, repo, desc.digest)

        return hook


async def run(
    config: Config,
    rules: Sequence[Rule],
    *,
    dry_run: bool = False,
    plan_only: bool = False,
    events: RunEvents | None = None,
    observer: RequestObserver | None = None,
    retry: RetryPolicy | None = None,
    timeouts: Timeouts | None = None,
    shard: Shard | None = None,
    stop: asyncio.Event | None = None,
    index: BlobIndex | None = None,
) -> RunResult:
    """Run the given rules once, concurrently, over one HTTP session.

    Retry policy and timeouts default to the REGSYNC_RETRY_* / REGSYNC_*_TIMEOUT environment.
    Setting `stop` (a graceful shutdown) lets copies already started finish and starts no new
    ones; the tags left out are reported as errors of their rule. `index` (the persistent
    content index) supplies mount sources from earlier runs and learns from this one.
    """
    retry = retry or RetryPolicy.from_env(os.environ)
    timeouts = timeouts or Timeouts.from_env(os.environ)
    connector = aiohttp.TCPConnector(limit=128, limit_per_host=32, ttl_dns_cache=300)
    # trust_env stays off: each Transport reads the proxy settings once per host instead.
    async with aiohttp.ClientSession(connector=connector) as session:
        ctx = RunContext(
            config=config,
            pool=ClientPool(session, config, observer=observer, retry=retry, timeouts=timeouts),
            events=events or NoEvents(),
            dry_run=dry_run,
            plan_only=plan_only,
            retry=retry,
            observer=observer or NullObserver(),
            shard=shard or Shard(),
            stop=stop or asyncio.Event(),
            index=None if dry_run or plan_only else index,
        )
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(run_rule(ctx, rule), context=log_context(rule=rule.name))
                for rule in rules
            ]
    if ctx.index is not None:  # what is left after a crash is written by the owner's close()
        await ctx.index.flush_async()
    return RunResult([t.result() for t in tasks], dry_run=dry_run or plan_only)


async def run_rule(ctx: RunContext, rule: Rule) -> RuleResult:
    result = RuleResult(rule.name, str(rule.source), str(rule.destination))
    ctx.events.rule_started(rule.name)
    started = time.monotonic()
    try:
        source = ctx.source(rule.source.registry, rule.source.layout)
        hub = None if rule.source.layout else ctx.pool.hub(rule.source.registry)
        repos = ctx.owned(rule, await discover(source, rule.source, hub))
        result.repos = len(repos)
        ctx.events.repos_found(rule.name, len(repos))
        limit = asyncio.Semaphore(REPO_CONCURRENCY)
        engine = ctx.engine(rule, result)
        async with asyncio.TaskGroup() as group:
            for repo in repos:
                group.create_task(_bounded(limit, sync_repo(ctx, rule, engine, repo, result)))
    except RegsyncError as exc:
        result.rule_failed = True
        result.errors.append(str(exc))
        log.error("rule %s: %s", rule.name, exc)
    if result.interrupted:
        result.errors.append(f"shutting down: {result.interrupted} tags left for the next run")
    result.duration_seconds = time.monotonic() - started
    ctx.events.rule_finished(result)
    return result


async def discover(source: Backend, spec: SourceSpec, hub: HubCatalog | None = None) -> list[str]:
    """The source repositories a rule covers: one, or the catalog entries its glob matches.

    Docker Hub has no catalog: a glob there lists its namespace through the Hub API.
    """
    if not spec.is_glob:
        return [spec.pattern]
    prefix = spec.prefix + "/" if spec.prefix else ""
    listed = await (hub.repositories(spec.prefix.split("/")[0]) if hub else source.repositories())
    repos = sorted(r for r in listed if r.startswith(prefix))
    return [r for r in repos if spec.matches(r)]


async def sync_repo(
    ctx: RunContext, rule: Rule, engine: CopyEngine, repo: str, result: RuleResult
) -> None:
    dest_repo = rule.destination.repo_for(repo)
    policy = policy_for(rule)
    try:
        plan = await survey(engine.source, engine.destination, repo, dest_repo, policy)
    except Exception as exc:  # one bad repository never stops the others
        result.errors.append(f"{repo}: {_describe(exc)}")
        log.error("rule %s: %s: %s", rule.name, repo, _describe(exc), exc_info=_unexpected(exc))
        return
    result.plans.append(plan)
    result.errors.extend(f"{dest_repo}: {why}" for why in plan.refusals)
    optional_hook(ctx.events, "repo_planned")(rule.name, plan)
    result.up_to_date += len(plan.of(Action.SKIP))
    for _ in plan.of(Action.SKIP):
        ctx.events.tag_done(rule.name, "up_to_date")
    if ctx.dry_run or ctx.plan_only:
        return
    if plan.dest_empty and not rule.destination.layout:
        engine.fresh.add(dest_repo)  # a layout shares blobs across repos: keep its HEADs
    failed = result.failed
    async with asyncio.TaskGroup() as group:
        for action in plan.of(Action.COPY):
            group.create_task(
                _bounded(ctx.images, copy_one(ctx, rule, engine, plan, action, result))
            )
    # Never shrink after a failed copy; start no deletes once shutting down.
    if plan.of(Action.PRUNE) and result.failed == failed and not ctx.stop.is_set():
        guard = ctx.guards.setdefault(rule.name, prune.DeleteGuard(engine.destination.name))
        outcome = await prune.execute(engine.destination, plan, guard)
        result.record_prune(outcome)
        for _ in outcome.pruned:
            ctx.events.tag_done(rule.name, "pruned")


def policy_for(rule: Rule) -> SyncPolicy:
    t, p = rule.tags, rule.prune
    platforms = None if rule.platforms == "all" else PlatformFilter.parse(rule.platforms)
    return SyncPolicy(
        tags=TagPolicy(t.include, t.exclude, t.semver, t.latest),
        platforms=platforms,
        referrers=rule.referrers,
        prune=prune.PrunePolicy(p.allow_empty, p.max_fraction) if p.enabled else None,
    )


async def copy_one(
    ctx: RunContext,
    rule: Rule,
    engine: CopyEngine,
    plan: RepoPlan,
    action: TagAction,
    result: RuleResult,
) -> None:
    where = f"{plan.source_repo}:{action.tag} -> {plan.dest_repo}:{action.tag}"
    context = copy_context(
        rule.name,
        _ref(rule.source.registry, plan.source_repo, action.tag),
        _ref(rule.destination.registry, plan.dest_repo, action.tag),
    )
    if ctx.stop.is_set():
        result.interrupted += 1
        log.info("rule %s: not copying %s: shutting down", rule.name, where, extra=context)
        return
    try:
        with log_scope(**context):
            digest = await copy_action(engine, policy_for(rule).platforms, plan, action)
    except Exception as exc:  # one bad tag never stops the others
        result.failed += 1
        result.errors.append(f"{plan.source_repo}:{action.tag}: {_describe(exc)}")
        ctx.events.tag_done(rule.name, "failed")
        log.error(
            "rule %s: copy %s failed: %s",
            rule.name,
            where,
            _describe(exc),
            extra=context,
            exc_info=_unexpected(exc),
        )
        return
    result.copied += 1
    ctx.events.tag_done(rule.name, "copied")
    log.info(
        "rule %s: copied %s (%s)",
        rule.name,
        where,
        digest,
        extra={**context, "digest": digest},
    )


async def _bounded(limit: asyncio.Semaphore, work: Coroutine[Any, Any, T]) -> T:
    """Run `work` holding `limit` (the coroutine is created eagerly but starts only here)."""
    async with limit:
        return await work


def _ref(registry: str, repo: str, tag: str) -> str:
    return f"{registry}/{repo}:{tag}" if registry else f"{repo}:{tag}"


def _unexpected(exc: Exception) -> bool:
    """A bug rather than a registry or content problem: worth a traceback in the log."""
    return not isinstance(exc, RegsyncError)


def _describe(exc: Exception) -> str:
    return str(exc) if isinstance(exc, RegsyncError) else f"internal error: {exc!r}"
