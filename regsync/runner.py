"""Runs rules: discover repositories, list and diff tags, execute the plan.

Concurrency is structured (TaskGroups) and bounded: repositories per rule, image copies across
the run, blob streams per destination, and requests per registry (in the transport). This is
the run loop and each rule's steps; one repository's work is ``reposync``'s, what the rules of
a run share ``runcontext``'s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from regsync import orphans
from regsync.backends import Backend
from regsync.backends.registry.observer import NullObserver, RequestObserver
from regsync.backends.registry.retry import RetryPolicy, Timeouts
from regsync.blobindex import BlobIndex
from regsync.config import Config, Rule
from regsync.discovery import Discovered, map_repositories
from regsync.errors import RegsyncError
from regsync.events import NoEvents, RunEvents
from regsync.execute import DeleteGuard
from regsync.logs import log_context
from regsync.oci.ref import Listed
from regsync.reposync import note_skipped, refusals_counted, sync_repo
from regsync.result import RuleResult, RunResult
from regsync.runcontext import RunContext
from regsync.session import RunSetup, open_run
from regsync.shard import Shard

log = logging.getLogger(__name__)
T = TypeVar("T")

REPO_CONCURRENCY = 8  # repositories listed and planned at once, per rule


async def run(
    config: Config,
    rules: Sequence[Rule],
    *,
    dry_run: bool = False,
    plan_only: bool = False,
    missing_only: bool = False,
    events: RunEvents | None = None,
    observer: RequestObserver | None = None,
    retry: RetryPolicy | None = None,
    timeouts: Timeouts | None = None,
    shard: Shard | None = None,
    stop: asyncio.Event | None = None,
    index: BlobIndex | None = None,
    full: bool = False,
    targets: Mapping[str, Mapping[str, str]] | None = None,
    state_dir: Path | None = None,
) -> RunResult:
    """Run the given rules once, concurrently, over one run setup (`session.open_run`).

    Retry policy and timeouts default to the REGSYNC_RETRY_* / REGSYNC_*_TIMEOUT environment.
    Setting `stop` (a graceful shutdown) lets copies already started finish and starts no new
    ones; the tags left out are reported as errors of their rule. `index` (the persistent
    content index) supplies mount sources from earlier runs and learns from this one, and
    the digests recorded per destination tag; ``full`` trusts none of them (``once --full``).

    `targets` (repository -> tag -> the digest an event named, "" for none) narrows each
    rule to those tags: no discovery, no listing (unless `tags.latest` needs one), no prune.
    The plans then go through the same executor as a full cycle's.
    `state_dir` (default: the index's) records delta bundles. Tar bundles written are packed
    once every rule is done; one that cannot be written fails the rules writing it.
    """
    if state_dir is None and index is not None:
        state_dir = index.state_dir
    async with open_run(
        config, observer=observer, retry=retry, timeouts=timeouts, state_dir=state_dir
    ) as setup:
        ctx = RunContext(
            config=config,
            setup=setup,
            events=events or NoEvents(),
            dry_run=dry_run,
            plan_only=plan_only,
            missing_only=missing_only,
            retry=setup.retry,
            observer=observer or NullObserver(),
            shard=shard or Shard(),
            stop=stop or asyncio.Event(),
            index=None if dry_run or plan_only else index,
            full=full,
            targets=targets,
        )
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(run_rule(ctx, rule), context=log_context(rule=rule.name))
                for rule in rules
            ]
        results = [t.result() for t in tasks]
        _bundles_failed(setup, results, rules, await setup.pool.finish())
    if ctx.index is not None:  # what is left after a crash is written by the owner's close()
        await ctx.index.flush_async()
    return RunResult(results, dry_run=dry_run or plan_only)


def _bundles_failed(
    setup: RunSetup, results: list[RuleResult], rules: Sequence[Rule], failed: dict[str, str]
) -> None:
    """A bundle that could not be packed is an error of every rule that wrote into it."""
    for rule, result in zip(rules, results, strict=True):
        error = failed.get(setup.rule(rule).destination.name)
        if error is not None:
            result.rule_failed = True
            result.errors.append(error)
            log.error("rule %s: %s", rule.name, error)


async def run_rule(ctx: RunContext, rule: Rule) -> RuleResult:
    result = RuleResult(rule.name, str(rule.source), str(rule.destination))
    ctx.events.rule_started(rule.name)
    started = time.monotonic()
    try:
        found = await _repositories(ctx, rule)
        mine = [why for name, why in found.skipped if ctx.shard.owns(rule.name, name)]
        note_skipped(rule, result, mine)
        owned = set(ctx.owned(rule, [pair.source for pair in found.pairs]))
        pairs = [pair for pair in found.pairs if pair.source in owned]
        result.repos = len(pairs)
        ctx.events.repos_found(rule.name, len(pairs))
        limit = asyncio.Semaphore(REPO_CONCURRENCY)
        engine = ctx.engine(rule, result)
        engine.declared = _carried_elsewhere(engine.source, found)
        async with asyncio.TaskGroup() as group:
            for pair in pairs:
                group.create_task(_bounded(limit, sync_repo(ctx, rule, engine, pair, result)))
        if ctx.targets is None:  # a whole cycle, not an event-triggered run
            # `--missing` never prunes: orphaned repositories are reported, left as they are
            apply = not (ctx.dry_run or ctx.plan_only or ctx.missing_only or ctx.stop.is_set())
            guard = ctx.guards.setdefault(rule.name, DeleteGuard(engine.destination.name))
            await orphans.settle(
                ctx.setup, rule, found, result, ctx.shard, guard, ctx.events, apply, ctx.stop
            )
    except RegsyncError as exc:
        ctx.outages.rule_failed(rule, result, exc)
    refusals_counted(rule, result)
    if result.interrupted:
        result.errors.append(f"shutting down: {result.interrupted} tags left for the next run")
    result.duration_seconds = time.monotonic() - started
    ctx.events.rule_finished(result)
    return result


def _carried_elsewhere(source: Backend, found: Discovered) -> Callable[[str], list[str] | None]:
    """For a blob a delta bundle left out (its capability ``carriers``): this rule's
    destination repositories of the source repositories the bundle says carried it; None
    for content the source holds itself (see ``CopyEngine.declared``)."""
    carriers: Callable[[str], list[str] | None] | None = getattr(source, "carriers", None)
    if carriers is None:
        return lambda digest: None
    mapping = {pair.source: pair.destination for pair in found.pairs}

    def declared(digest: str) -> list[str] | None:
        repos = carriers(digest)
        return None if repos is None else [mapping[r] for r in repos if r in mapping]

    return declared


async def _repositories(ctx: RunContext, rule: Rule) -> Discovered:
    """The rule's repositories: discovered, or (an event-triggered run) the ones named."""
    if ctx.targets is None:
        return await ctx.setup.repositories(ctx.setup.rule(rule))
    return map_repositories(rule.destination, Listed(tuple(sorted(ctx.targets))))


async def _bounded(limit: asyncio.Semaphore, work: Coroutine[Any, Any, T]) -> T:
    """Run `work` holding `limit` (the coroutine is created eagerly but starts only here)."""
    async with limit:
        return await work
