"""Prune planning: the destination tags in a rule's scope that the source no longer selects.

Scope is the destination repositories the rule maps to, and in them the tags the rule's name
filters (include, exclude, semver) select; with ``referrers: true`` also the signature and
referrer tags of those images. Nothing else is ever touched: a hand-pushed ``local-1`` survives.

Safety rails, in the order they apply (``plan_prune``):

1. A repository whose source listing failed or was cut short never gets here (the survey
   raised). One whose source listed no tags at all is not pruned unless ``allow_empty``.
2. A repository where the deletions would exceed ``max_fraction`` of the tags the rule manages
   there is not pruned at all, and the run says so.
3. A kept tag is never removed. A delete by digest drops every tag on that digest, so it is
   used only when nothing kept needs the digest; a digest a kept or foreign tag also points at
   (or a kept index lists as a child, or this run copies) is removed tag by tag with
   ``Backend.tag_delete``, which touches no other tag (on a registry that deletes by digest
   only, through a placeholder manifest). A tag counts as pruned once the backend confirmed it.
4. A registry refusing deletes (405 UNSUPPORTED) yields one error per rule, not one per tag.

Planning is pure (names and digests in, PRUNE actions or a refusal out); the survey gathers
the inputs and ``regsync.execute`` carries the actions out. The runner prunes a repository after
its copies, and only if no copy of the rule failed in that run, so a failed copy never turns
into a smaller mirror.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from regsync.oci.artifacts import artifact_subject
from regsync.plan import Action, TagAction
from regsync.tagpolicy import TagPolicy


@dataclass(frozen=True)
class PrunePolicy:
    allow_empty: bool = False
    max_fraction: float = 0.5


@dataclass(frozen=True)
class Listing:
    """What the survey learnt: both listings, destination digests, kept indexes' children."""

    source_tags: Sequence[str]
    dest_tags: Sequence[str]
    dest_digests: Mapping[str, str]  # destination tag -> digest
    children: Mapping[str, frozenset[str]] = field(default_factory=dict)  # kept index tag -> ...
    # destination digest -> the source digest it was made from, where they differ (a platform
    # subset records it): signature and referrer tags name the source digest.
    sources: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PruneDecision:
    actions: tuple[TagAction, ...] = ()
    refusals: tuple[str, ...] = ()


def candidates(
    tags: TagPolicy, dest_tags: Sequence[str], wanted: Collection[str], follow: bool
) -> set[str]:
    """Destination tags that may go, judged by name: managed by the rule, not wanted by it."""
    out = {t for t in dest_tags if t not in wanted and tags.in_scope(t)}
    if follow:
        out |= {t for t in dest_tags if t not in wanted and artifact_subject(t) is not None}
    return out


def plan_prune(
    policy: PrunePolicy,
    tags: TagPolicy,
    listing: Listing,
    wanted: Collection[str],
    *,
    referrers_follow: bool = False,
) -> PruneDecision:
    """The PRUNE actions for one repository, or the refusal of a safety rail."""
    digests = listing.dest_digests
    managed = [t for t in listing.dest_tags if tags.in_scope(t)]
    images = sorted(t for t in managed if t not in wanted and t in digests)
    if not images and not referrers_follow:
        return PruneDecision()
    if images and not listing.source_tags and not policy.allow_empty:
        return PruneDecision(
            refusals=(
                f"prune skipped: the source listed no tags, so {len(images)} would go; "
                "set prune.allow_empty: true if the source is really empty",
            )
        )
    if len(images) > policy.max_fraction * len(managed):
        share = len(images) / len(managed)
        return PruneDecision(
            refusals=(
                f"prune refused: it would delete {len(images)} of {len(managed)} tags "
                f"({share:.0%}), over prune.max_fraction {policy.max_fraction:g}; "
                "raise max_fraction or delete them by hand",
            )
        )
    doomed = set(images)
    if referrers_follow:
        doomed |= _orphaned_artifacts(listing, managed, wanted)
    actions = [
        _action(t, listing, wanted, doomed, "not selected from the source any more")
        for t in sorted(doomed)
    ]
    return PruneDecision(tuple(actions))


def _orphaned_artifacts(
    listing: Listing, managed: Sequence[str], wanted: Collection[str]
) -> set[str]:
    """Signature/referrer tags of managed images that the source no longer has for them."""
    digests = listing.dest_digests
    managed_digests = {digests[t] for t in managed if t in digests}
    subjects = managed_digests | {listing.sources.get(d, d) for d in managed_digests}
    return {
        t
        for t in listing.dest_tags
        if t not in wanted and t in digests and artifact_subject(t) in subjects
    }


def _action(
    tag: str, listing: Listing, wanted: Collection[str], doomed: set[str], why: str
) -> TagAction:
    digest = listing.dest_digests[tag]
    holders = sorted(t for t, d in listing.dest_digests.items() if d == digest and t not in doomed)
    parents = sorted(t for t, kids in listing.children.items() if digest in kids)
    shared = tuple(dict.fromkeys(holders + parents))
    if artifact_subject(tag) is not None:
        why = "signature/referrer of an image no longer mirrored"
    if tag not in wanted and shared:
        why += f"; shares its digest with {', '.join(shared)}, so only the tag may go"
    return TagAction(tag, Action.PRUNE, None, digest, why, shared=shared)
