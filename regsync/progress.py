"""Progress of `regsync once`: a live line per rule on a terminal (rich), a log line per rule at
most every 30 s elsewhere.

A rule's line shows its name, a bar, tags done out of tags planned, failures (in their own
colour), bytes copied, the elapsed time and the blobs streaming right now. It is laid out for
the terminal's width, whatever it is: the list of streams is what gets shortened and dropped
first, then the bar narrows, and a long rule name is shortened in the middle; the counts are
always there. Both displays implement the RunEvents hooks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING

from regsync.events import NoEvents
from regsync.plan import Action

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Task, TaskID
    from rich.text import Text

    from regsync.plan import RepoPlan
    from regsync.result import RuleResult

SHOWN_TRANSFERS = 3  # names of in-flight blobs shown per rule, room permitting
NAME_WIDTH = 24  # a rule name longer than this is shortened in the middle
BAR_WIDTH = 20  # the bar at its widest (it narrows to 6 on a narrow terminal)
LOG_INTERVAL = 30.0  # seconds between two progress log lines of one rule (no terminal)


@dataclass
class RuleLine:
    """What one rule has done so far (the display's model; rendering is `render_line`)."""

    name: str
    repos: int = 0
    planned: int = 0
    done: int = 0  # copied or pruned
    failed: int = 0
    bytes: int = 0
    result: str = ""  # set when the rule finished
    started: float = field(default_factory=time.monotonic)
    transfers: dict[str, str] = field(default_factory=dict)  # key -> label

    def tag_done(self, outcome: str) -> None:
        if outcome == "failed":
            self.failed += 1
        elif outcome != "up_to_date":  # not part of the work planned
            self.done += 1


def shorten(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters, shortened in the middle with an ellipsis."""
    if len(text) <= width:
        return text
    if width <= 1:
        return text[:width]
    head = (width - 1) // 2 + (width - 1) % 2
    return text[:head] + "…" + text[len(text) - (width - 1 - head) :]


def render_line(line: RuleLine, width: int, elapsed: float) -> Text:
    """One rule's line in at most ``width`` cells."""
    from rich.text import Text

    total = max(line.planned, line.done + line.failed)
    counts = f" {line.done}/{total} tags"
    failed = f" {line.failed} failed" if line.failed else ""
    minutes, seconds = divmod(int(elapsed), 60)
    tail = f" {human_bytes(line.bytes)} {minutes}:{seconds:02d}"
    if line.result:
        tail += f" {line.result}"
    name = shorten(line.name, NAME_WIDTH)
    fixed = len(name) + 1 + len(counts) + len(failed) + len(tail)
    bar = max(6, min(BAR_WIDTH, width - fixed - 2))
    name = shorten(line.name, max(4, min(NAME_WIDTH, width - bar - 1 - fixed + len(name))))
    text = Text(name, style="bold")
    text.append(" ")
    filled = round(bar * line.done / total) if total else (bar if line.result else 0)
    failing = min(bar - filled, round(bar * line.failed / total)) if total else 0
    text.append("━" * filled, style="green")
    text.append("━" * failing, style="red")
    text.append("━" * (bar - filled - failing), style="grey37")
    text.append(counts)
    text.append(failed, style="bold red")
    text.append(tail)
    room = width - len(text)
    streams = _streams(line, room)
    if streams:
        text.append(streams, style="dim")
    text.truncate(width)
    return text


def _streams(line: RuleLine, room: int) -> str:
    """The streams in flight, as many as fit in ``room`` (none when nothing fits)."""
    names = list(line.transfers.values())
    if not names or room < 16:
        return ""
    for shown in range(min(SHOWN_TRANSFERS, len(names)), -1, -1):
        listed = ": " + ", ".join(names[:shown]) if shown else ""
        more = f" +{len(names) - shown}" if len(names) > shown and shown else ""
        text = f", {len(names)} streaming{listed}{more}"
        if len(text) <= room:
            return text
    return ""


class ProgressDisplay(NoEvents):
    """A rich live display fed by RunEvents; use as a context manager around the run."""

    def __init__(self, console: Console | None = None) -> None:
        from rich.console import Console
        from rich.progress import Progress, ProgressColumn, SpinnerColumn

        display = self

        class _Line(ProgressColumn):
            def render(self, task: Task) -> Text:
                line = display.lines[task.description]
                width = display.progress.console.width - 2  # the spinner and its space
                return render_line(line, width, task.elapsed or 0.0)

        self.progress = Progress(
            SpinnerColumn(),
            _Line(),
            console=console or Console(stderr=True),
            transient=False,
            expand=False,
        )
        self.lines: dict[str, RuleLine] = {}
        self._tasks: dict[str, TaskID] = {}

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

    def _line(self, rule: str) -> RuleLine:
        line = self.lines.get(rule)
        if line is None:
            line = self.lines[rule] = RuleLine(rule)
            self._tasks[rule] = self.progress.add_task(rule, total=None)
        return line

    def _refresh(self, line: RuleLine) -> None:
        self.progress.update(self._tasks[line.name], total=line.planned, completed=line.done)

    # -- RunEvents -------------------------------------------------------------------------

    def rule_started(self, rule: str) -> None:
        self._line(rule)

    def rule_finished(self, result: RuleResult) -> None:
        line = self._line(result.name)
        line.transfers.clear()
        line.result = result.result
        self.progress.stop_task(self._tasks[result.name])
        self._refresh(line)

    def repos_found(self, rule: str, count: int) -> None:
        line = self._line(rule)
        line.repos = count
        self._refresh(line)

    def repo_planned(self, rule: str, plan: RepoPlan) -> None:
        line = self._line(rule)
        line.planned += len(plan.of(Action.COPY)) + len(plan.of(Action.PRUNE))
        self._refresh(line)

    def tag_done(self, rule: str, outcome: str) -> None:
        line = self._line(rule)
        line.tag_done(outcome)
        self._refresh(line)

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


class ProgressLog(NoEvents):
    """Without a terminal: one log line per rule at most every ``interval`` seconds while it
    runs (tags done/total, failures, bytes, rate), so a long unattended run shows life."""

    def __init__(
        self,
        interval: float = LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger | None = None,
    ) -> None:
        self.interval, self.clock = interval, clock
        self.log = logger or logging.getLogger("regsync.progress")
        self.lines: dict[str, RuleLine] = {}
        self._last: dict[str, float] = {}

    def __enter__(self) -> ProgressLog:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def _line(self, rule: str) -> RuleLine:
        line = self.lines.get(rule)
        if line is None:
            now = self.clock()
            line = self.lines[rule] = RuleLine(rule, started=now)
            self._last[rule] = now
        return line

    def _maybe_log(self, line: RuleLine) -> None:
        now = self.clock()
        if now - self._last[line.name] < self.interval:
            return
        self._last[line.name] = now
        elapsed = max(now - line.started, 1e-9)
        total = max(line.planned, line.done + line.failed)
        failed = f", {line.failed} failed" if line.failed else ""
        self.log.info(
            "rule %s: %d/%d tags%s, %s copied (%s/s)",
            line.name,
            line.done,
            total,
            failed,
            human_bytes(line.bytes),
            human_bytes(int(line.bytes / elapsed)),
        )

    def rule_started(self, rule: str) -> None:
        self._line(rule)

    def rule_finished(self, result: RuleResult) -> None:
        self.lines.pop(result.name, None)  # the summary says the rest

    def repo_planned(self, rule: str, plan: RepoPlan) -> None:
        line = self._line(rule)
        line.planned += len(plan.of(Action.COPY)) + len(plan.of(Action.PRUNE))

    def tag_done(self, rule: str, outcome: str) -> None:
        line = self._line(rule)
        line.tag_done(outcome)
        self._maybe_log(line)

    def bytes_copied(self, rule: str, count: int) -> None:
        line = self._line(rule)
        line.bytes += count
        self._maybe_log(line)


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover
