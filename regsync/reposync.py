"""One repository of a rule: its survey, the plan's notes and counts, its copies then prunes.

The copies-then-prune step is a safety rail (invariant 4): no delete after a failed copy of
the rule, none once shutting down.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

from regsync.aio import bounded_map
from regsync.config import Rule
from regsync.copy import CopyEngine
from regsync.discovery import RepoPair, empty_source
from regsync.errors import RegsyncError
from regsync.execute import DeleteGuard, backup_action, copy_action, prune_actions
from regsync.logs import copy_context, log_scope
from regsync.outages import WriteGate
from regsync.plan import Action, RepoPlan, TagAction
from regsync.recorded import TagBook
from regsync.result import QUOTED_REFUSALS, RuleResult
from regsync.runcontext import IMAGE_CONCURRENCY, RunContext
from regsync.survey import survey, survey_tags

# The runner's logger: its lines (a tag copied, names refused) kept their logger name when
# this module was split off it.
log = logging.getLogger("regsync.runner")
LOGGED_MOVED = 10  # moved immutable tags logged one by one per rule and run; the rest counted


def note_skipped(
    rule: Rule, result: RuleResult, skipped: Sequence[str], where: str = "", more: int = 0
) -> None:
    """Names refused by the grammar: one warning and one error each for the first
    ``QUOTED_REFUSALS`` of the rule; the others (and ``more`` a listing did not quote) are
    counted, and ``refusals_counted`` reports them in one line. The rule carries on."""
    result.refusals_more += more
    for why in skipped:
        if result.refusals_quoted < QUOTED_REFUSALS:
            result.refusals_quoted += 1
            result.errors.append(f"{where}{why}")
            log.warning("rule %s: %s%s", rule.name, where, why)
        else:
            result.refusals_more += 1


def refusals_counted(rule: Rule, result: RuleResult) -> None:
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
    note_skipped(rule, result, plan.skipped, f"{repo}: ", plan.skipped_more)
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


def _listed(repo: str, what: str, items: Sequence[str], shown: int = 5) -> str:
    """One note line naming up to ``shown`` of ``items``."""
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return f"{repo}: {len(items)} tags {what}: {', '.join(items[:shown])}{more}"


def _ref(registry: str, repo: str, tag: str) -> str:
    return f"{registry}/{repo}:{tag}" if registry else f"{repo}:{tag}"
