"""The progress display at common terminal widths, and the progress log without a terminal
(issue "tell the truth", item 9). Rendered with rich's recording console."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from rich.console import Console

from regsync.plan import Action, RepoPlan, TagAction
from regsync.progress import ProgressDisplay, ProgressLog, RuleLine, render_line, shorten
from regsync.result import RuleResult
from tests.support import Registry, mirror_config, run_regsync, seed_catalogue

LONG = "mirror-docker-hub-official-images-nightly"


def _plan(n: int) -> RepoPlan:
    return RepoPlan(
        "a", "b", tuple(TagAction(str(i), Action.COPY, f"sha256:{i:064x}") for i in range(n))
    )


def _shown(display: ProgressDisplay, width: int) -> list[str]:
    """The display's lines as the terminal shows them now (printed on a recording console)."""
    out = Console(record=True, width=width, force_terminal=True, color_system=None)
    out.print(display.progress.get_renderable())
    return out.export_text().splitlines()


@pytest.mark.parametrize("width", [80, 100, 120])
def test_each_rule_line_keeps_name_bar_counts_bytes_and_time(width: int) -> None:
    """README "Progress": at 80, 100 and 120 columns the streams are what gets dropped."""
    console = Console(record=True, width=width, force_terminal=True, color_system=None)
    with ProgressDisplay(console) as display:
        display.rule_started(LONG)
        display.repos_found(LONG, 6)
        display.repo_planned(LONG, _plan(10))
        for i in range(4):
            display.transfer_started(LONG, f"diamol/big{i}", f"sha256:{i:064x}", 40 << 20)
        display.bytes_copied(LONG, 44 << 20)
        display.tag_done(LONG, "copied")
        display.tag_done(LONG, "failed")
        (line,) = _shown(display, width)
    assert len(line) <= width, line
    assert shorten(LONG, 24) in line and "…" in line  # shortened in the middle
    assert "━" in line  # the bar
    assert " 1/10 tags" in line and " 1 failed" in line
    assert "44.0 MiB" in line and " 0:00" in line
    if width >= 120:
        assert "4 streaming" in line


def test_a_rule_whose_tags_all_failed_does_not_end_with_a_full_bar() -> None:
    console = Console(record=True, width=100, force_terminal=True, color_system=None)
    with ProgressDisplay(console) as display:
        display.rule_started("slow")
        display.repo_planned("slow", _plan(4))
        for _ in range(4):
            display.tag_done("slow", "failed")
        result = RuleResult("slow", failed=4, rule_failed=True)
        display.rule_finished(result)
        (final,) = _shown(display, 100)
    assert " 0/4 tags 4 failed" in final and final.endswith("failed"), final
    assert "4/4" not in final


def test_render_line_colours_failures_apart() -> None:
    line = RuleLine("r", planned=4, done=2, failed=2)
    text = render_line(line, 80, 3.0)
    styles = {str(span.style) for span in text.spans}
    assert "green" in styles and "red" in styles and "bold red" in styles


def test_without_a_terminal_one_log_line_per_rule_at_most_every_30_seconds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    log = ProgressLog(clock=lambda: now[0], logger=logging.getLogger("test.progress"))
    caplog.set_level(logging.INFO, logger="test.progress")
    log.rule_started("r")
    log.repo_planned("r", _plan(10))
    for second in range(0, 95, 5):
        now[0] = float(second)
        log.bytes_copied("r", 1024 * 1024)
        if second % 10 == 0:
            log.tag_done("r", "copied")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines  # at 30, 60 and 90 s
    assert lines[0] == "rule r: 3/10 tags, 7.0 MiB copied (238.9 KiB/s)"


def test_once_without_a_terminal_logs_progress_lines(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """`once` in cron or CI (stderr not a terminal) logs the progress line at the default
    verbosity (here every event: REGSYNC_PROGRESS_INTERVAL=0)."""
    seed_catalogue(source_registry, repos=1, tags=2, layers=1, layer_size=1000)
    config = mirror_config(tmp_path, source_registry, dest_registry, "diamol/*")
    proc = run_regsync("once", "-c", config, env={"REGSYNC_PROGRESS_INTERVAL": "0"})
    assert proc.returncode == 0, proc.stderr
    assert "rule mirror: 2/2 tags, " in proc.stderr, proc.stderr
    quiet = run_regsync("once", "-c", config, "-q", env={"REGSYNC_PROGRESS_INTERVAL": "0"})
    assert "tags, " not in quiet.stderr


def test_a_bad_progress_interval_is_refused_naming_the_variable(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """README "Running as a service": REGSYNC_PROGRESS_INTERVAL is read like the other
    environment settings: a word, `nan`, a negative or infinite number is one line naming it,
    exit 2, before any copy (it was ignored, and `nan` or `-1` logged on every event)."""
    seed_catalogue(source_registry, repos=1, tags=1, layers=1, layer_size=1000)
    config = mirror_config(tmp_path, source_registry, dest_registry, "diamol/*")
    for value in ("soon", "nan", "-1", "inf"):
        env = {"REGSYNC_PROGRESS_INTERVAL": value}
        proc = run_regsync("once", "-c", config, env=env)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().splitlines() == [
            f"regsync: environment REGSYNC_PROGRESS_INTERVAL={value!r}: expected a number >= 0"
        ]
    assert dest_registry.catalog() == []
