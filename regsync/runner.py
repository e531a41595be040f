"""Runs rules: discover repositories, list and diff tags, execute the plan.

Concurrency is structured (TaskGroups) and bounded: repositories per rule, image copies across
the run, blob streams per destination, and requests per registry (in the transport).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from regsync import orphans
from regsync.aio import bounded_map
from regsync.backends import Backend
from regsync.backends.registry.observer import NullObserver, RequestObserver
from regsync.backends.registry.retry import RetryPolicy, Timeouts
from regsync.blobindex import BlobIndex
from regsync.blobledger import BlobLedger
from regsync.config import Config, Rule
from regsync.copy import CopyEngine
from regsync.discovery import Discovered, RepoPair, empty_source, map_repositories
from regsync.errors import RegsyncError
from regsync.events import NoEvents, RunEvents
from regsync.execute import DeleteGuard, backup_action, copy_action, prune_actions
from regsync.logs import copy_context, log_context, log_scope
from regsync.oci.manifest import Descriptor
from regsync.oci.ref import DOCKER_HUB, Kind, Listed
from regsync.outages import Outages, WriteGate
from regsync.plan import Action, RepoPlan, TagAction
from regsync.recorded import TagBook
from regsync.result import QUOTED_REFUSALS, RuleResult, RunResult
from regsync.session import RunSetup, open_run
from regsync.shard import Shard
from regsync.survey import survey, survey_tags

log = logging.getLogger(__name__)
LOGGED_MOVED = 10  # moved immutable tags logged one by one per rule and run; the rest counted
T = TypeVar("T")

REPO_CONCURRENCY = 8  # repositories listed and planned at once, per rule
IMAGE_CONCURRENCY = 16  # image copies in flight across the run


@dataclass
class RunContext:
    """What the rules of one run share: its setup, per-destination ledgers and limits."""

    config: Config
    setup: RunSetup  # the session, backends, and each rule's policy
    events: RunEvents
    dry_run: bool = False
    plan_only: bool = False
    missing_only: bool = False  # `once --missing`
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    observer: RequestObserver = field(default_factory=NullObserver)
    stop: asyncio.Event = field(default_factory=asyncio.Event)  # set: start no more copies
    images: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(IMAGE_CONCURRENCY))
    ledgers: dict[str, BlobLedger] = field(default_factory=dict)
    transfers: dict[str, asyncio.Semaphore] = field(default_factory=dict)
    guards: dict[str, DeleteGuard] = field(default_factory=dict)  # per rule
    shard: Shard = field(default_factory=Shard)
    index: BlobIndex | None = None  # holders seen by earlier runs (registry destinations)
    full: bool = False  # once --full: trust no recorded digest, HEAD every tag
    outages: Outages = field(default_factory=Outages)  # registries found unusable this run
    gates: dict[str, WriteGate] = field(default_factory=dict)  # per destination backend
    targets: Mapping[str, Mapping[str, str]] | None = None  # repo -> tag -> digest (events)

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

    def engine(self, rule: Rule, result: RuleResult) -> CopyEngine:
        setup = self.setup.rule(rule)
        key = setup.destination.name  # one per pooled backend: a registry host, a layout
        limit = self.config.registry(rule.destination.registry).max_concurrency
        return CopyEngine(
            source=setup.source,
            destination=setup.destination,
            ledger=self.ledgers.setdefault(key, self._ledger(rule, setup.destination)),
            transfers=self.transfers.setdefault(key, asyncio.Semaphore(limit)),
            stats=result.stats,
            on_bytes=lambda n: self.events.bytes_copied(rule.name, n),
            on_blob=self._blob_hook(rule.name, key),
            retry=self.retry,
            observer=self.observer,
            on_transfer=self._transfer_hook(rule.name),
        )

    def counts_pulls(self, rule: Rule, destination: str) -> bool:
        """Whether a source manifest GET costs more than a HEAD here, so a tag the destination
        lacks is HEADed first (tags sharing a digest then cost one GET): always when planning
        only; on Docker Hub and registries with `rate_limit` (GETs are pulls); and until the
        destination accepted a copy in this run (one refusing writes costs one GET at most)."""
        source = rule.source
        gate = self.gates.get(destination)
        if self.dry_run or self.plan_only or gate is None or not gate.proven:
            return True
        if source.kind is not Kind.REGISTRY:
            return False
        limited = self.config.registry(source.registry).rate_limit is not None
        return limited or self.config.served_host(source.registry) == DOCKER_HUB

    async def listed_digests(self, rule: Rule, repo: str) -> dict[str, Descriptor] | None:
        """Docker Hub sources: every tag's digest from the Hub tags API (100 a request, no
        HEAD each); None when there is no such API or it fails (the tags are HEADed)."""
        if rule.source.kind is not Kind.REGISTRY:
            return None
        hub = self.setup.pool.hub(rule.source.registry)
        if hub is None:
            return None
        try:
            return await hub.tag_digests(repo)
        except RegsyncError as exc:
            log.warning("rule %s: %s: Hub tags API failed, HEADing tags: %s", rule.name, repo, exc)
            return None

    def placed(self, result: RuleResult, repo: str, tag: str) -> None:
        """An event-triggered run notes each tag an event named that is now in place (what
        ``triggers`` settles the events by); a cycle notes none: only counts, which stay exact
        (a 50,000-tag cycle kept 50,000 pairs until it ended)."""
        if self.targets is not None and tag in self.targets.get(repo, ()):
            result.placed.append((repo, tag))

    def book(self, rule: Rule) -> TagBook:
        """The rule's view of the recorded tag digests (none for layouts: HEADs are local)."""
        destination = self.setup.rule(rule).destination
        index = None if destination.shares_blobs else self.index
        return TagBook(index, rule.destination.registry, rule.full_check, self.full)

    def _ledger(self, rule: Rule, destination: Backend) -> BlobLedger:
        # A layout shares one blob store across its repositories: nothing to remember.
        index = None if destination.shares_blobs else self.index
        return BlobLedger(index=index, registry=rule.destination.registry)

    def _blob_hook(self, rule: str, destination: str) -> Callable[[str], None]:
        gate = self.gates.setdefault(destination, WriteGate())

        def hook(outcome: str) -> None:
            self.events.blob_done(rule, outcome)
            if outcome in ("copied", "mounted"):  # the destination took a write
                gate.prove()

        return hook

    def _transfer_hook(self, rule: str) -> Callable[[str, Descriptor, bool], None]:
        def hook(repo: str, desc: Descriptor, begins: bool) -> None:
            if begins:
                self.events.transfer_started(rule, repo, desc.digest, desc.size)
            else:
                self.events.transfer_finished(rule, repo, desc.digest)

        return hook


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
        _skipped(rule, result, mine)
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
    _refusals_counted(rule, result)
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


def _skipped(
    rule: Rule, result: RuleResult, skipped: Sequence[str], where: str = "", more: int = 0
) -> None:
    """Names refused by the grammar: one warning and one error each for the first
    ``QUOTED_REFUSALS`` of the rule; the others (and ``more`` a listing did not quote) are
    counted, and ``_refusals_counted`` reports them in one line. The rule carries on."""
    result.refusals_more += more
    for why in skipped:
        if result.refusals_quoted < QUOTED_REFUSALS:
            result.refusals_quoted += 1
            result.errors.append(f"{where}{why}")
            log.warning("rule %s: %s%s", rule.name, where, why)
        else:
            result.refusals_more += 1


def _refusals_counted(rule: Rule, result: RuleResult) -> None:
    """One line for the refused names past those quoted (none when all were quoted), and one
    log line for the moved immutable tags past those logged."""
    if result.refusals_more:
        why = f"… and {result.refusals_more} more refused names (not valid names, skipped)"
        result.errors.append(why)
        log.warning("rule %s: %s", rule.name, why)
    if (more := result.moved_immutable - LOGGED_MOVED) > 0:
        log.warning("rule %s: … and %d more immutable tags changed at the source", rule.name, more)


async def sync_repo(
    ctx: RunContext, rule: Rule, engine: CopyEngine, pair: RepoPair, result: RuleResult
) -> None:
    repo, dest_repo = pair.source, pair.destination  # one-to-one: see map_repositories
    policy = ctx.setup.rule(rule).policy
    if ctx.missing_only:
        policy = replace(policy, missing_only=True, prune=None)
    book = ctx.book(rule)
    try:
        ctx.outages.check(rule)
        source, dest = engine.source, engine.destination
        recorded = await book.load(dest_repo, policy.immutable)
        if ctx.targets is not None:  # some tags only: record what it sees, never a full check
            recorded = replace(recorded, full=False)
        if ctx.targets is None:
            pulls = ctx.counts_pulls(rule, dest.name)
            get_tag = None if pulls else engine.get_tag_manifest
            fetch, listed = engine.get_manifest, await ctx.listed_digests(rule, repo)
            plan = await survey(
                source, dest, repo, dest_repo, policy, fetch, recorded, get_tag, listed
            )
        else:
            targets = ctx.targets[repo]
            plan = await survey_tags(
                source, dest, repo, dest_repo, policy, targets, engine.get_manifest
            )
    except Exception as exc:  # one bad repository never stops the others
        ctx.outages.failed(rule, result, repo, exc)
        return
    if plan.source_missing and not rule.source.is_glob:  # the one repository the rule names
        try:
            what = f"source repository {rule.source.named} does not exist"
            empty_source(what, rule=rule.name, allowed=rule.allow_empty)
        except RegsyncError as exc:
            ctx.outages.rule_failed(rule, result, exc)
            return
    # A copying cycle keeps what its report and metrics read: not every up-to-date tag.
    planning = ctx.dry_run or ctx.plan_only or ctx.targets is not None
    result.plans.append(plan if planning else _slim(plan, result))
    _skipped(rule, result, plan.skipped, f"{repo}: ", plan.skipped_more)
    if media := [f for f in plan.filtered if f.by == "media_types"]:
        shown = [f"{f.tag} ({f.detail})" for f in media]
        result.notes.append(_listed(dest_repo, "skipped by media_types", shown))
    if differing := plan.of(Action.DIFFERS):
        what = "differ from the source, left as is (--missing)"
        result.notes.append(_listed(dest_repo, what, [a.tag for a in differing]))
    result.errors.extend(f"{dest_repo}: {why}" for why in plan.refusals)
    ctx.events.repo_planned(rule.name, plan)
    result.up_to_date += len(plan.of(Action.SKIP))
    for skip in plan.of(Action.SKIP):
        ctx.placed(result, repo, skip.tag)
        ctx.events.tag_done(rule.name, "up_to_date")
    if ctx.dry_run or ctx.plan_only:
        return
    for warning in book.planned(plan, recorded):
        result.notes.append(warning)  # bounded (Lines); the log too: the first few, then a count
        result.moved_immutable += 1
        if result.moved_immutable <= LOGGED_MOVED:
            log.warning("rule %s: %s", rule.name, warning)
    await book.flush()
    if plan.dest_empty and not engine.destination.shares_blobs:
        engine.fresh.add(dest_repo)  # shared blobs (a layout) may exist already: keep HEADs
    await _copy_then_prune(ctx, rule, engine, plan, result, book)


async def _copy_then_prune(
    ctx: RunContext,
    rule: Rule,
    engine: CopyEngine,
    plan: RepoPlan,
    result: RuleResult,
    book: TagBook,
) -> None:
    """The plan's copies, then its deletes: never after a failed copy of the rule (invariant
    4: a failed copy never turns into a smaller mirror), and none once shutting down."""

    async def one(action: TagAction) -> str | None:
        async with ctx.images:
            return await copy_one(ctx, rule, engine, plan, action, result, book)

    # Tasks for the copies in flight only, not one per tag to copy (bounded_map).
    copied = await bounded_map(one, plan.of(Action.COPY), IMAGE_CONCURRENCY)
    if plan.of(Action.PRUNE) and not result.failed and not ctx.stop.is_set():
        guard = ctx.guards.setdefault(rule.name, DeleteGuard(engine.destination.name))
        # What the copies put (a platform subset is not the source digest): never deleted.
        placed = {digest for digest in copied if digest is not None}
        outcome = await prune_actions(engine.destination, plan, guard, ctx.stop, placed)
        result.record_prune(outcome)
        book.pruned(plan.dest_repo, outcome.pruned)
        for _ in outcome.pruned:
            ctx.events.tag_done(rule.name, "pruned")
    await book.flush()


async def copy_one(
    ctx: RunContext,
    rule: Rule,
    engine: CopyEngine,
    plan: RepoPlan,
    action: TagAction,
    result: RuleResult,
    book: TagBook,
) -> str | None:
    """Copy one tag; the digest the destination tag now points at, None when not copied."""
    where = f"{plan.source_repo}:{action.tag} -> {plan.dest_repo}:{action.tag}"
    context = copy_context(
        rule.name,
        _ref(rule.source.registry, plan.source_repo, action.tag),
        _ref(rule.destination.registry, plan.dest_repo, action.tag),
    )
    if ctx.stop.is_set():
        result.interrupted += 1
        log.info("rule %s: not copying %s: shutting down", rule.name, where, extra=context)
        return None
    policy = ctx.setup.rule(rule).policy

    async def copy() -> str:
        ctx.outages.check(rule)  # e.g. found read-only while this copy waited its turn
        if action.backup:  # a failed backup fails the tag: it is not overwritten
            await backup_action(engine, plan, action)
            result.backups += 1
        return await copy_action(engine, policy.platforms, plan, action, policy.referrer_filter)

    gate = ctx.gates.setdefault(engine.destination.name, WriteGate())
    try:
        with log_scope(**context):
            digest = await gate.first(copy)
    except Exception as exc:  # one bad tag never stops the others
        result.failed += 1
        ctx.events.tag_done(rule.name, "failed")
        at = f"{plan.source_repo}:{action.tag}"
        ctx.outages.failed(rule, result, at, exc, f"copy {where} failed", context)
        return None
    result.copied += 1
    if digest == action.source_digest:
        book.copied(plan.dest_repo, action)
    ctx.placed(result, plan.source_repo, action.tag)
    ctx.events.tag_done(rule.name, "copied")
    log.info(
        "rule %s: copied %s (%s)",
        rule.name,
        where,
        digest,
        extra={**context, "digest": digest},
    )
    return digest


def _slim(plan: RepoPlan, result: RuleResult) -> RepoPlan:
    """What a copying cycle's report and metrics read of ``plan``: not its plain up-to-date
    tags and copies, nor its selection (a 50,000-tag no-op kept ~1.5 KB a tag, a cold copy
    ~0.3 KB, until the run ended). Copies are counted (the drift); subsets, prunes and tags
    left differing stay, the report names or counts them."""
    plain = (Action.SKIP, Action.COPY)
    kept = tuple(a for a in plan.actions if a.action not in plain or a.subset)
    result.unkept_copies += sum(1 for a in plan.actions if a.action is Action.COPY and not a.subset)
    return replace(plan, actions=kept, selected=())


async def _bounded(limit: asyncio.Semaphore, work: Coroutine[Any, Any, T]) -> T:
    """Run `work` holding `limit` (the coroutine is created eagerly but starts only here)."""
    async with limit:
        return await work


def _listed(repo: str, what: str, items: Sequence[str], shown: int = 5) -> str:
    """One note line naming up to ``shown`` of ``items``."""
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return f"{repo}: {len(items)} tags {what}: {', '.join(items[:shown])}{more}"


def _ref(registry: str, repo: str, tag: str) -> str:
    return f"{registry}/{repo}:{tag}" if registry else f"{repo}:{tag}"
