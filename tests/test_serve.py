"""`regsync serve` as a user runs it: schedules, endpoints, reload, graceful stop.

Every integration test starts the daemon as a subprocess against real registries, scrapes
/metrics and /status, and signals it like an init system would.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
from datetime import timedelta
from pathlib import Path

import pytest

from regsync.config import Config, Rule, load_config
from regsync.daemon import Daemon
from regsync.metrics import Metrics
from regsync.result import RuleResult, RunResult
from regsync.schedule import MAX_JITTER, Timing, jitter
from tests.support import (
    Blob,
    Image,
    Manifest,
    Registry,
    push,
    registries_yaml,
    run_regsync,
    write_config,
)
from tests.support.client import RegistryClient
from tests.support.observe import HoldingProxy, Served, wait_for

# -- schedule (unit) ------------------------------------------------------------------------


def test_interval_runs_from_the_previous_start_and_never_in_the_past() -> None:
    timing = Timing(interval=timedelta(minutes=15))
    assert timing.next_run(last_start=1000.0, now=1010.0) == 1900.0
    # A run longer than its interval is followed at once by the next, not overlapped.
    assert timing.next_run(last_start=1000.0, now=2500.0) == 2500.0
    assert timing.period(0) == 900.0


def test_cron_schedule_next_firing_and_period() -> None:
    timing = Timing(schedule="*/15 * * * *")
    now = time.time()
    upcoming = timing.next_run(last_start=0.0, now=now)
    assert now < upcoming <= now + 900
    assert int(upcoming) % 900 == 0 or time.localtime(upcoming).tm_min % 15 == 0
    assert timing.period(now) == 900.0
    assert Timing(schedule="0 3 * * *").period(now) == 86400.0


def test_jitter_is_small_and_bounded() -> None:
    rng = random.Random(7)
    short = [jitter(2.0, rng) for _ in range(200)]
    assert all(0 <= j <= 0.2 for j in short) and len(set(short)) > 100
    assert all(0 <= jitter(86400.0, rng) <= MAX_JITTER for _ in range(200))


# -- the daemon against real registries -----------------------------------------------------


def serve_config(
    tmp_path: Path, src: Registry | RegistryClient, dst: Registry, rules: str, extra: str = ""
) -> Path:
    return write_config(
        tmp_path, registries_yaml(src, dst) + "version: 1\n" + extra + "rules:\n" + rules
    )


def rule_yaml(name: str, src: RegistryClient, repo: str, dst: Registry, interval: str) -> str:
    host = src.url.split("://", 1)[1]
    return (
        f"  - name: {name}\n    source: {host}/{repo}\n    destination: {dst.host}\n"
        f"    interval: {interval}\n"
    )


def small_image(seed: str) -> Manifest:
    return Image.docker([Blob.random(3000, seed=seed)])


def assert_consistent(dst: Registry, repo: str) -> None:
    """Every destination tag's manifest, child manifests and blobs exist (invariant 1)."""
    for tag in dst.tags(repo):
        stack = [tag]
        while stack:
            _, raw = dst.manifest(repo, stack.pop())
            body = json.loads(raw)
            stack.extend(child["digest"] for child in body.get("manifests", []))
            for blob in [body.get("config"), *body.get("layers", [])]:
                if blob:
                    assert dst.blob_exists(repo, blob["digest"]), (repo, tag, blob["digest"])


def test_serve_syncs_reports_and_picks_up_changes(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """First run at start, metrics and /status after it, a new source tag on the next interval."""
    one = push(source_registry, "team/app", "1.0", small_image("one"))
    two = push(source_registry, "team/app", "2.0", small_image("two"))
    rules = rule_yaml("app", source_registry, "team/app", dest_registry, "2s")
    config = serve_config(tmp_path, source_registry, dest_registry, rules)
    started = time.time()

    with Served(config, tmp_path) as served:
        wait_for(served.ready, "the first run")
        metrics = served.metrics()
        status = served.rule("app")

        def m(name: str, **labels: str) -> float | None:
            return metrics.get((name, frozenset({"rule": "app", **labels}.items())))

        assert m("regsync_tags_total", outcome="copied") == 2
        assert m("regsync_tags_total", outcome="failed") == 0
        expected_bytes = sum({**one.blobs, **two.blobs}.values())
        assert m("regsync_bytes_copied_total") == expected_bytes
        assert m("regsync_blobs_total", outcome="copied") == len({**one.blobs, **two.blobs})
        assert (m("regsync_sync_runs_total", result="success") or 0) >= 1
        assert m("regsync_out_of_sync_tags") == 0
        assert m("regsync_rule_interval_seconds") == 2
        last_success = m("regsync_last_success_timestamp_seconds")
        assert last_success is not None and started <= last_success <= time.time()
        for reg in (source_registry, dest_registry):
            up = metrics.get(("regsync_registry_up", frozenset({"registry": reg.host}.items())))
            assert up == 1, reg.host
        source_requests = sum(
            value
            for (name, labels), value in metrics.items()
            if name == "regsync_registry_requests_total"
            and dict(labels)["registry"] == source_registry.host
        )
        assert source_requests >= 4  # catalog-free: tags list, 2 HEADs, 2 GETs, blobs
        assert status["last_run"]["result"] == "success"
        assert status["last_run"]["tags"]["copied"] == 2 or status["runs"] > 1
        assert status["last_error"] is None and status["source"].endswith("team/app")
        assert served.get("/")[1].startswith(b"regsync\n  /metrics")
        assert served.status()["shard"] is None
        assert dest_registry.manifest_digest("team/app", "2.0") == two.digest

        three = push(source_registry, "team/app", "3.0", small_image("three"))
        wait_for(
            lambda: served.metric("regsync_tags_total", rule="app", outcome="copied") == 3,
            "the next interval to copy 3.0",
        )
        assert dest_registry.manifest_digest("team/app", "3.0") == three.digest
        later = served.rule("app")
        assert later["runs"] >= 2 and later["last_success_at"] is not None
        assert later["running"] or later["next_run_at"] is not None
        assert served.stop() == 0, served.log()


def test_sighup_reloads_a_good_config_and_keeps_the_old_on_a_bad_one(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    a = push(source_registry, "team/a", "1", small_image("a"))
    b = push(source_registry, "team/b", "1", small_image("b"))
    rule_a = rule_yaml("a", source_registry, "team/a", dest_registry, "2s")
    rule_b = rule_yaml("b", source_registry, "team/b", dest_registry, "2s").replace(
        "interval: 2s", 'schedule: "*/5 * * * *"'
    )
    config = serve_config(tmp_path, source_registry, dest_registry, rule_a)

    with Served(config, tmp_path) as served:
        wait_for(served.ready, "rule a's first run")
        assert dest_registry.manifest_digest("team/a", "1") == a.digest

        serve_config(tmp_path, source_registry, dest_registry, rule_a + rule_b)
        served.signal(signal.SIGHUP)
        wait_for(lambda: dest_registry.manifest_digest("team/b", "1"), "rule b after reload")
        assert dest_registry.manifest_digest("team/b", "1") == b.digest
        assert [r["name"] for r in served.status()["rules"]] == ["a", "b"]
        # A cron rule also runs at once, then on its schedule; its period is the interval.
        b_status = served.rule("b")
        assert b_status["schedule"] == "cron '*/5 * * * *'"
        assert b_status["interval_seconds"] == 300
        assert served.metric("regsync_rule_interval_seconds", rule="b") == 300

        config.write_text(config.read_text() + "  - name: broken\n    sauce: nowhere\n")
        served.signal(signal.SIGHUP)
        error = wait_for(lambda: served.status()["config"]["reload_error"], "the reload error")
        assert "rules[2]" in error and "sauce" in error
        assert [r["name"] for r in served.status()["rules"]] == ["a", "b"]
        runs = served.rule("a")["runs"]
        wait_for(lambda: served.rule("a")["runs"] > runs, "rule a to keep running")
        assert served.get("/healthz")[0] == 200
        assert "reload failed, keeping the running config" in served.log()
        assert served.stop() == 0, served.log()


@pytest.mark.parametrize("finishes", [True, False], ids=["finishes-in-grace", "cancelled"])
def test_sigterm_with_a_transfer_in_flight(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry, finishes: bool
) -> None:
    """SIGTERM mid-blob: exit 0; the tag lands complete, or not at all; never half."""
    pushed = push(source_registry, "team/app", "big", Image.docker([Blob.random(60_000, seed=1)]))
    with HoldingProxy(source_registry.url) as proxy:
        client = proxy.client()
        rules = rule_yaml("app", client, "team/app", dest_registry, "1h")
        config = serve_config(tmp_path, client, dest_registry, rules)
        grace = "60" if finishes else "0.5"
        with Served(config, tmp_path, "--grace-period", grace) as served:
            assert proxy.streaming.wait(60), served.log()
            # While it syncs: running, not ready yet, the first bytes already counted.
            wait_for(
                lambda: served.metric("regsync_bytes_copied_total", rule="app"),
                "bytes counted while streaming",
            )
            assert served.rule("app")["running"] is True
            assert served.get("/readyz")[0] == 503
            assert served.metric("regsync_sync_running", rule="app") == 1

            served.signal(signal.SIGTERM)
            wait_for(lambda: "stopping: waiting" in served.log(), "the stop to begin")
            if finishes:
                proxy.release()
            assert served.proc.wait(60) == 0, served.log()

    assert_consistent(dest_registry, "team/app")
    if finishes:
        assert dest_registry.manifest_digest("team/app", "big") == pushed.digest
    else:
        assert dest_registry.tags("team/app") == []
        assert "grace period over: cancelled 1 runs in progress" in served.log()


def test_serve_refuses_a_bad_config_and_a_busy_port(tmp_path: Path) -> None:
    bad = write_config(tmp_path, "version: 1\nrules: []\n", name="bad.yaml")
    with pytest.raises(AssertionError, match="exited 2"):
        Served(bad, tmp_path)
    good = write_config(
        tmp_path,
        "version: 1\nrules:\n  - name: a\n    source: 127.0.0.1:9/x\n"
        "    destination: 127.0.0.1:9/y\n",
    )
    with Served(good, tmp_path, "--grace-period", "0") as first:
        proc = run_regsync("serve", "-c", good, "--listen", f"127.0.0.1:{first.port}")
        assert proc.returncode == 2
        assert f"cannot listen on 127.0.0.1:{first.port}" in proc.stderr
        assert first.stop() == 0


# -- the scheduler with a scripted runner (no sockets) --------------------------------------


async def test_a_rule_never_overlaps_itself_and_reload_keeps_a_good_config(
    tmp_path: Path,
) -> None:
    """A run longer than the interval delays the next one; a bad reload changes nothing."""
    path = write_config(
        tmp_path,
        "version: 1\nrules:\n  - name: slow\n    source: 127.0.0.1:9/a\n"
        "    destination: 127.0.0.1:9/b\n    interval: 1s\n",
    )
    active, peak, starts = 0, 0, []
    first_started, first_run_may_end, second_started = (asyncio.Event() for _ in range(3))

    async def scripted_run(config: Config, rules: list[Rule], **kwargs: object) -> RunResult:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        starts.append(rules[0].name)
        if len(starts) == 1:
            first_started.set()
            await first_run_may_end.wait()  # outlasts the 1s interval
        else:
            second_started.set()
        active -= 1
        return RunResult([RuleResult(rules[0].name)])

    daemon = Daemon(str(path), load_config(path), Metrics(), grace=5, runner=scripted_run)
    task = asyncio.create_task(daemon.run())
    # The first run is going; wait until the instant the rule is due again (not a guessed
    # window), so a scheduler that overlapped runs would have started a second one by then.
    await asyncio.wait_for(first_started.wait(), 30)
    state = daemon.states["slow"]
    assert state.last_started is not None
    await asyncio.sleep(max(0.0, state.due(state.last_started) - time.time()) + 0.05)
    assert starts == ["slow"] and not daemon.ready()

    path.write_text(path.read_text() + "  - name: broken\n")
    await daemon.reload()
    assert daemon.reload_error is not None and "rules[1]" in daemon.reload_error
    assert list(daemon.states) == ["slow"]

    first_run_may_end.set()
    await asyncio.wait_for(second_started.wait(), 30)
    assert daemon.ready()
    daemon.stop()
    await asyncio.wait_for(task, 10)
    assert len(starts) >= 2 and peak == 1


# -- hostile configs on reload -----------------------------------------------------------------


def _alias_bomb() -> str:
    lines = ['x0: &x0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"x{n}: &x{n} [{','.join([f'*x{n - 1}'] * 9)}]" for n in range(1, 12)]
    return "\n".join(lines) + "\n"


def test_sighup_with_an_alias_bomb_or_deep_nesting_is_one_reload_error(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    push(source_registry, "team/a", "1", small_image("a"))
    rule_a = rule_yaml("a", source_registry, "team/a", dest_registry, "1h")
    config = serve_config(tmp_path, source_registry, dest_registry, rule_a)
    good = config.read_text()
    with Served(config, tmp_path) as served:
        wait_for(served.ready, "rule a's first run")

        config.write_text(good + _alias_bomb())  # minutes and gigabytes if expanded
        served.signal(signal.SIGHUP)
        error = wait_for(lambda: served.status()["config"]["reload_error"], "the bomb refused")
        assert "aliases expand the document beyond 10000 values" in error
        assert served.get("/healthz")[0] == 200

        config.write_text(good + "deep: " + "[" * 100_000 + "]" * 100_000 + "\n")
        served.signal(signal.SIGHUP)
        error = wait_for(
            lambda: "nested" in (served.status()["config"]["reload_error"] or "") and error,
            "the nesting refused",
        )
        assert "nested deeper than 64 levels" in served.status()["config"]["reload_error"]
        assert served.get("/healthz")[0] == 200
        assert [r["name"] for r in served.status()["rules"]] == ["a"]
        log = served.log()
        assert log.count("reload failed, keeping the running config") == 2, log
        assert "Traceback" not in log and "RecursionError" not in log
        assert served.stop() == 0, log


async def test_reload_reads_and_parses_off_the_event_loop(tmp_path: Path) -> None:
    """A config that takes forever to read (a FIFO no one writes yet) leaves the loop free:
    a parse on the loop would block it, and this test could never write the FIFO."""
    text = (
        "version: 1\nrules:\n  - name: r\n    source: 127.0.0.1:9/a\n"
        "    destination: 127.0.0.1:9/b\n    interval: 1h\n"
    )
    path = write_config(tmp_path, text)
    ran: list[str] = []

    async def scripted_run(config: Config, rules: list[Rule], **kwargs: object) -> RunResult:
        ran.append(rules[0].name)
        return RunResult([RuleResult(rules[0].name)])

    daemon = Daemon(str(path), load_config(path), Metrics(), grace=5, runner=scripted_run)
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    daemon.config_path = str(fifo)
    task = asyncio.create_task(daemon.run())
    reload = asyncio.create_task(daemon.reload())
    await asyncio.sleep(0)  # the reload starts and waits on the FIFO in its thread
    assert not reload.done()
    # The loop is free: write the FIFO from a thread; the reload then completes.
    await asyncio.to_thread(fifo.write_text, text.replace("name: r", "name: s"))
    await asyncio.wait_for(reload, 10)
    assert daemon.reload_error is None and list(daemon.states) == ["s"]
    daemon.stop()
    await asyncio.wait_for(task, 10)
