"""The plan: what a run would do to one repository, computed without I/O.

`check` prints plans; `once` executes them. Inputs are what the survey listed and HEADed:
the selected source tags with their digests and the destination's tags with theirs.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from regsync.backup import BackupTemplate
from regsync.tagpolicy import Filtered


class Action(enum.Enum):
    COPY = "copy"  # destination lacks the tag or points elsewhere
    SKIP = "up_to_date"  # destination already has the source digest
    PRUNE = "prune"  # destination tag in scope that the source no longer has
    DIFFERS = "differs"  # `once --missing`: destination has another digest, left as is


@dataclass(frozen=True)
class TagAction:
    tag: str
    action: Action
    source_digest: str | None = None
    dest_digest: str | None = None
    reason: str = ""
    subset: str = ""  # platforms the destination holds, when it is a platform subset
    artifact_of: str = ""  # for a referrer/signature tag: the image digest it belongs to
    via_api: bool = False  # referrers found through the source's referrers API
    shared: tuple[str, ...] = ()  # PRUNE: kept tags still needing dest_digest (delete by tag)
    media_type: str = ""  # COPY/SKIP: the source manifest's media type (what the index records)
    held: bool = False  # COPY: another tag of the destination repository has source_digest
    backup: str = ""  # COPY over another digest: first tag dest_digest as this (rule `backup`)
    backup_clash: bool = False  # ``backup`` is a tag the source has too: refused, tag fails


@dataclass(frozen=True)
class RepoPlan:
    source_repo: str
    dest_repo: str
    actions: tuple[TagAction, ...]
    filtered: tuple[Filtered, ...] = ()  # source tags a filter dropped, with the filter
    selected: tuple[str, ...] = ()  # source tags the filters kept
    refusals: tuple[str, ...] = ()  # why a safety rail stopped this repo's prune
    dest_empty: bool = False  # the destination repository listed no tags at all
    source_missing: bool = False  # the source has no such repository (its tags/list is 404)
    skipped: tuple[str, ...] = ()  # listed tag names refused by the grammar, one line each
    skipped_more: int = 0  # refused tag names beyond those quoted in `skipped`

    def of(self, action: Action) -> list[TagAction]:
        return [a for a in self.actions if a.action is action]

    @property
    def drift(self) -> int:
        """Tags this plan would change, or (DIFFERS) leaves differing on purpose."""
        return sum(1 for a in self.actions if a.action is not Action.SKIP)

    @property
    def in_sync(self) -> bool:
        return all(a.action is Action.SKIP for a in self.actions)


@dataclass(frozen=True)
class Origin:
    """What a destination platform subset records about the source it was made from."""

    source_digest: str | None  # None: the destination is not a subset regsync made
    platforms: str = ""


def diff_tags(
    source: Mapping[str, str],
    dest: Mapping[str, str | None],
    *,
    origins: Mapping[str, Origin] | None = None,
    platforms: str = "",
    artifact_of: Mapping[str, str] | None = None,
) -> tuple[TagAction, ...]:
    """COPY or SKIP per source tag.

    A tag in ``origins`` is a source index under a platform filter: its destination digest
    differs by design, so it is up to date when the recorded origin matches the source digest
    and the wanted ``platforms`` instead.
    """
    actions = []
    for tag in sorted(source):
        digest, current = source[tag], dest.get(tag)
        owner = (artifact_of or {}).get(tag, "")
        origin = (origins or {}).get(tag)
        if origin is not None and current is not None:
            wanted = "" if owner else platforms  # referrer indexes are merged, not filtered
            actions.append(_subset_action(tag, digest, current, origin, wanted, owner))
        elif current == digest:
            actions.append(TagAction(tag, Action.SKIP, digest, current, artifact_of=owner))
        else:
            reason = "missing" if current is None else f"destination has {current[:19]}"
            actions.append(TagAction(tag, Action.COPY, digest, current, reason, artifact_of=owner))
    return tuple(actions)


def _subset_action(
    tag: str, digest: str, current: str, origin: Origin, platforms: str, owner: str
) -> TagAction:
    if origin.source_digest == digest and origin.platforms == platforms:
        what = f"platform subset ({platforms})" if platforms else "merged referrers index"
        reason = f"{what} of {digest[:19]}"
        return TagAction(tag, Action.SKIP, digest, current, reason, platforms, owner)
    if origin.source_digest is None:
        reason = f"destination is not a {platforms} subset" if platforms else "destination differs"
    elif origin.source_digest != digest:
        reason = f"source changed since the subset of {origin.source_digest[:19]}"
    else:
        reason = f"platforms changed from {origin.platforms}"
    return TagAction(tag, Action.COPY, digest, current, reason, artifact_of=owner)


def only_missing(actions: tuple[TagAction, ...]) -> tuple[TagAction, ...]:
    """``once --missing``: copy only tags the destination lacks; a tag it holds with another
    digest becomes DIFFERS (reported as drift, never overwritten)."""
    return tuple(
        replace(
            a,
            action=Action.DIFFERS,
            reason=f"{a.reason}; left as is (--missing)",
            backup="",
            backup_clash=False,
        )
        if a.action is Action.COPY and a.dest_digest is not None
        else a
        for a in actions
    )


def with_backups(
    actions: tuple[TagAction, ...], template: BackupTemplate | None, now: datetime | None = None
) -> tuple[TagAction, ...]:
    """COPY actions that overwrite another digest name the backup tag they first make; a name
    that is one of the tags planned from the source is marked ``backup_clash`` (the backup
    would overwrite a tag the rule mirrors)."""
    if template is None:
        return actions
    mirrored = {a.tag for a in actions}
    out = []
    for a in actions:
        if a.action is Action.COPY and a.dest_digest is not None and not a.artifact_of:
            name = template.name(a.tag, a.dest_digest, now)
            a = replace(a, backup=name, backup_clash=name in mirrored)
        out.append(a)
    return tuple(out)
