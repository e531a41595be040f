"""`regsync verify [--repair]`: prove that every destination tag in scope is complete.

For each rule, the destination repositories its source covers are walked tag by tag: the tag's
manifest, every child manifest and every blob they reference must exist in the destination
repository (manifests are read, blobs HEADed). This answers "the copy said success but blobs
are gone" (a garbage collection, a storage fault, a hand-made delete). With ``repair`` a tag
with missing content is copied again from the source by the digest the destination tag names,
walking every child even when it exists, and checked again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from regsync import aio, orphans
from regsync.backends import Backend
from regsync.backends.registry.observer import RequestObserver
from regsync.blobledger import BlobLedger
from regsync.config import Config, Rule
from regsync.copy import CopyEngine
from regsync.errors import MappingError, NotFoundError, RegsyncError
from regsync.oci.manifest import Descriptor
from regsync.result import Orphans
from regsync.session import RuleSetup, RunSetup, open_run
from regsync.summary import orphans_json, orphans_note

log = logging.getLogger(__name__)

TAG_CONCURRENCY = 16  # tags walked at once, per rule, by as many worker tasks


@dataclass(frozen=True)
class Missing:
    ref: str  # destination repo:tag whose content is incomplete
    digest: str  # what is missing ("" when the tag itself does not resolve)
    kind: str  # manifest | blob


@dataclass
class VerifyResult:
    rule: str
    repos: int = 0
    tags: int = 0
    manifests: int = 0
    blobs: int = 0
    missing: list[Missing] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    orphans: Orphans | None = None  # destination repositories the source lost

    @property
    def broken_tags(self) -> list[str]:
        return sorted({m.ref for m in self.missing})

    @property
    def ok(self) -> bool:
        unrepaired = set(self.broken_tags) - set(self.repaired)
        return not unrepaired and not self.errors

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.rule,
            "ok": self.ok,
            "repos": self.repos,
            "tags_checked": self.tags,
            "manifests_checked": self.manifests,
            "blobs_checked": self.blobs,
            "missing": [{"ref": m.ref, "digest": m.digest, "kind": m.kind} for m in self.missing],
            "repaired": list(self.repaired),
            "errors": list(self.errors),
            "orphaned_repositories": orphans_json(self.orphans),
        }


class _RepoWalk:
    """Checks the tags of one destination repository; remembers what it already checked."""

    def __init__(self, dest: Backend, repo: str, result: VerifyResult) -> None:
        self.dest, self.repo, self.result = dest, repo, result
        self._manifests: dict[str, asyncio.Task[list[Missing]]] = {}
        self._blobs: dict[str, asyncio.Task[bool]] = {}
        self.blob_descriptors: dict[str, Descriptor] = {}  # what repair needs to copy a blob

    async def tag(self, tag: str) -> tuple[str | None, list[Missing]]:
        """The tag's digest and what it lacks."""
        ref = f"{self.repo}:{tag}"
        self.result.tags += 1
        desc = await self.dest.manifest_head(self.repo, tag)
        if desc is None:
            return None, [Missing(ref, "", "manifest")]
        missing = await self._manifest(desc.digest)
        return desc.digest, [Missing(ref, m.digest, m.kind) for m in missing]

    def _manifest(self, digest: str) -> asyncio.Task[list[Missing]]:
        if digest not in self._manifests:
            self._manifests[digest] = asyncio.ensure_future(self._walk(digest))
        return self._manifests[digest]

    async def _walk(self, digest: str) -> list[Missing]:
        self.result.manifests += 1
        left_out = getattr(self.dest, "left_out", None)  # a delta bundle's capability
        if left_out is not None and left_out(digest):
            return []  # an earlier bundle of the series carried it (and was verified then)
        try:
            manifest = await self.dest.manifest_get(self.repo, digest)
        except NotFoundError:
            return [Missing("", digest, "manifest")]
        found: list[Missing] = []
        children = await asyncio.gather(*(self._manifest(c.digest) for c in manifest.children))
        for lacks in children:
            found.extend(lacks)
        blobs = list(manifest.blobs)
        self.blob_descriptors.update((b.digest, b) for b in blobs)
        present = await asyncio.gather(*(self._blob(b) for b in blobs))
        lacking = [b for b, ok in zip(blobs, present, strict=True) if not ok]
        found.extend(Missing("", b.digest, "blob") for b in lacking)
        return found

    def _blob(self, desc: Descriptor) -> asyncio.Task[bool]:
        digest = desc.digest
        if digest not in self._blobs:
            self.result.blobs += 1
            # A backend that can (a tar bundle: `blob_verify`) reads and hashes every blob;
            # a registry's blobs are HEADed.
            check = getattr(self.dest, "blob_verify", None)
            found = check(self.repo, desc) if check else self.dest.blob_head(self.repo, digest)
            self._blobs[digest] = asyncio.ensure_future(found)
        return self._blobs[digest]


async def verify(
    config: Config,
    rules: Sequence[Rule],
    *,
    repair: bool = False,
    observer: RequestObserver | None = None,
) -> list[VerifyResult]:
    """Verify (and optionally repair) every rule's destination tags, over the run setup
    `once` uses (so the same repositories: Hub API listing, `mirrors:`, the same mapping)."""
    results = [VerifyResult(rule.name) for rule in rules]
    async with open_run(config, observer=observer) as run, asyncio.TaskGroup() as group:
        for rule, result in zip(rules, results, strict=True):
            group.create_task(_verify_rule(run, rule, result, repair))
    return results


async def _verify_rule(run: RunSetup, rule: Rule, result: VerifyResult, repair: bool) -> None:
    try:
        setup = run.rule(rule)  # opens its backends: unreadable TLS files fail here
    except RegsyncError as exc:  # that rule's error, as in `once`: the others still run
        result.errors.append(str(exc))
        return
    policy, dest = setup.policy.tags, setup.destination
    exists = getattr(dest, "exists", None)  # a layout's or a bundle's capability
    if exists is not None and not await asyncio.to_thread(exists):
        if (why := await _store_absent(run, setup)) is not None:
            result.errors.append(why)
        return
    try:
        found = await run.repositories(setup)
    except MappingError as exc:
        result.errors.append(str(exc))
        return
    except RegsyncError as exc:
        result.errors.append(f"listing {rule.source}: {exc}")
        return
    pairs = found.pairs
    result.errors.extend(why for _, why in found.skipped)
    catalog = await run.destination_catalog(setup) if orphans.in_scope(rule) else None
    result.orphans = await orphans.find(rule, run.config.rules, found, dest, catalog)
    result.repos = len(pairs)
    engine = CopyEngine(
        setup.source,
        dest,
        BlobLedger(),
        asyncio.Semaphore(4),
        retry=run.retry,
        trust_children=False,
    )

    async def one(src_repo: str, walk: _RepoWalk, tag: str) -> None:
        try:
            digest, missing = await walk.tag(tag)
        except RegsyncError as exc:
            result.errors.append(f"{walk.repo}:{tag}: {exc}")
            return
        if not missing:
            return
        result.missing.extend(missing)
        log.error("verify %s: %s:%s lacks %d items", rule.name, walk.repo, tag, len(missing))
        if repair:
            await _repair(engine, src_repo, walk, tag, digest, missing, result)

    for pair in pairs:
        repo, dest_repo = pair.source, pair.destination
        try:
            listed = await dest.tags(dest_repo)
            if listed.missing and (absent := await _absent(setup, repo, dest_repo)):
                result.errors.append(absent)
                continue
        except RegsyncError as exc:
            result.errors.append(f"{dest_repo}: {exc}")
            continue
        result.errors.extend(f"{dest_repo}: {w}" for w in listed.report("destination tag"))
        tags = [t for t in listed.names if policy.in_scope(t)]
        walk = _RepoWalk(dest, dest_repo, result)
        await aio.bounded_map(functools.partial(one, repo, walk), tags, TAG_CONCURRENCY)


async def _store_absent(run: RunSetup, setup: RuleSetup) -> str | None:
    """The error for a destination layout or bundle that does not exist, or None when no
    source repository has a tag the rule would write there (``once`` creates the store on its
    first write only): the first repository with one settles it. A source that cannot say is
    no excuse, as for a registry repository (:func:`_absent`)."""
    missing = (
        f"destination {setup.destination.name} does not exist; nothing was verified (check "
        "the path; `regsync once` creates it)"
    )
    try:
        found = await run.repositories(setup)
    except RegsyncError:
        return missing
    for pair in found.pairs:
        if await _wanted(setup, pair.source) != 0:
            return missing
    return None


async def _absent(setup: RuleSetup, src_repo: str, dest_repo: str) -> str | None:
    """The error for a destination repository that does not exist, or None when the source
    has no tag in the rule's scope there either (a copy would not have made it), or the rule's
    ``media_types`` may have skipped them all. A source
    that cannot say is no excuse: the destination repository is still reported missing."""
    missing = f"destination repository {setup.destination.name}/{dest_repo} does not exist"
    wanted = await _wanted(setup, src_repo)
    if wanted is None:
        return f"{missing}; nothing of it was verified"
    if not wanted:
        return None
    return (
        f"{missing} (the source has {wanted} tags in scope for it); nothing of it was "
        "verified (`regsync once` copies it)"
    )


async def _wanted(setup: RuleSetup, src_repo: str) -> int | None:
    """How many of the source repository's tags a copy would write: 0 also when the rule's
    ``media_types`` may skip them all (only GETs could tell); None when the source cannot
    say."""
    if setup.policy.media_types is not None:
        return 0
    try:
        listed = await setup.source.tags(src_repo)
    except RegsyncError:
        return None
    return sum(1 for t in listed.names if setup.policy.tags.in_scope(t))


async def _repair(
    engine: CopyEngine,
    src_repo: str,
    walk: _RepoWalk,
    tag: str,
    digest: str | None,
    missing: list[Missing],
    result: VerifyResult,
) -> None:
    """Copy what the tag lacks from the source, piece by piece, then check the tag again.

    Piece by piece (blobs by digest, child manifests by digest with all they reference) rather
    than the whole tag, so a tag copied as a platform subset, whose index the source never had,
    is repaired too. Only a tag that does not resolve at all is copied again by the source's tag.
    """
    ref = f"{walk.repo}:{tag}"
    try:
        if digest is None:
            desc = await engine.source.manifest_head(src_repo, tag)
            if desc is None:
                raise NotFoundError(f"source {src_repo}:{tag} no longer exists")
            digest = desc.digest
            await engine.copy_tag(src_repo, walk.repo, tag, digest)
        for item in missing:
            if item.kind == "blob":
                await engine.copy_blob(src_repo, walk.repo, walk.blob_descriptors[item.digest])
            elif item.digest == digest:
                await engine.copy_tag(src_repo, walk.repo, tag, digest)
            elif item.digest:
                child = await engine.get_manifest(src_repo, item.digest)
                await engine.copy_content(src_repo, walk.repo, child)
                await engine.push_manifest(walk.repo, item.digest, child)
        _, still = await _RepoWalk(walk.dest, walk.repo, VerifyResult("")).tag(tag)
    except RegsyncError as exc:
        result.errors.append(f"repair {ref}: {exc}")
        return
    if still:
        result.errors.append(f"repair {ref}: still lacks {len(still)} items")
        return
    result.repaired.append(ref)
    log.warning("verify: repaired %s (%s)", ref, digest)


def render_verify(results: Sequence[VerifyResult]) -> str:
    lines = []
    for r in results:
        state = "ok" if r.ok else "PROBLEMS"
        lines.append(
            f"verify {r.rule}: {state} - {r.repos} repos, {r.tags} tags, {r.manifests} manifests, "
            f"{r.blobs} blobs checked; {len(r.broken_tags)} tags incomplete, "
            f"{len(r.repaired)} repaired"
        )
        lines.extend(f"  missing {m.kind} {m.digest or '(tag)'} in {m.ref}" for m in r.missing)
        lines.extend(f"  repaired {ref}" for ref in r.repaired)
        lines.extend(f"  note: {n}" for n in orphans_note(r.orphans))
        lines.extend(f"  error: {e}" for e in r.errors)
    return "\n".join(lines)
