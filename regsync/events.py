"""Hooks the runner calls as work happens; metrics and progress displays implement them.

Every hook is in the ``RunEvents`` protocol, so the type checker sees a misspelt or missing
one. ``NoEvents`` implements each as a no-op: a sink subclasses it and overrides what it needs.
``FanOut`` forwards every hook to several sinks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from regsync.plan import RepoPlan
    from regsync.result import RuleResult


class RunEvents(Protocol):
    def rule_started(self, rule: str) -> None: ...

    def rule_finished(self, result: RuleResult) -> None: ...

    def repos_found(self, rule: str, count: int) -> None: ...

    def repo_planned(self, rule: str, plan: RepoPlan) -> None:
        """A repository's plan is ready (before any of its copies start)."""

    def tag_done(self, rule: str, outcome: str) -> None: ...

    def blob_done(self, rule: str, outcome: str) -> None: ...

    def bytes_copied(self, rule: str, count: int) -> None: ...

    def transfer_started(self, rule: str, repo: str, digest: str, size: int) -> None:
        """A blob stream into the destination began."""

    def transfer_finished(self, rule: str, repo: str, digest: str) -> None:
        """That blob stream ended (done, failed or cancelled)."""


class NoEvents:
    """Every hook, doing nothing: the base of sinks that handle only some of them."""

    def rule_started(self, rule: str) -> None:
        pass

    def rule_finished(self, result: RuleResult) -> None:
        pass

    def repos_found(self, rule: str, count: int) -> None:
        pass

    def repo_planned(self, rule: str, plan: RepoPlan) -> None:
        pass

    def tag_done(self, rule: str, outcome: str) -> None:
        pass

    def blob_done(self, rule: str, outcome: str) -> None:
        pass

    def bytes_copied(self, rule: str, count: int) -> None:
        pass

    def transfer_started(self, rule: str, repo: str, digest: str, size: int) -> None:
        pass

    def transfer_finished(self, rule: str, repo: str, digest: str) -> None:
        pass


class FanOut:
    """Sends every hook to several sinks (e.g. metrics and a progress display)."""

    def __init__(self, *sinks: RunEvents) -> None:
        self.sinks = sinks

    def rule_started(self, rule: str) -> None:
        for sink in self.sinks:
            sink.rule_started(rule)

    def rule_finished(self, result: RuleResult) -> None:
        for sink in self.sinks:
            sink.rule_finished(result)

    def repos_found(self, rule: str, count: int) -> None:
        for sink in self.sinks:
            sink.repos_found(rule, count)

    def repo_planned(self, rule: str, plan: RepoPlan) -> None:
        for sink in self.sinks:
            sink.repo_planned(rule, plan)

    def tag_done(self, rule: str, outcome: str) -> None:
        for sink in self.sinks:
            sink.tag_done(rule, outcome)

    def blob_done(self, rule: str, outcome: str) -> None:
        for sink in self.sinks:
            sink.blob_done(rule, outcome)

    def bytes_copied(self, rule: str, count: int) -> None:
        for sink in self.sinks:
            sink.bytes_copied(rule, count)

    def transfer_started(self, rule: str, repo: str, digest: str, size: int) -> None:
        for sink in self.sinks:
            sink.transfer_started(rule, repo, digest, size)

    def transfer_finished(self, rule: str, repo: str, digest: str) -> None:
        for sink in self.sinks:
            sink.transfer_finished(rule, repo, digest)
