"""The plan: what a run would do to one repository, computed without I/O.

`check` prints plans; `once` executes them. Inputs are what the runner listed and HEADed:
the selected source tags with their digests and the destination's tags with theirs.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass


class Action(enum.Enum):
    COPY = "copy"  # destination lacks the tag or points elsewhere
    SKIP = "up_to_date"  # destination already has the source digest
    PRUNE = "prune"  # destination tag in scope that the source no longer has


@dataclass(frozen=True)
class TagAction:
    tag: str
    action: Action
    source_digest: str | None = None
    dest_digest: str | None = None
    reason: str = ""


@dataclass(frozen=True)
class RepoPlan:
    source_repo: str
    dest_repo: str
    actions: tuple[TagAction, ...]
    filtered: tuple[tuple[str, str], ...] = ()  # (tag, the filter that dropped it)

    def of(self, action: Action) -> list[TagAction]:
        return [a for a in self.actions if a.action is action]

    @property
    def in_sync(self) -> bool:
        return all(a.action is Action.SKIP for a in self.actions)


def plan_repo(
    source_repo: str,
    dest_repo: str,
    source: Mapping[str, str],
    dest: Mapping[str, str | None],
    filtered: tuple[tuple[str, str], ...] = (),
) -> RepoPlan:
    """Compare source tag->digest with destination tag->digest (None: tag absent)."""
    actions = []
    for tag in sorted(source):
        digest, current = source[tag], dest.get(tag)
        if current == digest:
            actions.append(TagAction(tag, Action.SKIP, digest, current))
        else:
            reason = "missing" if current is None else f"destination has {current[:19]}"
            actions.append(TagAction(tag, Action.COPY, digest, current, reason))
    return RepoPlan(source_repo, dest_repo, tuple(actions), filtered)
