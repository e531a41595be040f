"""Live progress of `regsync once` on a terminal (rich), one line per rule.

Shows repositories found, tags done out of tags planned, bytes copied, and the blobs streaming
right now. Implements the RunEvents hooks; the CLI uses it only when stderr is a terminal (and
not with --quiet or --log-format json): elsewhere plain log lines tell the story.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from regsync.events import NoEvents
from regsync.plan import Action

if TYPE_CHECKING:
    from regsync.plan import RepoPlan
    from regsync.result import RuleResult

SHOWN_TRANSFERS = 3  # names of in-flight blobs shown per rule


@dataclass
class _RuleLine:
    task: TaskID
    repos: int = 0
    planned: int = 0
    done: int = 0
    bytes: int = 0
    transfers: dict[str, str] = field(default_factory=dict)  # key -> label

    def detail(self) -> str:
        text = f"{self.repos} repos, {human_bytes(self.bytes)}"
        if self.transfers:
            names = list(self.transfers.values())
            shown = ", ".join(names[:SHOWN_TRANSFERS])
            more = f" +{len(names) - SHOWN_TRANSFERS}" if len(names) > SHOWN_TRANSFERS else ""
            text += f", {len(names)} streaming: {shown}{more}"
        return text


class ProgressDisplay(NoEvents):
    """A rich live display fed by RunEvents; use as a context manager around the run."""

    def __init__(self, console: Console | None = None) -> None:
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("tags"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[detail]}"),
            console=console or Console(stderr=True),
            transient=False,
        )
        self.lines: dict[str, _RuleLine] = {}

    def __enter__(self) -> ProgressDisplay:
        self.progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.progress.stop()

    def _line(self, rule: str) -> _RuleLine:
        line = self.lines.get(rule)
        if line is None:
            task = self.progress.add_task(rule, total=None, detail="listing")
            line = self.lines[rule] = _RuleLine(task)
        return line

    def _refresh(self, line: _RuleLine) -> None:
        self.progress.update(
            line.task, total=line.planned, completed=line.done, detail=line.detail()
        )

    # -- RunEvents -------------------------------------------------------------------------

    def rule_started(self, rule: str) -> None:
        self._line(rule)

    def rule_finished(self, result: RuleResult) -> None:
        line = self._line(result.name)
        line.transfers.clear()
        self.progress.update(
            line.task,
            total=max(line.planned, line.done),
            completed=max(line.planned, line.done),
            detail=f"{result.result}: {line.detail()}",
        )

    def repos_found(self, rule: str, count: int) -> None:
        line = self._line(rule)
        line.repos = count
        self._refresh(line)

    def repo_planned(self, rule: str, plan: RepoPlan) -> None:
        line = self._line(rule)
        line.planned += len(plan.of(Action.COPY)) + len(plan.of(Action.PRUNE))
        self._refresh(line)

    def tag_done(self, rule: str, outcome: str) -> None:
        if outcome == "up_to_date":
            return  # not part of the work planned
        line = self._line(rule)
        line.done += 1
        self._refresh(line)

    def blob_done(self, rule: str, outcome: str) -> None:
        pass

    def bytes_copied(self, rule: str, count: int) -> None:
        line = self._line(rule)
        line.bytes += count
        self._refresh(line)

    def transfer_started(self, rule: str, repo: str, digest: str, size: int) -> None:
        line = self._line(rule)
        line.transfers[f"{repo}@{digest}"] = f"{repo}@{digest[7:19]} ({human_bytes(size)})"
        self._refresh(line)

    def transfer_finished(self, rule: str, repo: str, digest: str) -> None:
        line = self._line(rule)
        line.transfers.pop(f"{repo}@{digest}", None)
        self._refresh(line)


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover
