"""The executor: carries out a plan's actions against the backends, and nothing else.

Planning (``regsync.survey``, ``regsync.plan``, ``regsync.pruneplan``) decides; this module
applies one COPY action (``copy_action``) or a repository's PRUNE actions (``prune_actions``).
The runner orders them (copies first, prune only when no copy of the rule failed) and accounts.

Images copy whole (exact bytes, digest preserved) unless the rule lists platforms and the
source is an index: then only those children are copied, under a subset index. An index the
source index nests is filtered the same way, level by level: kept, as its own subset pushed
by digest, when it holds any wanted platform; dropped when it holds none. Referrer fallback
tags merge with what the destination lists; signature tags copy like images.

PRUNE actions delete by digest when nothing kept needs it, else tag by tag (``tag_delete``).
Either way a tag counts as pruned only once a HEAD of it finds nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from regsync import referrers
from regsync.backends import Backend
from regsync.copy import CopyEngine
from regsync.errors import ManifestError, RegsyncError, UnsupportedError
from regsync.oci import mediatypes
from regsync.oci.artifacts import is_fallback_tag
from regsync.oci.manifest import Descriptor, Manifest
from regsync.oci.ref import is_tag, shown
from regsync.plan import Action, RepoPlan, TagAction
from regsync.platforms import PlatformFilter, filter_index, subset_index
from regsync.referrerfilter import ReferrerMatch
from regsync.result import PruneOutcome

log = logging.getLogger(__name__)


async def copy_action(
    engine: CopyEngine,
    platforms: PlatformFilter | None,
    plan: RepoPlan,
    action: TagAction,
    keep: ReferrerMatch | None = None,
) -> str:
    """Copy one tag; returns the digest the destination tag now points at. ``keep``: the
    rule's referrer filter (None: every referrer an index lists is copied)."""
    assert action.source_digest is not None
    src, dst = plan.source_repo, plan.dest_repo
    if action.artifact_of and is_fallback_tag(action.tag):
        await copy_referrers(engine, plan, action, keep)
        return action.source_digest
    if platforms is None or action.artifact_of:
        copy = engine.retag if action.held else engine.copy_tag
        manifest = await copy(src, dst, action.tag, action.source_digest)
        return manifest.digest
    source = await engine.get_manifest(src, action.source_digest)
    if not source.is_index:
        await _put(engine, src, dst, action.tag, source, set())
        return source.digest
    made: set[str] = set()
    target = await _subset(engine, src, dst, source, platforms, made, 0)
    if target is None:
        target = subset_index(source, platforms)  # raises, naming the platforms it has
    await _put(engine, src, dst, action.tag, target, made)
    return target.digest


async def backup_action(engine: CopyEngine, plan: RepoPlan, action: TagAction) -> None:
    """Tag the destination's current image as ``action.backup`` before the copy overwrites it:
    a PUT of its exact manifest bytes, fetched by the planned digest (no blob is copied)."""
    assert action.dest_digest is not None
    if not is_tag(action.backup):
        raise ManifestError(
            f"backup tag {shown(action.backup)} is not a valid tag (over 128 characters?); "
            f"{action.tag} is left as it is"
        )
    if action.backup_clash:
        raise ManifestError(
            f"backup tag {action.backup} refused: the source has that tag, which the backup "
            f"would overwrite; {action.tag} is left as it is (use a backup template whose "
            "names the source does not use)"
        )
    current = await engine.destination.manifest_get(plan.dest_repo, action.dest_digest)
    await engine.push_manifest(plan.dest_repo, action.backup, current)
    log.info(
        "backed up %s:%s as %s (%s)", plan.dest_repo, action.tag, action.backup, current.digest
    )


async def copy_referrers(
    engine: CopyEngine, plan: RepoPlan, action: TagAction, keep: ReferrerMatch | None = None
) -> None:
    """Copy a fallback tag (merging with the destination's) or API-listed referrers; with a
    filter, only the referrers it keeps (the fallback index then lists only those, and
    records the source index it was made from, so the next run sees it is up to date)."""
    src, dst = plan.source_repo, plan.dest_repo
    if action.via_api:
        found = await engine.source.referrers(src, action.artifact_of) or []
        found = keep.keep(found) if keep is not None else found
        for desc in found:
            await engine.copy_by_digest(src, dst, desc.digest)
        if await engine.destination.referrers(dst, action.artifact_of) is None:
            await _merge_fallback(engine, dst, action.tag, found, source_digest=None)
        return
    assert action.source_digest is not None
    index = await engine.get_manifest(src, action.source_digest)
    current = await _current(engine.destination, dst, action.tag)
    if keep is not None:
        wanted = keep.keep(list(index.children))
        await engine.copy_content(src, dst, dataclasses.replace(index, children=tuple(wanted)))
        await _merge_fallback(engine, dst, action.tag, wanted, index.digest, current)
        return
    source_digests = {c.digest for c in index.children}
    if current is None or {c.digest for c in current.children} <= source_digests:
        await engine.copy_content(src, dst, index)  # exact source bytes, digest preserved
        await engine.push_manifest(dst, action.tag, index)
        return
    await engine.copy_content(src, dst, index)
    await _merge_fallback(engine, dst, action.tag, list(index.children), index.digest, current)


async def _current(dest: Backend, repo: str, tag: str) -> Manifest | None:
    if await dest.manifest_head(repo, tag) is None:
        return None
    return await dest.manifest_get(repo, tag)


async def _merge_fallback(
    engine: CopyEngine,
    repo: str,
    tag: str,
    adding: list[Descriptor],
    source_digest: str | None,
    current: Manifest | None = None,
) -> None:
    """Push the fallback index ``tag`` listing what it listed plus ``adding``, once each."""
    if current is None:
        current = await _current(engine.destination, repo, tag)
    merged = referrers.merge_index(current, adding, source_digest)
    if merged is not None:
        await engine.push_manifest(repo, tag, merged)


async def _subset(
    engine: CopyEngine,
    src: str,
    dst: str,
    index: Manifest,
    wanted: PlatformFilter,
    made: set[str],
    depth: int,
) -> Manifest | None:
    """``index`` filtered to ``wanted`` (None: nothing wanted); the subsets of the indexes it
    nests are put in the destination by digest first, and their digests added to ``made``."""
    nested: dict[str, Manifest | None] = {}
    for child in index.children:
        if child.media_type not in mediatypes.INDEXES:
            continue
        if depth >= mediatypes.MAX_NESTING:
            raise ManifestError(f"indexes nested over {mediatypes.MAX_NESTING} deep are not copied")
        inner = await engine.get_manifest(src, child.digest)
        subset = await _subset(engine, src, dst, inner, wanted, made, depth + 1)
        if subset is not None:
            await _put(engine, src, dst, subset.digest, subset, made)
            made.add(subset.digest)
        nested[child.digest] = subset
    return filter_index(index, wanted, nested)


async def _put(
    engine: CopyEngine, src: str, dst: str, ref: str, manifest: Manifest, made: set[str]
) -> None:
    """Copy what ``manifest`` references from the source (except the subsets regsync made,
    which the source never had and are in place already), then push it under ``ref``."""
    from_source = tuple(c for c in manifest.children if c.digest not in made)
    await engine.place_content(src, dst, dataclasses.replace(manifest, children=from_source))
    await engine.push_manifest(dst, ref, manifest)


@dataclass
class DeleteGuard:
    """Per rule: after one 405 on a digest delete, stop trying and report it once."""

    registry: str
    refused: bool = False
    reported: bool = False

    def refusal(self) -> str | None:
        if self.refused and not self.reported:
            self.reported = True
            return (
                f"prune: {self.registry} refuses deletes (405 UNSUPPORTED); enable deletion "
                "there (distribution: storage.delete.enabled) or set prune: false"
            )
        return None


async def prune_actions(
    dest: Backend,
    plan: RepoPlan,
    guard: DeleteGuard,
    stop: asyncio.Event | None = None,
    placed: Collection[str] = (),
) -> PruneOutcome:
    """Delete the plan's PRUNE tags: by digest when nothing kept needs it, else by tag.

    ``placed``: the digests this run's copies put tags at (a platform subset's is not the
    source digest the plan knows): a tag on one of those is deleted by tag only. ``stop`` set
    (a shutdown): no further delete starts; the tags left are noted for the next run (they
    are still out of the source, so it prunes them)."""
    out = PruneOutcome()
    stop = stop or asyncio.Event()
    # Digests this run's copies point tags at: a delete by digest would take those along.
    # (A backup keeps the digest of a tag the copy overwrites; that tag was listed on it, so
    # the plan has it among a pruned tag's `shared` holders and deletes by tag.)
    copied = {a.source_digest for a in plan.actions if a.action is not Action.PRUNE}
    copied |= set(placed)
    by_digest: dict[str, list[TagAction]] = {}
    for action in plan.of(Action.PRUNE):
        by_digest.setdefault(action.dest_digest or "", []).append(action)
    for digest, actions in sorted(by_digest.items()):
        if guard.refused:
            break
        if stop.is_set():
            left = sum(len(a) for d, a in by_digest.items() if d >= digest)
            out.notes.append(f"{plan.dest_repo}: shutting down: {left} prunes left")
            break
        try:
            if not digest or digest in copied or any(a.shared for a in actions):
                await _delete_tags(dest, plan.dest_repo, actions, out, stop)
            else:
                await dest.manifest_delete(plan.dest_repo, digest)
                await _confirm_gone(dest, plan.dest_repo, digest, actions, out)
        except UnsupportedError:
            guard.refused = True
        except RegsyncError as exc:
            out.errors.append(f"{plan.dest_repo}: prune {digest[:19]}: {exc}")
    if (message := guard.refusal()) is not None:
        out.errors.append(message)
    return out


async def _confirm_gone(
    dest: Backend, repo: str, digest: str, actions: Sequence[TagAction], out: PruneOutcome
) -> None:
    """A tag counts as pruned once a HEAD finds nothing: a 202 alone proves nothing (a store
    may answer it and keep the tag)."""
    for action in actions:
        left = await dest.manifest_head(repo, action.tag)
        if left is not None:
            out.errors.append(
                f"{repo}:{action.tag}: prune: still tagged ({left.digest}) after deleting {digest}"
            )
        else:
            out.pruned.append(action.tag)
            log.info("pruned %s:%s (%s)", repo, action.tag, digest)


async def _delete_tags(
    dest: Backend, repo: str, actions: Sequence[TagAction], out: PruneOutcome, stop: asyncio.Event
) -> None:
    """One ``tag_delete`` per tag; a refusal of deletes (UnsupportedError) or a shutdown
    stops the rest."""
    for done, action in enumerate(actions):
        if stop.is_set():
            out.notes.append(f"{repo}: shutting down: {len(actions) - done} prunes left")
            return
        try:
            await dest.tag_delete(repo, action.tag)
        except UnsupportedError:
            raise
        except RegsyncError as exc:
            out.errors.append(f"{repo}:{action.tag}: prune: {exc}")
        else:
            out.pruned.append(action.tag)
            log.info("pruned %s:%s (tag only)", repo, action.tag)
