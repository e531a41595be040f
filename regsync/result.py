"""The result model of a run: per-rule counts, errors, notes and plans.

Filled in by the runner as it executes; read by the renderers (``regsync.summary``), the
metrics, the progress display and the daemon's status page.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Self, SupportsIndex

from regsync.copy import CopyStats
from regsync.plan import Action, RepoPlan
from regsync.secrets import redact

MAX_LINES = 100  # lines kept per list of a rule's result (errors, notes, undone)
MAX_LINE_CHARS = 2000  # characters kept of one line (the rest counted)
QUOTED_REFUSALS = 10  # refused names quoted per rule; the rest are counted
CHECKED_ORPHANS = 1000  # candidate orphaned repositories whose tags are listed, per rule and run


class Lines(list[str]):
    """A rule's list of lines (errors, notes), bounded: past ``limit`` lines, the last one
    says how many more there were, and a line keeps ``MAX_LINE_CHARS`` (redacted first, so
    no secret is cut in two), so a hostile source cannot grow a summary, a log or
    ``/status`` without bound."""

    def __init__(self, items: Iterable[str] = (), limit: int = MAX_LINES) -> None:
        super().__init__()
        self.limit = limit
        self.more = 0
        self.extend(items)

    def append(self, item: str) -> None:
        if not self.more and len(self) < self.limit:
            super().append(_cut(item))
            return
        self.more += 1
        marker = f"… and {self.more} more"
        if self.more == 1:
            super().append(marker)
        else:
            super().__setitem__(-1, marker)

    @property
    def total(self) -> int:
        """How many lines were added, the uncounted ones included."""
        return len(self) - (1 if self.more else 0) + self.more

    def extend(self, items: Iterable[str]) -> None:
        for item in items:
            self.append(item)

    def __iadd__(self, items: Iterable[str]) -> Self:  # type: ignore[override, misc]
        self.extend(items)
        return self

    def insert(self, index: SupportsIndex, item: str) -> None:
        raise TypeError("Lines are appended only")


def _cut(line: str) -> str:
    if len(line) <= MAX_LINE_CHARS:
        return line
    line = redact(line)
    return f"{line[:MAX_LINE_CHARS]}… ({len(line)} characters)"


@dataclass(frozen=True)
class Orphans:
    """Destination repositories in a rule's scope the source lost (``orphans.find``).

    ``unchecked`` counts candidates past the per-run cap whose tags were not listed (each may
    be one more orphan): ``names`` is then a lower bound, and prune_repositories is refused.
    """

    names: tuple[str, ...]
    unchecked: int = 0


@dataclass
class PruneOutcome:
    """What the prune of one repository did: tags confirmed deleted, notes, errors."""

    pruned: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=Lines)
    errors: list[str] = field(default_factory=Lines)


@dataclass
class RuleResult:
    name: str
    source: str = ""
    destination: str = ""
    repos: int = 0
    copied: int = 0
    up_to_date: int = 0
    pruned: int = 0
    failed: int = 0
    interrupted: int = 0  # copies not started because the process is shutting down
    undone: Lines = field(default_factory=Lines)  # left undone by a registry's failure
    reported: set[str] = field(default_factory=set)  # registries whose failure is in errors
    orphans: Orphans | None = None  # destination repositories the source lost (or ?)
    refusals_quoted: int = 0  # refused names quoted in errors so far (at most QUOTED_REFUSALS)
    refusals_more: int = 0  # refused names counted, not quoted
    moved_immutable: int = 0  # immutable tags whose source digest moved (logged: the first few)
    backups: int = 0  # backup tags made before overwriting a changed tag (rule `backup`)
    stats: CopyStats = field(default_factory=CopyStats)
    errors: list[str] = field(default_factory=Lines)
    notes: list[str] = field(default_factory=Lines)  # worth reading, not failures
    plans: list[RepoPlan] = field(default_factory=list)
    unkept_copies: int = 0  # copy actions a copying cycle counted but kept no record of
    # (source repo, tag) an event named, in sync after an event-triggered run (a cycle: none)
    placed: list[tuple[str, str]] = field(default_factory=list)
    duration_seconds: float = 0.0
    rule_failed: bool = False  # the rule could not run at all (e.g. listing failed)

    @property
    def result(self) -> str:
        """success | partial | failed, as in regsync_sync_runs_total."""
        nothing_planned = self.errors and not self.plans  # no repository could be listed
        if (
            self.rule_failed
            or nothing_planned
            or (self.failed and not (self.copied or self.up_to_date))
        ):
            return "failed"
        return "partial" if self.failed or self.interrupted or self.errors else "success"

    @property
    def drift(self) -> int:
        """Tags a run would change (what `check` reports)."""
        return sum(p.drift for p in self.plans) + self.unkept_copies

    @property
    def skipped_media_types(self) -> int:
        """Tags the rule's media_types skipped."""
        return sum(1 for p in self.plans for f in p.filtered if f.by == "media_types")

    @property
    def left_differing(self) -> int:
        """Tags `once --missing` left as they are although their destination digest differs."""
        return sum(len(p.of(Action.DIFFERS)) for p in self.plans)

    @property
    def platform_subsets(self) -> int:
        """Tags whose destination holds a platform subset (its digest differs by design)."""
        return sum(1 for p in self.plans for a in p.actions if a.subset)

    def record_prune(self, outcome: PruneOutcome) -> None:
        self.pruned += len(outcome.pruned)
        self.notes.extend(outcome.notes)
        self.errors.extend(outcome.errors)


@dataclass
class RunResult:
    rules: list[RuleResult]
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return all(r.result == "success" for r in self.rules)

    def succeeded(self, *, check: bool = False) -> bool:
        """What the exit code says (0: true): every rule succeeded, and for `check` no drift."""
        return self.ok and not (check and any(r.drift for r in self.rules))
