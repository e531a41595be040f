"""The blob ledger: what one destination is known to hold during a run, and where a blob it
lacks can be mounted from.

Shared by every rule writing to that destination. The copy engine (``regsync.copy``) asks it
before sending bytes and records each blob it places; with the persistent content index
(``regsync.blobindex``) what it learns outlives the run and earlier runs' holders are offered
as mount sources. A hint only: whether the source owns a blob is proven by the copy engine
(invariant 10), never taken from here.
"""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from regsync.keyedlocks import KeyedLocks
from regsync.lru import LRU

if TYPE_CHECKING:
    from regsync.blobindex import BlobIndex


@dataclass
class BlobLedger:
    """What one destination is known to hold in this run, shared by every rule writing to it.

    With an `index` (a registry destination), what it learns is also remembered across runs,
    and `known_holders` answers from what earlier runs saw.
    """

    # digest -> repositories, for the most recently used digests (``regsync.lru``)
    locations: LRU[str, set[str]] = field(default_factory=LRU)
    _locks: KeyedLocks[str] = field(default_factory=KeyedLocks)  # per digest, while in use
    index: BlobIndex | None = None
    registry: str = ""  # the index's key for this destination
    # Whether earlier runs left holders for this destination, asked once per ledger (a run).
    # While `locations` has forgotten nothing, this run's own rows are all in it: an index
    # that had nothing when the run began has nothing to add, whatever the run flushes since.
    _earlier: bool | None = None

    def lock(self, digest: str) -> AbstractAsyncContextManager[None]:
        return self._locks.hold(digest)

    def record(self, digest: str, repo: str) -> None:
        self.locations.setdefault(digest, set()).add(repo)
        if self.index is not None:
            self.index.record(self.registry, digest, repo)

    async def known_holders(self, digest: str, repo: str) -> list[str]:
        """Repositories earlier runs saw holding `digest` (hints: a mount may still fail)."""
        if self.index is None:
            return []
        # Off the loop thread, the first ask too: opening the file or waiting on another
        # process's commit (the busy timeout) would stall every transfer of the run.
        if self._earlier is None:
            known = self.index.known(self.registry)
            if known is None:
                known = await asyncio.to_thread(self.index.knows, self.registry)
            self._earlier = known
        if not self._earlier and len(self.locations) < self.locations.size:
            return []  # a first copy into a new destination asks nothing per blob
        found = await asyncio.to_thread(self.index.holders, self.registry, digest)
        tried = self.locations.get(digest) or set()
        return [r for r in found if r != repo and r not in tried]

    def forget(self, digest: str, repo: str) -> None:
        if self.index is not None:
            self.index.forget(self.registry, digest, repo)

    async def flush(self) -> None:
        """Commit what was learned once enough is buffered (off the loop thread)."""
        if self.index is not None:
            await self.index.flush_batch()

    def holds(self, digest: str, repo: str) -> bool:
        return repo in (self.locations.get(digest) or ())

    def elsewhere(self, digest: str, repo: str) -> str | None:
        return next((r for r in sorted(self.locations.get(digest) or ()) if r != repo), None)
