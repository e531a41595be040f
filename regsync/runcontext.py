"""What the rules of one run share: the run's setup, per-destination ledgers, gates and
limits, and the hooks the copy engine reports through (``RunContext``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from regsync.backends import Backend
from regsync.backends.registry.observer import NullObserver, RequestObserver
from regsync.backends.registry.retry import RetryPolicy
from regsync.blobindex import BlobIndex
from regsync.blobledger import BlobLedger
from regsync.config import Config, Rule
from regsync.copy import CopyEngine
from regsync.errors import RegsyncError
from regsync.events import RunEvents
from regsync.execute import DeleteGuard
from regsync.oci.manifest import Descriptor
from regsync.oci.ref import DOCKER_HUB, Kind
from regsync.outages import Outages, WriteGate
from regsync.recorded import TagBook
from regsync.result import RuleResult
from regsync.session import RunSetup
from regsync.shard import Shard

# The runner's logger: its lines kept their logger name when this module was split off it.
log = logging.getLogger("regsync.runner")

IMAGE_CONCURRENCY = 16  # image copies in flight across the run


@dataclass
class RunContext:
    """What the rules of one run share: its setup, per-destination ledgers and limits."""

    config: Config
    setup: RunSetup  # the session, backends, and each rule's policy
    events: RunEvents
    dry_run: bool = False
    plan_only: bool = False
    missing_only: bool = False  # `once --missing`
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    observer: RequestObserver = field(default_factory=NullObserver)
    stop: asyncio.Event = field(default_factory=asyncio.Event)  # set: start no more copies
    images: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(IMAGE_CONCURRENCY))
    ledgers: dict[str, BlobLedger] = field(default_factory=dict)
    transfers: dict[str, asyncio.Semaphore] = field(default_factory=dict)
    guards: dict[str, DeleteGuard] = field(default_factory=dict)  # per rule
    shard: Shard = field(default_factory=Shard)
    index: BlobIndex | None = None  # holders seen by earlier runs (registry destinations)
    full: bool = False  # once --full: trust no recorded digest, HEAD every tag
    outages: Outages = field(default_factory=Outages)  # registries found unusable this run
    gates: dict[str, WriteGate] = field(default_factory=dict)  # per destination backend
    targets: Mapping[str, Mapping[str, str]] | None = None  # repo -> tag -> digest (events)

    def owned(self, rule: Rule, repos: list[str]) -> list[str]:
        """The repositories this agent's shard handles (all of them unless sharded)."""
        if self.shard.is_whole:
            return repos
        mine = [r for r in repos if self.shard.owns(rule.name, r)]
        log.info(
            "rule %s: shard %s takes %d of %d repositories",
            rule.name,
            self.shard,
            len(mine),
            len(repos),
        )
        return mine

    def engine(self, rule: Rule, result: RuleResult) -> CopyEngine:
        setup = self.setup.rule(rule)
        key = setup.destination.name  # one per pooled backend: a registry host, a layout
        limit = self.config.registry(rule.destination.registry).max_concurrency
        return CopyEngine(
            source=setup.source,
            destination=setup.destination,
            ledger=self.ledgers.setdefault(key, self._ledger(rule, setup.destination)),
            transfers=self.transfers.setdefault(key, asyncio.Semaphore(limit)),
            stats=result.stats,
            on_bytes=lambda n: self.events.bytes_copied(rule.name, n),
            on_blob=self._blob_hook(rule.name, key),
            retry=self.retry,
            observer=self.observer,
            on_transfer=self._transfer_hook(rule.name),
        )

    def counts_pulls(self, rule: Rule, destination: str) -> bool:
        """Whether a source manifest GET costs more than a HEAD here, so a tag the destination
        lacks is HEADed first (tags sharing a digest then cost one GET): always when planning
        only; on Docker Hub and registries with `rate_limit` (GETs are pulls); and until the
        destination accepted a copy in this run (one refusing writes costs one GET at most)."""
        source = rule.source
        gate = self.gates.get(destination)
        if self.dry_run or self.plan_only or gate is None or not gate.proven:
            return True
        if source.kind is not Kind.REGISTRY:
            return False
        limited = self.config.registry(source.registry).rate_limit is not None
        return limited or self.config.served_host(source.registry) == DOCKER_HUB

    async def listed_digests(self, rule: Rule, repo: str) -> dict[str, Descriptor] | None:
        """Docker Hub sources: every tag's digest from the Hub tags API (100 a request, no
        HEAD each); None when there is no such API or it fails (the tags are HEADed)."""
        if rule.source.kind is not Kind.REGISTRY:
            return None
        hub = self.setup.pool.hub(rule.source.registry)
        if hub is None:
            return None
        try:
            return await hub.tag_digests(repo)
        except RegsyncError as exc:
            log.warning("rule %s: %s: Hub tags API failed, HEADing tags: %s", rule.name, repo, exc)
            return None

    def placed(self, result: RuleResult, repo: str, tag: str) -> None:
        """An event-triggered run notes each tag an event named that is now in place (what
        ``triggers`` settles the events by); a cycle notes none: only counts, which stay exact
        (a 50,000-tag cycle kept 50,000 pairs until it ended)."""
        if self.targets is not None and tag in self.targets.get(repo, ()):
            result.placed.append((repo, tag))

    def book(self, rule: Rule) -> TagBook:
        """The rule's view of the recorded tag digests (none for layouts: HEADs are local)."""
        destination = self.setup.rule(rule).destination
        index = None if destination.shares_blobs else self.index
        return TagBook(index, rule.destination.registry, rule.full_check, self.full)

    def _ledger(self, rule: Rule, destination: Backend) -> BlobLedger:
        # A layout shares one blob store across its repositories: nothing to remember.
        index = None if destination.shares_blobs else self.index
        return BlobLedger(index=index, registry=rule.destination.registry)

    def _blob_hook(self, rule: str, destination: str) -> Callable[[str], None]:
        gate = self.gates.setdefault(destination, WriteGate())

        def hook(outcome: str) -> None:
            self.events.blob_done(rule, outcome)
            if outcome in ("copied", "mounted"):  # the destination took a write
                gate.prove()

        return hook

    def _transfer_hook(self, rule: str) -> Callable[[str, Descriptor, bool], None]:
        def hook(repo: str, desc: Descriptor, begins: bool) -> None:
            if begins:
                self.events.transfer_started(rule, repo, desc.digest, desc.size)
            else:
                self.events.transfer_finished(rule, repo, desc.digest)

        return hook
