"""Metrics names/labels, the textfile and Pushgateway exports, JSON logs, and progress."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import pty
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from regsync.logs import copy_context, log_scope, setup_logging
from regsync.metrics import Metrics
from regsync.plan import Action, RepoPlan, TagAction
from regsync.progress import ProgressDisplay
from regsync.result import RuleResult
from tests.support import Blob, Image, Registry, mirror_config, push, run_regsync
from tests.support.observe import parse_metrics, sample
from tests.support.registry import dead_port

# The README's contract list, exactly: name -> label names (histograms: their base name).
DESIGN_METRICS = {
    "regsync_sync_runs": ("rule", "result"),
    "regsync_last_success_timestamp_seconds": ("rule",),
    "regsync_sync_duration_seconds": ("rule",),
    "regsync_tags": ("rule", "outcome"),
    "regsync_out_of_sync_tags": ("rule",),
    "regsync_blobs": ("rule", "outcome"),
    "regsync_bytes_copied": ("rule",),
    "regsync_registry_requests": ("registry", "method", "status"),
    "regsync_registry_request_duration_seconds": ("registry", "method"),
    "regsync_ratelimit_remaining": ("registry",),
    "regsync_registry_up": ("registry",),
}


def finished(name: str, copied: int, failed: int, drift: int) -> RuleResult:
    result = RuleResult(name, copied=copied, failed=failed, duration_seconds=1.5)
    actions = tuple(TagAction(f"t{i}", Action.COPY, f"sha256:{i:064x}") for i in range(drift))
    result.plans.append(RepoPlan("a", "b", actions))
    return result


def exercised() -> Metrics:
    metrics = Metrics()
    metrics.rule_configured("hub", 900)
    metrics.rule_started("hub")
    metrics.tag_done("hub", "copied")
    metrics.blob_done("hub", "copied")
    metrics.bytes_copied("hub", 1234)
    metrics.request_done("docker.io", "GET", "200", 0.05)
    metrics.ratelimit_seen("docker.io", 76, 100)
    metrics.request_done("down.example", "HEAD", "error", 15.0)
    metrics.rule_finished(finished("hub", copied=1, failed=1, drift=3))
    return metrics


def test_metric_names_and_labels_are_exactly_the_designed_ones() -> None:
    families = {f.name: f for f in text_string_to_metric_families(exercised().render().decode())}
    for name, labels in DESIGN_METRICS.items():
        assert name in families, name
        for s in families[name].samples:
            assert set(s.labels) - {"le"} == set(labels), (name, s.labels)
    assert families["regsync_sync_duration_seconds"].type == "histogram"
    assert families["regsync_registry_request_duration_seconds"].type == "histogram"
    assert families["regsync_tags"].type == "counter"
    # Never a tag or a digest in a label.
    assert all(
        not str(v).startswith("sha256:") and "t0" not in str(v)
        for f in families.values()
        for s in f.samples
        for v in s.labels.values()
    )


def test_values_follow_the_events() -> None:
    samples = parse_metrics(exercised().render().decode())
    assert sample(samples, "regsync_tags_total", rule="hub", outcome="copied") == 1
    assert sample(samples, "regsync_tags_total", rule="hub", outcome="pruned") == 0  # pre-made
    assert sample(samples, "regsync_bytes_copied_total", rule="hub") == 1234
    assert sample(samples, "regsync_sync_runs_total", rule="hub", result="partial") == 1
    assert sample(samples, "regsync_out_of_sync_tags", rule="hub") == 2  # 3 planned, 1 copied
    assert sample(samples, "regsync_last_success_timestamp_seconds", rule="hub") is None
    assert sample(samples, "regsync_rule_interval_seconds", rule="hub") == 900
    assert sample(samples, "regsync_ratelimit_remaining", registry="docker.io") == 76
    assert sample(samples, "regsync_ratelimit_limit", registry="docker.io") == 100
    assert sample(samples, "regsync_registry_up", registry="docker.io") == 1
    assert sample(samples, "regsync_registry_up", registry="down.example") == 0
    assert (
        sample(
            samples,
            "regsync_registry_requests_total",
            registry="down.example",
            method="HEAD",
            status="error",
        )
        == 1
    )
    assert sample(samples, "regsync_sync_running", rule="hub") == 0


def test_each_metrics_object_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.rule_configured("x", 60)
    first.tag_done("x", "copied")
    assert b'rule="x"' not in second.render()
    assert first.registry is not second.registry


def test_a_removed_rule_leaves_no_series() -> None:
    metrics = exercised()
    metrics.rule_removed("hub")
    assert b'rule="hub"' not in metrics.render()


PAUSED = "regsync_registry_paused_until_timestamp_seconds"


def test_paused_until_is_zero_for_a_registry_never_paused() -> None:
    metrics = Metrics()
    metrics.request_done("reg.example", "GET", "200", 0.01)
    samples = parse_metrics(metrics.render().decode())
    assert sample(samples, PAUSED, registry="reg.example") == 0


def test_paused_registry_shows_in_status_and_metrics() -> None:
    metrics = Metrics()
    metrics.registry_paused("docker.io", 4_000_000_000.0)
    (status,) = metrics.registry_status()
    assert status["paused_until"] == "2096-10-02T07:06:40Z"
    samples = parse_metrics(metrics.render().decode())
    assert (
        sample(samples, "regsync_registry_paused_until_timestamp_seconds", registry="docker.io")
        == 4e9
    )
    metrics.registry_paused("docker.io", None)
    assert metrics.registry_status()[0]["paused_until"] is None


def test_progress_display_shows_tags_bytes_and_transfers() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=200, color_system=None)
    with ProgressDisplay(console) as display:
        display.rule_started("hub")
        display.repos_found("hub", 2)
        display.repo_planned(
            "hub",
            RepoPlan(
                "a",
                "b",
                (
                    TagAction("1", Action.COPY, "sha256:" + "a" * 64),
                    TagAction("2", Action.COPY, "sha256:" + "b" * 64),
                    TagAction("3", Action.SKIP, "sha256:" + "c" * 64),
                ),
            ),
        )
        display.transfer_started("hub", "lib/app", "sha256:" + "d" * 64, 3 * 1024 * 1024)
        display.bytes_copied("hub", 2048)
        display.tag_done("hub", "copied")
        display.progress.refresh()
        live = out.getvalue()
        display.transfer_finished("hub", "lib/app", "sha256:" + "d" * 64)
        display.tag_done("hub", "copied")
        display.rule_finished(RuleResult("hub", copied=2))
    assert "hub" in live and "1/2" in live and "2.0 KiB" in live
    assert "1 streaming: lib/app@dddddddddddd (3.0 MiB)" in live
    assert "2/2" in out.getvalue() and "success" in out.getvalue()


# -- the exports, end to end ----------------------------------------------------------------


def mirror(tmp_path: Path, src: Registry, dst: Registry) -> tuple[Path, int]:
    first = push(src, "team/app", "1", Image.docker([Blob.random(4000, seed="m1")]))
    second = push(src, "team/app", "2", Image.docker([Blob.random(5000, seed="m2")]))
    config = mirror_config(tmp_path, src, dst, "team/app", 'schedule: "*/30 * * * *"', name="app")
    return config, sum({**first.blobs, **second.blobs}.values())


def test_once_writes_a_parsable_textfile_atomically(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    config, size = mirror(tmp_path, source_registry, dest_registry)
    out_dir = tmp_path / "textfile"
    out_dir.mkdir()
    target = out_dir / "regsync.prom"

    proc = run_regsync("once", "-c", config, "--json", "--metrics-file", target)

    assert proc.returncode == 0, proc.stderr
    assert os.listdir(out_dir) == ["regsync.prom"]  # no temp file left behind
    samples = parse_metrics(target.read_text())
    summary = json.loads(proc.stdout)["rules"][0]
    assert sample(samples, "regsync_tags_total", rule="app", outcome="copied") == 2
    assert sample(samples, "regsync_bytes_copied_total", rule="app") == size
    assert summary["bytes_copied"] == size
    assert sample(samples, "regsync_sync_runs_total", rule="app", result="success") == 1
    assert (sample(samples, "regsync_last_success_timestamp_seconds", rule="app") or 0) > 0
    assert sample(samples, "regsync_rule_interval_seconds", rule="app") == 1800
    assert sample(samples, "regsync_registry_up", registry=source_registry.host) == 1
    # README metrics table: the pause gauge is 0 for a registry never paused, not absent.
    for host in (source_registry.host, dest_registry.host):
        assert sample(samples, PAUSED, registry=host) == 0
    assert not any(name.startswith("process_") for name, _ in samples)
    assert "\x1b[" not in proc.stderr  # not a terminal: no live display

    # An unreachable Pushgateway is reported; the exit code stays the sync's.
    gone = f"http://127.0.0.1:{dead_port()}"
    unpushed = run_regsync("once", "-c", config, "--pushgateway", gone)
    assert unpushed.returncode == 0
    assert f"cannot push metrics to {gone}" in unpushed.stderr

    # README "Metrics and monitoring": a failed export is logged; the exit code stays the
    # sync's (here 0: a missing directory does not stop the sync, nor fail it).
    nowhere = tmp_path / "nope" / "x.prom"
    missing = run_regsync("once", "-c", config, "--metrics-file", nowhere)
    assert missing.returncode == 0, missing.stderr
    assert missing.stderr.count(f"cannot write --metrics-file {nowhere}: ") == 1
    assert "No such file or directory" in missing.stderr and not nowhere.parent.exists()


async def test_once_pushes_to_a_pushgateway(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    config, size = mirror(tmp_path, source_registry, dest_registry)
    received: list[tuple[str, str, bytes]] = []

    async def accept(request: web.Request) -> web.Response:
        received.append((request.method, request.path, await request.read()))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", accept)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "regsync",
            "once",
            "-c",
            str(config),
            "--pushgateway",
            f"http://127.0.0.1:{port}",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await asyncio.wait_for(proc.communicate(), 120)
    finally:
        await runner.cleanup()

    assert proc.returncode == 0, stderr.decode()
    ((method, path, body),) = received
    assert (method, path) == ("PUT", "/metrics/job/regsync")
    samples = parse_metrics(body.decode())
    assert sample(samples, "regsync_bytes_copied_total", rule="app") == size


def test_json_logs_carry_rule_source_and_destination(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    config, _ = mirror(tmp_path, source_registry, dest_registry)

    proc = run_regsync("once", "-c", config, "-v", "--log-format", "json")

    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stderr.splitlines()]  # every line is JSON
    copies = [line for line in lines if line["message"].startswith("rule app: copied")]
    assert len(copies) == 2
    for line in copies:
        tag = line["source"].rsplit(":", 1)[1]
        assert line["rule"] == "app" and line["level"] == "info"
        assert line["source"] == f"{source_registry.host}/team/app:{tag}"
        assert line["destination"] == f"{dest_registry.host}/team/app:{tag}"
        assert line["digest"].startswith("sha256:")
    (summary,) = [line for line in lines if line["logger"] == "regsync.summary"]
    assert summary["result"] == "success" and summary["tags"]["copied"] == 2


def test_once_on_a_terminal_shows_live_progress(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """stderr on a pseudo-terminal: rich draws the progress line, ending with the result."""
    config, _ = mirror(tmp_path, source_registry, dest_registry)
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "regsync", "once", "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=follower,
            env={**os.environ, "TERM": "xterm", "COLUMNS": "160"},
        )
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert proc.wait(120) == 0
    finally:
        os.close(leader)
    screen = b"".join(chunks).decode(errors="replace")
    assert "\x1b[" in screen  # drawn as a live display
    assert "2/2 tags" in screen and " success" in screen
    assert "rule app: success" in screen  # the summary still follows


@pytest.fixture
def own_logging() -> Iterator[None]:
    """Let a test call setup_logging, then give pytest its own handlers back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


async def test_log_scope_reaches_lines_logged_deep_inside_a_copy(
    capsys: pytest.CaptureFixture[str], own_logging: None
) -> None:
    """A line logged by a task started inside a copy's scope carries rule/source/destination."""
    setup_logging(1, "json")
    deep = logging.getLogger("regsync.backends.registry.transport")

    async def transfer() -> None:
        deep.warning("retrying GET")

    with log_scope(**copy_context("hub", "docker.io/a:1", "reg.local/a:1")):
        async with asyncio.TaskGroup() as group:
            group.create_task(transfer())
    deep.warning("outside")
    first, second = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    assert first["message"] == "retrying GET"
    assert (first["rule"], first["source"], first["destination"]) == (
        "hub",
        "docker.io/a:1",
        "reg.local/a:1",
    )
    assert "rule" not in second and "_scope_added" not in first

    setup_logging(1, "text")
    with log_scope(**copy_context("hub", "docker.io/a:1", "reg.local/a:1")):
        deep.warning("retrying GET")
    assert (
        capsys.readouterr()
        .err.rstrip()
        .endswith("retrying GET [rule hub: docker.io/a:1 -> reg.local/a:1]")
    )
    setup_logging(0)
