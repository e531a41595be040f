"""Failures of a whole registry, reported once per rule, and no more work started on it.

Some errors say nothing about one tag or repository but about the registry: it refused the
configured credentials, it is down (no connection through a request's whole retry budget),
or, as a destination, it refuses uploads (read-only or maintenance mode). Every later
request to it would fail the same way, so a run records the first such error per registry,
reports it once per rule as the side that failed (``source HOST is down: ...``), and starts
no more work on that registry: each repository or tag left undone is one line of the rule's
``undone`` list (``--json``, and the log at ``-v``), not one more error.

A destination must also not cost source pulls once it refuses writes: until a destination
has accepted one copy in this run, copies into it go one at a time (``WriteGate``), so a
read-only destination costs at most one source manifest GET.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from regsync.config import Rule
from regsync.errors import (
    CredentialsError,
    ReadOnlyError,
    RegistryError,
    RegsyncError,
    TransportError,
    UnreachableError,
)
from regsync.result import RuleResult

log = logging.getLogger(__name__)
T = TypeVar("T")


def registry_wide(exc: BaseException) -> str | None:
    """The registry an error condemns for the rest of the run, or None (one tag's error)."""
    if isinstance(exc, CredentialsError | ReadOnlyError):
        return exc.registry or None
    if isinstance(exc, UnreachableError) and exc.down:
        return exc.registry or None
    return None


def side_of(registry: str, source: str, destination: str) -> str:
    """Which side of a rule a registry is (a source's mirror counts as the source)."""
    return "destination" if registry == destination and registry != source else "source"


def describe(exc: RegsyncError, side: str) -> str:
    """The one line reporting a registry-wide failure, naming the side that failed."""
    text = str(exc)
    registry = exc.registry if isinstance(exc, RegistryError | TransportError) else ""
    for prefix in (f"registry {registry} ", f"{registry}: "):
        if registry and text.startswith(prefix):
            text = f"{registry} {text[len(prefix) :]}"
            break
    return f"{side} {text}"


@dataclass
class Outages:
    """The registries one run found unusable, with the error that showed it."""

    broken: dict[str, RegsyncError] = field(default_factory=dict)

    def note(self, exc: BaseException) -> str | None:
        """Remember ``exc`` if it condemns its registry; that registry's name, else None."""
        registry = registry_wide(exc)
        if registry is not None and isinstance(exc, RegsyncError):
            self.broken.setdefault(registry, exc)
        return registry

    def blocking(self, *registries: str) -> RegsyncError | None:
        """The error of the first of ``registries`` found unusable, if any."""
        return next((self.broken[r] for r in registries if r in self.broken), None)

    def check(self, rule: Rule) -> None:
        """Raise Blocked when the rule's source or destination failed as a whole this run."""
        cause = self.blocking(rule.source.registry, rule.destination.registry)
        if cause is not None:
            raise Blocked(cause)

    def rule_failed(self, rule: Rule, result: RuleResult, exc: RegsyncError) -> None:
        """The rule as a whole failed: one error line, result `failed`."""
        result.rule_failed = True
        registry = self.note(exc)
        if registry is not None:
            _registry_failed(rule, result, registry, exc)
            return
        result.errors.append(str(exc))
        log.error("rule %s: %s", rule.name, exc)

    def failed(
        self,
        rule: Rule,
        result: RuleResult,
        where: str,
        exc: Exception,
        what: str = "",
        extra: dict[str, str] | None = None,
    ) -> None:
        """A repository or tag failed: its own error line, or, when its registry failed as a
        whole, that registry's one line (once per rule) and an entry in `undone`."""
        exc = exc.cause if isinstance(exc, Blocked) else exc
        registry = self.note(exc)
        if registry is None:
            result.errors.append(f"{where}: {describe_error(exc)}")
            log.error(
                "rule %s: %s: %s",
                rule.name,
                what or where,
                describe_error(exc),
                extra=extra,
                exc_info=not isinstance(exc, RegsyncError),  # a bug: worth a traceback
            )
            return
        line = _registry_failed(rule, result, registry, exc)
        result.undone.append(f"{where}: {line}")
        log.info("rule %s: left undone: %s: %s", rule.name, where, line, extra=extra)


class Blocked(Exception):
    """Work not started: a registry it needs failed earlier in the run (``cause``)."""

    def __init__(self, cause: RegsyncError) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _registry_failed(rule: Rule, result: RuleResult, registry: str, exc: Exception) -> str:
    """A registry failed as a whole: its one error line, once per rule; the line."""
    assert isinstance(exc, RegsyncError)
    line = describe(exc, side_of(registry, rule.source.registry, rule.destination.registry))
    if registry not in result.reported:
        result.reported.add(registry)
        result.errors.append(line)
        log.error("rule %s: %s", rule.name, line)
    return line


def describe_error(exc: Exception) -> str:
    return str(exc) if isinstance(exc, RegsyncError) else f"internal error: {exc!r}"


@dataclass
class WriteGate:
    """Copies into one destination go one at a time until it has accepted a write.

    A destination that refuses writes is found by the first copy's first write; the copies
    queued behind it then see the registry condemned before they read anything from the source.
    The proof is the first blob the destination took (`prove`, from the copy engine), or the
    first copy that succeeded: the others then start at once, not after that whole copy.
    """

    proven: bool = False
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _held: bool = False  # a trial copy holds the lock

    def prove(self) -> None:
        """The destination took a write: every copy may go now."""
        self.proven = True
        if self._held:
            self._held = False
            self._lock.release()  # wakes the queued copies, which see `proven`

    async def first(self, work: Callable[[], Awaitable[T]]) -> T:
        if self.proven:
            return await work()
        await self._lock.acquire()
        if self.proven:
            self._lock.release()
            return await work()
        self._held = True
        try:
            value = await work()  # raising lets the next copy try, alone again
        finally:
            if self._held:
                self._held = False
                self._lock.release()
        self.prove()
        return value
