"""A rule's ``media_types``: which manifests it copies, decided while planning.

Entries that are manifest media types (the four image index and manifest types) are matched
against what the source's HEAD announced, at no cost. Any other entry is an artifact type: when
the list names one, an image manifest about to be copied is read (the GET its copy makes anyway,
shared through the copy engine's cache) and kept only if its ``artifactType``, else its config's
media type, is listed: list the image config types to keep images and skip Helm charts and
other artifacts. Signature and referrer tags are never filtered here (``referrers`` decides).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from regsync.errors import RegsyncError
from regsync.oci import mediatypes
from regsync.oci.manifest import Descriptor, Manifest
from regsync.oci.ref import printable
from regsync.plan import Action, TagAction
from regsync.tagpolicy import Filtered

ManifestFetch = Callable[[str, str], Awaitable[Manifest]]  # (repo, digest) -> source manifest
T = TypeVar("T")


@dataclass(frozen=True)
class MediaTypeFilter:
    allowed: frozenset[str]

    @property
    def checks_artifacts(self) -> bool:
        return bool(self.allowed - mediatypes.MANIFESTS)

    def refusal(self, media_type: str) -> str | None:
        if media_type in self.allowed:
            return None
        return f"media type {printable(media_type)} is not in media_types"

    def artifact_refusal(self, manifest: Manifest) -> str | None:
        kind = manifest.artifact_type
        if manifest.is_index or not self.checks_artifacts or kind in self.allowed:
            return None
        return f"artifact type {printable(kind) or '(none)'} is not in media_types"


async def apply(
    media: MediaTypeFilter,
    actions: tuple[TagAction, ...],
    heads: dict[str, Descriptor],
    repo: str,
    fetch: ManifestFetch,
) -> tuple[tuple[TagAction, ...], tuple[Filtered, ...]]:
    """The actions ``media`` keeps, and the tags it skipped with the reason."""
    wanted = [
        a
        for a in actions
        if media.checks_artifacts
        and a.action is Action.COPY
        and not a.artifact_of
        and a.tag in heads
        and heads[a.tag].media_type in media.allowed
    ]
    refusals = await decide_each(fetch, repo, wanted, media.artifact_refusal)
    kept: list[TagAction] = []
    skipped: list[Filtered] = []
    for action in actions:
        why = None
        if not action.artifact_of and action.tag in heads:
            why = media.refusal(heads[action.tag].media_type)
            if why is None:
                why = refusals.get(action.tag)
        if why is None:
            kept.append(action)
        else:
            skipped.append(Filtered(action.tag, "media_types", why))
    # Signatures and referrers of images skipped here go with them.
    gone = {heads[f.tag].digest for f in skipped} - {
        heads[a.tag].digest for a in kept if a.tag in heads and not a.artifact_of
    }
    orphans = [a for a in kept if a.artifact_of in gone]
    skipped += [Filtered(a.tag, "media_types", "belongs to a skipped image") for a in orphans]
    dropped = set(orphans)  # a list's `in` made this quadratic on large repositories
    return tuple(a for a in kept if a not in dropped), tuple(skipped)


READ_CONCURRENCY = 32  # manifests read at once while deciding (as planning's HEADs)


async def decide_each(
    fetch: ManifestFetch,
    repo: str,
    actions: list[TagAction],
    decide: Callable[[Manifest], T],
) -> dict[str, T]:
    """``decide`` of each action's source manifest, by tag: a few read at a time, each let go
    once decided, so what planning holds is the decisions, not every manifest the listing
    names (the copy engine's cache keeps what it can, within its budget). One that cannot be
    read is left out: the tag's copy reads it again and fails alone, naming why; its
    repository's other tags go on."""
    from regsync.aio import bounded_map  # here: the config models import this module

    async def one(action: TagAction) -> tuple[str, T] | None:
        try:
            manifest = await fetch(repo, str(action.source_digest))
        except RegsyncError:
            return None
        return action.tag, decide(manifest)

    found = await bounded_map(one, actions, READ_CONCURRENCY)
    return dict(pair for pair in found if pair is not None)
