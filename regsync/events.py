"""Hooks the runner calls as work happens; metrics and progress displays implement them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
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
