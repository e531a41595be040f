"""What a cycle trusts between full checks: the digest this mirror last put at, or confirmed
with a HEAD, for each destination tag (rows of the content index, ``regsync.blobindex``).

- A selected tag the destination still lists, whose recorded digest equals the source's
  current digest, is up to date without a destination HEAD.
- A tag matching ``tags.immutable`` that is recorded and listed costs no HEAD on either side:
  its recorded digest stands for the source's too.
- Every ``full_check`` (a rule key, default 24h), under ``once --full``, and whenever the index
  has no full check of the repository (missing, corrupt, new), the cycle trusts nothing: it
  HEADs every tag as before, and what it confirms replaces the records. An immutable tag whose
  source digest moved is then a warning naming both digests; the mirror follows the source.

Why it is safe: a record is only ever what this mirror wrote or saw answered by a HEAD; both
listings are read every cycle, so a tag deleted on either side is acted on at once; a tag
re-pointed behind the mirror's back is healed at the next full check; ``verify`` trusts
nothing. Platform subsets and merged referrer indexes (whose destination digest differs from
the source's by design) are never recorded: they are HEADed every cycle as before.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta

from regsync.blobindex import BlobIndex
from regsync.oci.artifacts import is_fallback_tag
from regsync.oci.manifest import Descriptor
from regsync.plan import Action, RepoPlan, TagAction
from regsync.tagpolicy import TagPattern

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recorded:
    """One destination repository's records as a survey reads them."""

    tags: dict[str, Descriptor] = field(default_factory=dict)  # tag -> what was recorded
    full: bool = True  # a full check: trust nothing, HEAD everything
    immutable: tuple[TagPattern, ...] = ()

    def trusted(self) -> dict[str, Descriptor]:
        """What may stand in for a destination HEAD this cycle."""
        return {} if self.full else self.tags

    def is_immutable(self, tag: str) -> bool:
        return any(p.fullmatch(tag) for p in self.immutable)


def recordable(action: TagAction) -> bool:
    """Whether the destination tag holds exactly the source digest (not a subset or merge)."""
    if action.subset or action.source_digest is None:
        return False
    return not (action.artifact_of and is_fallback_tag(action.tag))


class TagBook:
    """The records of one destination registry, for the runner: read before a survey, written
    after it (what a full check confirmed), after each copy and after each prune."""

    def __init__(
        self, index: BlobIndex | None, registry: str, full_check: timedelta, force_full: bool
    ) -> None:
        self.index, self.registry = index, registry
        self.full_check, self.force_full = full_check.total_seconds(), force_full

    async def load(self, dest_repo: str, immutable: tuple[TagPattern, ...]) -> Recorded:
        if self.index is None:
            return Recorded(immutable=immutable)
        # Off the loop thread: opening the file or waiting on another process's commit.
        found = await asyncio.to_thread(self.index.tags_of, self.registry, dest_repo)
        full = (
            self.force_full
            or found.checked is None
            or time.time() - found.checked >= self.full_check
        )
        tags = {t: Descriptor(mt, d, 0) for t, (d, mt) in found.digests.items()}
        return Recorded(tags, full, immutable)

    def planned(self, plan: RepoPlan, recorded: Recorded) -> list[str]:
        """Record what the survey confirmed; returns a warning per immutable tag that moved."""
        if self.index is None:
            return []
        if recorded.full:
            self.index.checked(self.registry, plan.dest_repo)
        for action in plan.actions:
            if action.action is not Action.SKIP or not recordable(action):
                continue
            old = recorded.tags.get(action.tag)
            if recorded.full or old is None or old.digest != action.source_digest:
                self._put(plan.dest_repo, action)
        return _moved(plan, recorded) if recorded.full else []

    def copied(self, dest_repo: str, action: TagAction) -> None:
        if self.index is not None and recordable(action):
            self._put(dest_repo, action)

    def pruned(self, dest_repo: str, tags: Iterable[str]) -> None:
        if self.index is not None:
            for tag in tags:
                self.index.drop_tag(self.registry, dest_repo, tag)

    async def flush(self) -> None:
        """Commit the records once a batch is buffered, as each repository is planned and
        copied: a 50,000-tag full check no longer holds every row until the run ends. What a
        crash leaves is true: a full check's rows follow its ``checked`` mark, in order, and a
        repository whose rows were not all committed only loses rows (HEADed next time)."""
        if self.index is not None:
            await self.index.flush_batch()

    def _put(self, dest_repo: str, action: TagAction) -> None:
        assert self.index is not None and action.source_digest is not None
        self.index.put_tag(
            self.registry, dest_repo, action.tag, action.source_digest, action.media_type
        )


def _moved(plan: RepoPlan, recorded: Recorded) -> list[str]:
    out = []
    for action in plan.actions:
        old = recorded.tags.get(action.tag)
        if (
            action.action is not Action.PRUNE
            and old is not None
            and action.source_digest is not None
            and old.digest != action.source_digest
            and recorded.is_immutable(action.tag)
        ):
            out.append(
                f"{plan.source_repo}:{action.tag}: immutable tag changed at the source from "
                f"{old.digest} to {action.source_digest}; the mirror follows the source"
            )
    return out
