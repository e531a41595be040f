"""The daemon under reloads an operator (or a script) may send at any moment: a rule never
runs twice at once, even when a reload removes it mid-run and the next adds it back, or
renames it."""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
from pathlib import Path

import pytest

from regsync.backends.layoutfs import TempFile
from regsync.backends.memory import MemoryBackend
from regsync.config import Config, Rule, load_config, parse_config
from regsync.daemon import Daemon
from regsync.execute import DeleteGuard, prune_actions
from regsync.metrics import Metrics
from regsync.result import RuleResult, RunResult
from regsync.runner import run
from tests.support import Blob, Image, write_config
from tests.support.scripted import ScriptedRegistry
from tests.test_prune_execute import plan_of, prune_action, put_image

RULE = "  - name: {name}\n    source: 127.0.0.1:9/a\n    destination: 127.0.0.1:9/b\n"


async def settle() -> None:
    """Let every ready task take its next steps (no I/O involved: no wall clock)."""
    for _ in range(50):
        await asyncio.sleep(0)


@pytest.mark.parametrize("back_as", ["slow", "renamed"])
async def test_a_rule_removed_mid_run_and_added_back_never_runs_twice_at_once(
    tmp_path: Path, back_as: str
) -> None:
    """Removed by one reload while it runs, added back (or renamed) by the next: its new run
    waits for the old one to end instead of copying beside it."""
    path = write_config(tmp_path, "version: 1\nrules:\n" + RULE.format(name="slow"))
    active, peak, starts = 0, 0, []
    first_started, first_may_end, second_started = (asyncio.Event() for _ in range(3))

    async def scripted_run(config: Config, rules: list[Rule], **kwargs: object) -> RunResult:
        nonlocal active, peak
        if rules[0].name == "gone":  # another copy altogether: may run beside
            return RunResult([RuleResult("gone")])
        active += 1
        peak = max(peak, active)
        starts.append(rules[0].name)
        if len(starts) == 1:
            first_started.set()
            await first_may_end.wait()
        else:
            second_started.set()
        active -= 1
        return RunResult([RuleResult(rules[0].name)])

    daemon = Daemon(str(path), load_config(path), Metrics(), grace=5, runner=scripted_run)
    task = asyncio.create_task(daemon.run())
    await asyncio.wait_for(first_started.wait(), 30)

    path.write_text("version: 1\nrules:\n" + RULE.format(name="gone").replace("/a", "/z"))
    await daemon.reload()  # "slow" removed while it runs ("gone" copies elsewhere)
    path.write_text("version: 1\nrules:\n" + RULE.format(name=back_as))
    await daemon.reload()  # back (or renamed): its first run is due at once
    await settle()
    assert back_as not in starts[1:], starts  # waiting for the old run

    first_may_end.set()
    await asyncio.wait_for(second_started.wait(), 30)
    daemon.stop()
    await asyncio.wait_for(task, 10)
    assert starts[0] == "slow" and back_as in starts[1:]
    assert peak == 1, starts


async def test_a_layout_filling_the_disk_mid_copy_is_one_clean_tag_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """ENOSPC on the second write of a blob: that tag fails with "the disk is full", no
    traceback (no "generator didn't stop after athrow()") reaches the log."""
    big = Image.docker([Blob.random(3 * 1024 * 1024, seed="disk")])
    writes = 0
    real_write = TempFile.write

    def filling(self: TempFile, data: bytes) -> None:
        nonlocal writes
        writes += len(data) > 1000  # the layer's chunks, not the layout's small files
        if writes >= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(self, data)

    monkeypatch.setattr(TempFile, "write", filling)
    async with ScriptedRegistry() as src:
        src.add("team/app", "1", big)
        rule = f'- {{name: d, source: "{src.host}/team/app", destination: "oci:{tmp_path}/out"}}'
        config = parse_config(
            f'version: 1\nregistries:\n  "{src.host}": {{tls: http}}\nrules:\n  {rule}\n'
        )
        with caplog.at_level(logging.DEBUG):
            result = await run(config, config.rules)
        await settle()
        gc.collect()
        await settle()
    [rule_result] = result.rules
    assert rule_result.failed == 1
    assert any("the disk is full" in e for e in rule_result.errors), rule_result.errors
    text = caplog.text
    assert "athrow" not in text and "Traceback" not in text, text


async def test_sigterm_in_the_middle_of_a_prune_starts_no_further_delete() -> None:
    """The stop arrives during the first tag delete: that one finishes, no other starts, and
    the tags left are noted (the next run, seeing them still gone from the source, prunes
    them)."""
    stop = asyncio.Event()

    class Stopping(MemoryBackend):
        async def tag_delete(self, repo: str, tag: str) -> None:
            stop.set()  # SIGTERM lands while this delete runs
            await super().tag_delete(repo, tag)

    dest = Stopping()
    kept = await put_image(dest, "shared", "keep", "a", "b", "c")
    plan = plan_of(*(prune_action(t, kept.digest, "keep") for t in ("a", "b", "c")))

    out = await prune_actions(dest, plan, DeleteGuard(dest.name), stop)

    assert out.pruned == ["a"]
    assert out.notes == ["team/app: shutting down: 2 prunes left"]
    assert {t: d for t, d in dest.repos["team/app"].tags.items()} == {
        t: kept.digest for t in ("keep", "b", "c")
    }
