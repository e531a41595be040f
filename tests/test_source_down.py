"""A source that dies during a copy is noticed at once and charged to itself (issue "tell the
truth", item 2): streamed blob reads count toward a registry's health like every request.

A real `docker-registry` source is SIGKILLed at a fixed point of the first copy (when the
destination, behind a forwarding proxy, is asked to start the first blob upload), so the
source's blob GET that streams into that upload finds it gone.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from tests.support import (
    FAST_RETRIES,
    Registry,
    RegistryFactory,
    catalogue_tag,
    regsync_json,
    seed_catalogue,
)
from tests.support.faults import Fault, FaultProxy


def test_source_killed_mid_copy_is_one_down_error_charged_to_the_source(
    tmp_path: Path, registry_factory: RegistryFactory, dest_registry: Registry
) -> None:
    """README "Outages and fallbacks": one error "source HOST is down", one `undone` line per
    tag, the destination charged with no failed request and no retry."""
    src = registry_factory()
    seed_catalogue(src, repos=1, tags=4, layers=1, layer_size=300_000, shared_base=False)

    def kill_source_at_first_upload(method: str, path: str) -> None:
        if method == "POST" and "/blobs/uploads/" in path and src.running:
            src.kill()

    with FaultProxy(dest_registry.url) as proxy:
        proxy.before_forward = kill_source_at_first_upload
        config = tmp_path / "sync.yaml"
        config.write_text(
            f'version: 1\nregistries:\n  "{src.host}": {{tls: http}}\n'
            f'  "{proxy.host}": {{tls: http}}\n'
            f'rules:\n  - {{name: m, source: "{src.host}/diamol/*", destination: "{proxy.host}"}}\n'
        )
        prom = tmp_path / "regsync.prom"
        run = regsync_json("once", config, "--metrics-file", prom, env=FAST_RETRIES)

    assert run.code == 1 and run.data["ok"] is False
    cause = f"source {src.host} is down: cannot connect (connection refused by {src.host}: nothing"
    assert run.rule["errors"] == [f"{cause} listens there)"]
    assert run.rule["tags"]["failed"] == 4 and run.rule["tags"]["copied"] == 0
    undone = run.rule["undone"]
    assert len(undone) == 4 and all(u.endswith(f"{cause} listens there)") for u in undone)
    assert run.stderr.count("ERROR") == 1, run.stderr  # the rule's one line; the rest is info
    assert "  4 repositories or tags left undone by the error above" in run.stderr
    metrics = prom.read_text()
    assert f'regsync_registry_up{{registry="{src.host}"}} 0.0' in metrics
    dest_lines = [line for line in metrics.splitlines() if f'registry="{proxy.host}"' in line]
    assert not [line for line in dest_lines if 'status="error"' in line], dest_lines
    assert not [line for line in dest_lines if line.startswith("regsync_registry_retries")]


def test_a_source_stream_that_breaks_is_retried_and_charged_to_the_source(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """A blob download reset through its retries restarts the transfer: the retries are the
    source's (`regsync_registry_retries_total`), never the destination's."""
    pushed = seed_catalogue(source_registry, repos=1, tags=1, layers=1, layer_size=300_000)
    blobs = pushed.images["diamol/app00"][catalogue_tag(0)].blobs
    layer = max(blobs, key=lambda digest: blobs[digest])
    with FaultProxy(source_registry.url) as proxy:
        # Both tries of the first download (FAST_RETRIES: 2), so the transfer starts over.
        proxy.add(Fault("reset", method="GET", path=f"/blobs/{layer}", times=2))
        config = tmp_path / "sync.yaml"
        config.write_text(
            f'version: 1\nregistries:\n  "{proxy.host}": {{tls: http}}\n'
            f'  "{dest_registry.host}": {{tls: http}}\n'
            f"rules:\n  - {{name: m, source: "
            f'"{proxy.host}/diamol/*", destination: "{dest_registry.host}"}}\n'
        )
        prom = tmp_path / "regsync.prom"
        run = regsync_json("once", config, "--metrics-file", prom, env=FAST_RETRIES)

    assert run.code == 0, run.stderr
    assert len(proxy.fired) == 2
    assert run.rule["bytes_copied"] >= blobs[layer]
    metrics = prom.read_text().splitlines()
    retries = [m for m in metrics if m.startswith("regsync_registry_retries_total{")]
    assert retries and all(f'registry="{proxy.host}"' in m for m in retries), retries


async def test_closing_a_stream_still_being_read_does_not_hide_the_error() -> None:
    """A failed upload whose writer is still inside a source read (a source retrying a broken
    stream): closing the stream then must not raise (RuntimeError 'already running') and
    replace the source's own error; the read ends with the writer."""
    from regsync.transfer import _Tap

    gate = asyncio.Event()

    async def source() -> AsyncIterator[bytes]:
        await gate.wait()
        yield b"x"

    tap = _Tap(source(), lambda n: None)
    reading = asyncio.ensure_future(anext(tap))
    await asyncio.sleep(0)  # the writer is now inside the read
    await tap.aclose()  # no RuntimeError
    gate.set()
    assert await reading == b"x"
    await tap.aclose()  # and once the read is over, it closes
