"""A registry that fails as a whole is reported once, charged to its side, and costs no more
work: refused credentials and a read-only destination (issue "tell the truth", items 3, 4).

Against real `docker-registry` processes (htpasswd auth; `storage.maintenance.readonly`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from regsync.outages import WriteGate
from tests.support import (
    Registry,
    RegistryFactory,
    regsync_json,
    seed_catalogue,
    write_config,
)
from tests.support.accesslog import ACCESS_LOG, AccessLog


def test_wrong_password_is_one_error_naming_the_registry_with_a_hint(
    tmp_path: Path, source_registry: Registry, registry_factory: RegistryFactory
) -> None:
    """README "Credentials and TLS": bad credentials give one error naming the registry, and
    it is not asked again in the run; each repository left undone is an `undone` line only."""
    seed_catalogue(source_registry, repos=6, tags=1, layers=1, layer_size=1000)
    dst = registry_factory(htpasswd={"mirror": "right"}, extra_config=ACCESS_LOG)
    config = write_config(
        tmp_path,
        f"""
        version: 1
        registries:
          "{source_registry.host}": {{tls: http}}
          "{dst.host}": {{tls: http, credentials: {{username: mirror, password: wrong-pw}}}}
        rules:
          - {{name: m, source: "{source_registry.host}/diamol/*", destination: "{dst.host}"}}
        """,
    )
    log = AccessLog(dst)

    run = regsync_json("once", config)

    assert run.code == 1 and run.data["ok"] is False
    assert run.rule["result"] == "failed"
    assert run.rule["errors"] == [
        f"destination {dst.host} refused the configured credentials: check the username and "
        f"password for {dst.host}, or its docker config entry"
    ]
    assert len(run.rule["undone"]) == 6
    assert sorted(u.split(":")[0] for u in run.rule["undone"]) == [
        f"diamol/app{i:02d}" for i in range(6)
    ]
    # One log line and one summary line, not one (or two) per repository.
    assert run.stderr.count("refused the configured credentials") == 2, run.stderr
    assert "wrong-pw" not in run.stderr
    # One 401 per listing sent before the scheme was known (6 at most), then the password
    # goes out once and is refused once: nothing more is asked.
    refused = [r for r in log.requests() if r.status == 401 and r.kind == "tags"]
    assert len(refused) <= 7, refused


def test_read_only_destination_costs_at_most_one_source_manifest_get(
    tmp_path: Path, registry_factory: RegistryFactory
) -> None:
    """README "Outages and fallbacks": the first refused upload marks the destination
    read-only for the run; one interpreted error, no more source pulls. (The source has a
    `rate_limit`, so its manifest GETs are pulls, as on Docker Hub; where a GET is not a pull
    a copying run GETs a tag the destination lacks instead of HEADing it.)"""
    src = registry_factory(extra_config=ACCESS_LOG)
    seed_catalogue(src, repos=4, tags=3, layers=2, layer_size=2000)
    dst = registry_factory(readonly=True, extra_config=ACCESS_LOG)
    config = write_config(
        tmp_path,
        f"""
        version: 1
        registries:
          "{src.host}": {{tls: http, rate_limit: {{min_remaining: 0}}}}
          "{dst.host}": {{tls: http}}
        rules:
          - {{name: m, source: "{src.host}/diamol/*", destination: "{dst.host}"}}
        """,
    )
    pulls, writes = AccessLog(src), AccessLog(dst)

    run = regsync_json("once", config)

    assert run.code == 1 and run.data["ok"] is False
    assert run.rule["errors"] == [
        f"destination {dst.host} refuses uploads (405): is it read-only or in maintenance mode?"
    ]
    assert run.rule["tags"]["failed"] == 12 and run.rule["tags"]["copied"] == 0
    assert len(run.rule["undone"]) == 12
    source_gets = [r for r in pulls.requests() if r.method == "GET" and r.kind == "manifest"]
    assert len(source_gets) <= 1 and run.rule["source_manifest_gets"] <= 1
    refused = [r for r in writes.requests() if r.status == 405]
    # Only the first image tried to write (its blobs concurrently), then nothing more.
    assert refused and len({r.path for r in refused}) == 1 and len(refused) <= 3, refused
    assert run.stderr.count("refuses uploads") == 2, run.stderr  # log line + summary line


async def test_the_write_gate_opens_at_the_first_accepted_write() -> None:
    """Queued copies wait for the trial copy only until the destination took a write, not
    for the whole copy; a trial that fails lets the next one try, alone again."""
    gate = WriteGate()
    order: list[str] = []
    release_trial = asyncio.Event()

    async def trial() -> str:
        order.append("trial starts")
        gate.prove()  # e.g. its first blob was uploaded
        await release_trial.wait()
        order.append("trial ends")
        return "t"

    async def other() -> str:
        order.append("other runs")
        release_trial.set()
        return "o"

    async with asyncio.timeout(30), asyncio.TaskGroup() as group:  # a closed gate would hang
        first = group.create_task(gate.first(trial))
        second = group.create_task(gate.first(other))
    assert (first.result(), second.result()) == ("t", "o")
    assert order == ["trial starts", "other runs", "trial ends"]

    failing, calls = WriteGate(), []

    async def refused() -> str:
        calls.append("refused")
        raise RuntimeError("405")

    async def later() -> str:
        calls.append("later")
        return "x"

    with pytest.raises(RuntimeError):
        await failing.first(refused)
    assert await failing.first(later) == "x" and failing.proven  # the success proved it
