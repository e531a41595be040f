"""Destination repositories in a rule's scope that the source no longer has ("orphans").

Leaving them is the default (a source repository that vanishes is never a reason to prune),
but never in silence: `check`, `verify`, `/status`, the JSON summary and the gauge
`regsync_orphaned_repositories{rule}` say how many there are and name the first few.

Found from the destination's catalog (one listing per destination registry per run, shared by
the rules): the repositories the rule's destination glob matches that no source repository of
this run maps to, that no other rule writes, and that still hold a tag. Unknown (None) for a
rule naming one repository, a destination that is not a registry, or a catalog it keeps closed.

`prune_repositories: true` deletes their tags in the rule's tag scope, under the rails of tag
prune: never after a source listing that refused names or came back empty, never when the rule
had any error this run, and never more than `prune.max_fraction` of the rule's repositories at
once. The tags go through the one prune path (`execute.prune_actions`), planned by the same
planner as a repository whose source lists no tags.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import replace

from regsync import aio
from regsync.backends import Backend
from regsync.backends.memory import MemoryBackend
from regsync.config import Rule
from regsync.config.overlap import destination_glob
from regsync.discovery import Discovered
from regsync.errors import RegsyncError
from regsync.events import RunEvents
from regsync.execute import DeleteGuard, prune_actions
from regsync.oci.ref import Kind, Listed, SourceSpec
from regsync.pruneplan import PrunePolicy
from regsync.result import CHECKED_ORPHANS, Orphans, PruneOutcome, RuleResult
from regsync.session import RunSetup
from regsync.shard import Shard
from regsync.survey import SyncPolicy, survey

log = logging.getLogger(__name__)


def in_scope(rule: Rule) -> SourceSpec | None:
    """The glob of the destination repositories only this rule writes, or None."""
    if rule.destination.kind is not Kind.REGISTRY or not rule.source.is_glob:
        return None
    return SourceSpec(registry=rule.destination.registry, pattern=destination_glob(rule)[1])


async def find(
    rule: Rule,
    others: Sequence[Rule],
    found: Discovered,
    dest: Backend,
    catalog: Listed | None,
) -> Orphans | None:
    """The rule's orphaned destination repositories, sorted; None when it cannot be known."""
    scope = in_scope(rule)
    if scope is None or catalog is None:
        return None
    live = {pair.destination for pair in found.pairs}
    theirs = [g for o in others if o.name != rule.name if (g := in_scope(o)) is not None]
    candidates = [
        repo
        for repo in catalog.names
        if scope.matches(repo)
        and repo not in live
        and not any(g.registry == scope.registry and g.matches(repo) for g in theirs)
    ]
    # Each candidate costs a tag listing: at most CHECKED_ORPHANS a run; the rest are counted,
    # never dropped in silence (the count is then a lower bound, and nothing is pruned on it).
    unchecked = max(len(candidates) - CHECKED_ORPHANS, 0)
    del candidates[CHECKED_ORPHANS:]

    async def holds_tags(repo: str) -> bool:
        try:
            return bool((await dest.tags(repo)).names)
        except RegsyncError:
            return True  # cannot tell: still reported, never pruned blindly (rails below)

    held = await aio.bounded_map(holds_tags, candidates, 8)
    lost = tuple(sorted(r for r, h in zip(candidates, held, strict=True) if h))
    return Orphans(lost, unchecked)


def refusal(rule: Rule, lost: Orphans, found: Discovered, errors: int, failed: int) -> str | None:
    """Why the orphans of this run must not be pruned, or None (the rails)."""
    orphans = lost.names
    if lost.unchecked:
        return (
            f"{lost.unchecked} more candidate repositories were not checked (at most "
            f"{CHECKED_ORPHANS} a run), so the orphans cannot all be counted"
        )
    if found.skipped:
        return "the source listing refused some names"
    if not found.pairs:
        return "the source lists no repository"
    if errors or failed:
        return "the rule had errors in this run"
    total = len(orphans) + len(found.pairs)
    if len(orphans) / total > rule.prune.max_fraction:
        share = round(100 * len(orphans) / total)
        return (
            f"it would empty {len(orphans)} of {total} repositories ({share}%), over "
            f"prune.max_fraction {rule.prune.max_fraction:g}"
        )
    return None


async def settle(
    run: RunSetup,
    rule: Rule,
    found: Discovered,
    result: RuleResult,
    shard: Shard,
    guard: DeleteGuard,
    events: RunEvents,
    apply: bool,
    stop: asyncio.Event,
) -> None:
    """Report the rule's orphaned repositories (this shard's); prune them when the rule says
    so, ``apply`` (not a plan, not shutting down) and the rails allow. ``stop`` set meanwhile
    (a shutdown): no further delete starts."""
    setup = run.rule(rule)
    catalog = await run.destination_catalog(setup) if in_scope(rule) else None
    lost = await find(rule, run.config.rules, found, setup.destination, catalog)
    if lost is None:
        return
    mine = tuple(r for r in lost.names if shard.owns(rule.name, r))
    result.orphans = lost = replace(lost, names=mine)
    if not (mine or lost.unchecked) or not rule.prune_repositories or not apply:
        return
    why = refusal(rule, lost, found, len(result.errors), result.failed)
    if why is not None:
        result.errors.append(f"prune_repositories refused: {why}; nothing deleted")
        log.error("rule %s: prune_repositories refused: %s", rule.name, why)
        return
    outcome = await prune(setup.destination, mine, setup.policy, guard, stop)
    result.record_prune(outcome)
    for _ in outcome.pruned:
        events.tag_done(rule.name, "pruned")
    log.info(
        "rule %s: pruned %d tags of %d orphaned repositories",
        rule.name,
        len(outcome.pruned),
        len(mine),
    )


async def prune(
    dest: Backend,
    orphans: Sequence[str],
    policy: SyncPolicy,
    guard: DeleteGuard,
    stop: asyncio.Event,
) -> PruneOutcome:
    """Delete the in-scope tags of each orphan through the one prune path; once ``stop`` is
    set no further delete starts (the tags left are noted, as for tag prune)."""
    # The planner sees an empty source repository; the repository-level rails above stand in
    # for its "source lists no tags" rail.
    gone = replace(policy, referrers=False, prune=PrunePolicy(allow_empty=True, max_fraction=1))
    empty = MemoryBackend()
    total = PruneOutcome()
    for repo in orphans:
        plan = await survey(empty, dest, repo, repo, gone)
        outcome = await prune_actions(dest, plan, guard, stop)
        total.pruned.extend(f"{repo}:{tag}" for tag in outcome.pruned)
        total.notes.extend(outcome.notes)
        total.errors.extend(outcome.errors)
    return total
