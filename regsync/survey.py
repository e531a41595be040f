"""Survey one repository pair and plan it: list, select, HEAD, then diff and plan prune.

Cost, per repository: one listing per side, one HEAD per selected source tag and per selected
tag the destination has. Between full checks (``regsync.recorded``) a destination tag whose
recorded digest equals the source's is not HEADed, and a recorded immutable tag is HEADed on
neither side. Extra requests happen only where a policy needs them:

- a platform filter: one destination GET per source index the destination holds, to read the
  origin the subset records (never a source GET);
- referrers: HEADs of the signature/referrer tags of selected images, and one referrers-API
  probe per repository;
- prune with something to delete: HEADs of the remaining destination tags and GETs of the
  destination indexes among them (to see which digests kept tags still need).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from regsync import mediafilter, pruneplan, referrerfilter, referrers
from regsync.aio import bounded_map
from regsync.backends import Backend
from regsync.backup import BackupTemplate
from regsync.errors import ManifestError, RegsyncError
from regsync.mediafilter import ManifestFetch, MediaTypeFilter
from regsync.oci import mediatypes
from regsync.oci.artifacts import artifact_subject, is_fallback_tag
from regsync.oci.manifest import Descriptor, Manifest
from regsync.oci.ref import shown
from regsync.plan import Action, Origin, RepoPlan, TagAction, diff_tags, only_missing, with_backups
from regsync.platforms import PlatformFilter, recorded_origin
from regsync.pruneplan import PrunePolicy
from regsync.recorded import Recorded
from regsync.referrerfilter import ReferrerMatch
from regsync.tagpolicy import Filtered, TagPattern, TagPolicy, select

HEAD_CONCURRENCY = 32  # manifest HEADs/GETs in flight while planning one repository
SETTLE_DELAYS = (0.05, 0.1, 0.2, 0.4, 0.8)  # seconds between HEADs of a tag an event named


@dataclass(frozen=True)
class SyncPolicy:
    """Everything a rule decides about one repository, built by the runner from the rule."""

    tags: TagPolicy = field(default_factory=TagPolicy)
    platforms: PlatformFilter | None = None  # None: all platforms, digests preserved
    referrers: bool = False
    prune: PrunePolicy | None = None  # None: never delete
    missing_only: bool = False  # `once --missing`: copy absent tags only; never prune
    media_types: MediaTypeFilter | None = None  # None: every manifest type, any artifact
    referrer_filter: ReferrerMatch | None = None  # None: every referrer (when referrers)
    backup: BackupTemplate | None = None  # tag the overwritten destination image first
    immutable: tuple[TagPattern, ...] = ()  # tags.immutable


Fetch = Callable[[str, str], Awaitable[Manifest]]  # (repo, tag) -> the manifest, by one GET


class _Heads:
    """Bounded HEADs and GETs against one backend: ``limit`` requests in flight per repository,
    and tasks only for those (``bounded_map``), never one per tag of the listing."""

    def __init__(
        self,
        backend: Backend,
        repo: str,
        limit: asyncio.Semaphore,
        *,
        lenient: bool = False,
        fetch: Fetch | None = None,
    ) -> None:
        self.backend, self.repo, self.limit = backend, repo, limit
        # lenient (the source): a tag whose manifest or descriptor is malformed fails alone,
        # one line each in `refused`; the repository's other tags are still planned.
        self.lenient = lenient
        self.refused: list[str] = []
        self.fetch = fetch

    async def resolve(self, tags: Iterable[str]) -> dict[str, Descriptor]:
        """Tags the destination lacks: with ``fetch``, GET each directly (the copy needs the
        manifest anyway, and finds it cached: no HEAD first); else HEAD them."""
        if self.fetch is None:
            return await self.head(tags)
        tags = list(tags)
        found = await bounded_map(self._get, tags, HEAD_CONCURRENCY)
        return {t: d for t, d in zip(tags, found, strict=True) if d is not None}

    async def _get(self, tag: str) -> Descriptor | None:
        assert self.fetch is not None
        async with self.limit:
            try:
                manifest = await self.fetch(self.repo, tag)
            except RegsyncError:
                manifest = None  # gone, or bad: a HEAD decides as before (the copy reports it)
        if manifest is None:
            return await self._head(tag)
        return Descriptor(manifest.media_type, manifest.digest, len(manifest.raw))

    async def head(self, tags: Iterable[str]) -> dict[str, Descriptor]:
        tags = list(tags)
        found = await bounded_map(self._head, tags, HEAD_CONCURRENCY)
        return {t: d for t, d in zip(tags, found, strict=True) if d is not None}

    async def _head(self, tag: str) -> Descriptor | None:
        async with self.limit:
            try:
                return await self.backend.manifest_head(self.repo, tag)
            except ManifestError as exc:
                if not self.lenient:
                    raise
                self.refused.append(f"skipped source tag {shown(tag)}: {exc}")
                return None

    async def origins(self, tags: Iterable[str]) -> dict[str, Origin]:
        tags = list(tags)
        found = await bounded_map(self._origin, tags, HEAD_CONCURRENCY)
        return dict(zip(tags, found, strict=True))

    async def _origin(self, tag: str) -> Origin:
        async with self.limit:
            manifest = await self.backend.manifest_get(self.repo, tag)
        return Origin(*recorded_origin(manifest))

    async def children(self, tags: Iterable[str]) -> dict[str, frozenset[str]]:
        tags = list(tags)

        async def one(tag: str) -> frozenset[str]:
            async with self.limit:
                manifest = await self.backend.manifest_get(self.repo, tag)
            return frozenset(c.digest for c in manifest.children)

        found = await bounded_map(one, tags, HEAD_CONCURRENCY)
        return dict(zip(tags, found, strict=True))


async def survey(
    source: Backend,
    dest: Backend,
    repo: str,
    dest_repo: str,
    policy: SyncPolicy,
    fetch: ManifestFetch | None = None,
    recorded: Recorded | None = None,
    get_tag: Fetch | None = None,
    listed: Mapping[str, Descriptor] | None = None,
) -> RepoPlan:
    """Plan one repository: what to copy, what is up to date, what to prune, and why.

    ``fetch`` reads a source manifest by digest (the copy engine's cached GET, so a manifest
    read for ``media_types`` is not fetched again by its copy); default: ``source``'s own.
    ``recorded``: what the content index holds for ``dest_repo`` (None: trust nothing).
    ``get_tag``: how a copying run GETs a source tag the destination lacks (None: HEAD it).
    ``listed``: source digests a listing gave (Docker Hub's tags API): no HEAD for those.
    """
    source_listed, dest_listed = await asyncio.gather(source.tags(repo), dest.tags(dest_repo))
    source_tags, dest_tags = list(source_listed.names), list(dest_listed.names)
    skipped = source_listed.skipped("source tag") + dest_listed.skipped("destination tag")
    skipped_more = source_listed.unquoted + dest_listed.unquoted
    present = set(dest_tags)
    limit = asyncio.Semaphore(HEAD_CONCURRENCY)
    # media_types decides from a HEAD's type: a tag it skips is never read.
    get_tag = get_tag if policy.media_types is None else None
    src = _Heads(source, repo, limit, lenient=True, fetch=get_tag)
    dst = _Heads(dest, dest_repo, limit)
    selection = select(policy.tags, source_tags)
    rec = recorded or Recorded()
    trusted = {
        t: d for t, d in rec.trusted().items() if t in present and not _has_origin(t, d, policy)
    }
    fixed = {t: trusted[t] for t in selection.selected if t in trusted and rec.is_immutable(t)}
    fixed |= _from_listing(listed or {}, selection.selected, policy, fixed)
    # Both sides' HEADs of the selected tags run together (one round trip of latency, not
    # two); a destination HEAD is kept only where the source tag resolved.
    asked = [t for t in selection.selected if t in present and t not in trusted]
    unknown = [t for t in selection.selected if t not in fixed]
    source_heads, dest_selected, missing = await asyncio.gather(
        src.head(t for t in unknown if t in present),
        dst.head(asked),
        src.resolve(t for t in unknown if t not in present),
    )
    source_heads |= missing | fixed
    artifact_of: dict[str, str] = {}
    if policy.referrers:
        artifact_of = _artifacts_of(source_tags, source_heads)
        source_heads |= await src.head(artifact_of)
    headed = set(asked)
    dest_heads = {t: d for t, d in dest_selected.items() if t in source_heads}
    # A recorded digest stands for the destination's only where the source still has it.
    dest_heads |= {
        t: trusted[t]
        for t, d in source_heads.items()
        if t in trusted and trusted[t].digest == d.digest
    }
    headed |= dest_heads.keys()
    dest_heads |= await dst.head(t for t in source_heads if t in present and t not in headed)
    reader = _Reader(repo, fetch or source.manifest_get)
    actions, origins, media = await _decide(
        dst, source_heads, dest_heads, policy, artifact_of, reader
    )
    dropped = {f.tag for f in media}  # built once, not once per source tag
    source_heads = {t: d for t, d in source_heads.items() if t not in dropped}
    plan = RepoPlan(repo, dest_repo, actions, selection.filtered + media, selection.selected)
    plan = replace(
        plan,
        dest_empty=not dest_tags,
        source_missing=source_listed.missing,
        skipped=skipped + tuple(src.refused),
        skipped_more=skipped_more,
    )
    if policy.referrers:
        plan = await referrers.plan_api(
            source, dest, plan, source_heads, present, policy.referrer_filter
        )
    if policy.missing_only:
        return replace(plan, actions=only_missing(plan.actions))
    if policy.prune is None:
        return plan
    return await _plan_prune(plan, policy, source_tags, dest_tags, dest_heads, dst, origins)


async def survey_tags(
    source: Backend,
    dest: Backend,
    repo: str,
    dest_repo: str,
    policy: SyncPolicy,
    hints: Mapping[str, str],
    fetch: ManifestFetch | None = None,
) -> RepoPlan:
    """Plan only the tags registry events named (tag -> the event's digest, "" if none):
    COPY or SKIP each.

    The tag policy decides by name first (no request for a tag it drops); ``latest`` needs
    the source listing, so only then is it read, or when a copy would make a backup (a backup
    name another mirrored source tag has is refused, as in a cycle). The source's HEAD
    decides the digest: an event's digest is a hint only. distribution sends a push event
    before it links the tag, so a tag that is missing or still on another digest is HEADed
    again a few times (``SETTLE_DELAYS``) before the source's answer is taken; a tag the
    source does not have gets no action. No prune and no referrers here: the periodic cycle
    does those.
    """
    wanted = sorted(t for t in hints if policy.tags.in_scope(t))
    chosen: set[str] | None = None
    if wanted and policy.tags.latest is not None:
        chosen = set(select(policy.tags, (await source.tags(repo)).names).selected)
        wanted = [t for t in wanted if t in chosen]
    limit = asyncio.Semaphore(HEAD_CONCURRENCY)
    src, dst = _Heads(source, repo, limit, lenient=True), _Heads(dest, dest_repo, limit)
    source_heads, dest_heads = await asyncio.gather(src.head(wanted), dst.head(wanted))
    for delay in SETTLE_DELAYS:
        unsettled = [t for t in wanted if hints[t] and _digest(source_heads, t) != hints[t]]
        if not unsettled:
            break
        await asyncio.sleep(delay)
        source_heads |= await src.head(unsettled)
    dest_heads = {t: d for t, d in dest_heads.items() if t in source_heads}
    reader = _Reader(repo, fetch or source.manifest_get)
    actions, _, media = await _decide(dst, source_heads, dest_heads, policy, {}, reader)
    if any(a.backup and not a.backup_clash for a in actions):  # as a cycle: any mirrored tag
        if chosen is None:
            chosen = set(select(policy.tags, (await source.tags(repo)).names).selected)
        actions = tuple(
            replace(a, backup_clash=a.backup_clash or a.backup in chosen) for a in actions
        )
    return RepoPlan(
        repo, dest_repo, actions, media, selected=tuple(wanted), skipped=tuple(src.refused)
    )


def _digest(heads: Mapping[str, Descriptor], tag: str) -> str | None:
    found = heads.get(tag)
    return found.digest if found is not None else None


async def _decide(
    dst: _Heads,
    source_heads: dict[str, Descriptor],
    dest_heads: dict[str, Descriptor],
    policy: SyncPolicy,
    artifact_of: dict[str, str],
    reader: _Reader,
) -> tuple[tuple[TagAction, ...], dict[str, Origin], tuple[Filtered, ...]]:
    """COPY or SKIP per HEADed source tag (reading recorded origins where subsets may be),
    and the tags the rule's media_types skipped."""
    origins = await dst.origins(
        t
        for t, d in source_heads.items()
        if t in dest_heads and dest_heads[t].digest != d.digest and _has_origin(t, d, policy)
    )
    actions = diff_tags(
        {t: d.digest for t, d in source_heads.items()},
        {t: d.digest for t, d in dest_heads.items()},
        origins=origins,
        platforms=policy.platforms.label if policy.platforms else "",
        artifact_of=artifact_of,
    )
    actions = _annotate(actions, source_heads, {d.digest for d in dest_heads.values()})
    if policy.platforms is not None:
        actions = _mark_subsets(actions, source_heads, policy.platforms.label)
    actions = with_backups(actions, policy.backup)
    skipped: tuple[Filtered, ...] = ()
    if policy.media_types is not None:
        actions, skipped = await mediafilter.apply(
            policy.media_types, actions, source_heads, reader.repo, reader.fetch
        )
    if policy.referrer_filter is not None:
        actions, more = await referrerfilter.apply(
            policy.referrer_filter, actions, reader.repo, reader.fetch
        )
        skipped += more
    return actions, origins, skipped


@dataclass(frozen=True)
class _Reader:
    """Where ``media_types`` reads source manifests from."""

    repo: str
    fetch: ManifestFetch


def _artifacts_of(source_tags: Iterable[str], heads: dict[str, Descriptor]) -> dict[str, str]:
    """Signature/referrer tag -> the digest of the selected image it belongs to."""
    digests = {d.digest for d in heads.values()}
    subjects = {t: artifact_subject(t) for t in source_tags}
    return {t: s for t, s in subjects.items() if s is not None and s in digests}


def _from_listing(
    listed: Mapping[str, Descriptor],
    selected: Iterable[str],
    policy: SyncPolicy,
    known: Mapping[str, Descriptor],
) -> dict[str, Descriptor]:
    """The selected tags a listing gave a digest for; without the media type, only where the
    rule does not decide by it (platforms, media_types): those tags are HEADed instead."""
    typed = policy.platforms is not None or policy.media_types is not None
    return {
        t: listed[t]
        for t in selected
        if t in listed and t not in known and (listed[t].media_type or not typed)
    }


def _annotate(
    actions: tuple[TagAction, ...], heads: dict[str, Descriptor], held: set[str]
) -> tuple[TagAction, ...]:
    """Each action's source media type; COPY of a digest another destination tag has: held."""
    return tuple(
        replace(
            a,
            media_type=heads[a.tag].media_type,
            held=a.action is Action.COPY and a.source_digest in held,
        )
        for a in actions
    )


def _mark_subsets(
    actions: tuple[TagAction, ...], heads: dict[str, Descriptor], label: str
) -> tuple[TagAction, ...]:
    """Copies of source indexes under a platform filter will be subsets: say so up front."""
    return tuple(
        replace(a, subset=label)
        if a.action is Action.COPY
        and not a.artifact_of
        and heads[a.tag].media_type in mediatypes.INDEXES
        else a
        for a in actions
    )


def _has_origin(tag: str, desc: Descriptor, policy: SyncPolicy) -> bool:
    """Whether the destination copy of ``tag`` may be one regsync rewrote (and says so)."""
    if artifact_subject(tag) is not None:
        return is_fallback_tag(tag)  # fallback indexes are merged, not copied
    return policy.platforms is not None and desc.media_type in mediatypes.INDEXES


async def _plan_prune(
    plan: RepoPlan,
    policy: SyncPolicy,
    source_tags: list[str],
    dest_tags: list[str],
    dest_heads: dict[str, Descriptor],
    dst: _Heads,
    origins: dict[str, Origin],
) -> RepoPlan:
    assert policy.prune is not None
    wanted = set(plan.selected) | {a.tag for a in plan.actions}
    doomed = pruneplan.candidates(policy.tags, dest_tags, wanted, policy.referrers)
    if not doomed:
        return plan
    # Something may go: learn every destination tag's digest, and what kept indexes need.
    heads = dest_heads | await dst.head(t for t in dest_tags if t not in dest_heads)
    kept_indexes = [
        t for t, d in heads.items() if t not in doomed and d.media_type in mediatypes.INDEXES
    ]
    children = await dst.children(kept_indexes)
    sources = await _subset_sources(policy, heads, origins, doomed, dst)
    digests = {t: d.digest for t, d in heads.items()}
    decision = pruneplan.plan_prune(
        policy.prune,
        policy.tags,
        pruneplan.Listing(source_tags, dest_tags, digests, children, sources),
        wanted,
        referrers_follow=policy.referrers,
    )
    return replace(
        plan, actions=plan.actions + decision.actions, refusals=plan.refusals + decision.refusals
    )


async def _subset_sources(
    policy: SyncPolicy,
    heads: dict[str, Descriptor],
    origins: dict[str, Origin],
    doomed: set[str],
    dst: _Heads,
) -> dict[str, str]:
    """Destination subset digest -> the source index digest it was made from.

    Signature and referrer tags name the source digest, so prune needs this to match them to
    a subset. The tags the source still has were read already (``origins``); a subset about
    to be pruned costs one destination GET, and only with referrers and platforms both set.
    """
    if not policy.referrers or policy.platforms is None:
        return {}
    unread = [
        t
        for t in sorted(doomed)
        if t in heads and t not in origins and heads[t].media_type in mediatypes.INDEXES
    ]
    known = origins | await dst.origins(unread)
    return {
        heads[t].digest: o.source_digest
        for t, o in known.items()
        if t in heads and o.source_digest is not None and artifact_subject(t) is None
    }
