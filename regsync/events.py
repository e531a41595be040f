"""Hooks the runner calls as work happens; metrics and progress displays implement them.

Hooks added later (``repo_planned``, ``transfer_started``, ``transfer_finished``) have no-op
defaults in ``NoEvents``; ``FanOut`` forwards a hook only to the sinks that define it, so an
older implementation of the protocol keeps working.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from regsync.plan import RepoPlan
    from regsync.summary import RuleResult


class RunEvents(Protocol):
    def rule_started(self, rule: str) -> None: ...

    def rule_finished(self, result: RuleResult) -> None: ...

    def repos_found(self, rule: str, count: int) -> None: ...

    def tag_done(self, rule: str, outcome: str) -> None: ...

    def blob_done(self, rule: str, outcome: str) -> None: ...

    def bytes_copied(self, rule: str, count: int) -> None: ...


class NoEvents:
    def rule_started(self, rule: str) -> None:
        pass

    def rule_finished(self, result: RuleResult) -> None:
        pass

    def repos_found(self, rule: str, count: int) -> None:
        pass

    def tag_done(self, rule: str, outcome: str) -> None:
        pass

    def blob_done(self, rule: str, outcome: str) -> None:
        pass

    def bytes_copied(self, rule: str, count: int) -> None:
        pass

    def repo_planned(self, rule: str, plan: RepoPlan) -> None:
        """A repository's plan is ready (before any of its copies start)."""

    def transfer_started(self, rule: str, repo: str, digest: str, size: int) -> None:
        """A blob stream into the destination began."""

    def transfer_finished(self, rule: str, repo: str, digest: str) -> None:
        """That blob stream ended (done, failed or cancelled)."""


class FanOut(NoEvents):
    """Sends every hook to several sinks (e.g. metrics and a progress display)."""

    def __init__(self, *sinks: object) -> None:
        self.sinks = sinks

    def _call(self, hook: str, *args: Any) -> None:
        for sink in self.sinks:
            method = getattr(sink, hook, None)
            if method is not None:
                method(*args)

    def rule_started(self, rule: str) -> None:
        self._call("rule_started", rule)

    def rule_finished(self, result: RuleResult) -> None:
        self._call("rule_finished", result)

    def repos_found(self, rule: str, count: int) -> None:
        self._call("repos_found", rule, count)

    def tag_done(self, rule: str, outcome: str) -> None:
        self._call("tag_done", rule, outcome)

    def blob_done(self, rule: str, outcome: str) -> None:
        self._call("blob_done", rule, outcome)

    def bytes_copied(self, rule: str, count: int) -> None:
        self._call("bytes_copied", rule, count)

    def repo_planned(self, rule: str, plan: RepoPlan) -> None:
        self._call("repo_planned", rule, plan)

    def transfer_started(self, rule: str, repo: str, digest: str, size: int) -> None:
        self._call("transfer_started", rule, repo, digest, size)

    def transfer_finished(self, rule: str, repo: str, digest: str) -> None:
        self._call("transfer_finished", rule, repo, digest)


def optional_hook(events: RunEvents, name: str) -> Any:
    """A hook added after the protocol was first published, or a no-op if `events` lacks it."""
    return getattr(events, name, None) or (lambda *args: None)
