"""Event-triggered sync against a real `docker-registry` whose `notifications:` point at `serve`.

Each test writes the source registry's config with an endpoint on the daemon's (random) port,
so the events are the registry's own, delivered as in production. The rule interval is an
hour: whatever reaches the destination after the first cycle came through an event.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support import Blob, Image, Registry, RegistryFactory, free_port, push, write_config
from tests.support.observe import Served, wait_for

TOKEN = "events-token-0123456789abcdef"
EVENTS_TYPE = "application/vnd.docker.distribution.events.v1+json"


def notifying(
    factory: RegistryFactory, serve_port: int, *, token: str = TOKEN, **opts: Any
) -> Registry:
    """A source registry sending its events to `serve` on ``serve_port`` (as an operator
    would configure it, dropping blob and pull events at the source)."""
    port = free_port()
    endpoint = {
        "name": "regsync",
        "url": f"http://127.0.0.1:{serve_port}/v1/notifications/127.0.0.1:{port}",
        "headers": {"Authorization": [f"Bearer {token}"]},
        "timeout": "2s",
        "threshold": 3,
        "backoff": "1s",
        "ignore": {"mediatypes": ["application/octet-stream"], "actions": ["pull"]},
    }
    extra = {"notifications": {"endpoints": [endpoint]}}
    return factory(port=port, extra_config=extra, **opts)


def events_config(
    tmp_path: Path, src: Registry, dst: Registry, rules: str, *, token: str = TOKEN
) -> Path:
    text = (
        "version: 1\nregistries:\n"
        f'  "{src.host}": {{tls: http, notifications: {{token: "{token}"}}}}\n'
        f'  "{dst.host}": {{tls: http}}\n'
        f"rules:\n{rules}"
    )
    return write_config(tmp_path, text)


def rule(src: Registry, dst: Registry, source: str, *, name: str = "ev", extra: str = "") -> str:
    return (
        f'  - {{name: {name}, source: "{src.host}/{source}", destination: "{dst.host}/mirror",'
        f" interval: 1h{extra}}}\n"
    )


def image(seed: str, layers: int = 3, size: int = 2000) -> Any:
    return Image.docker([Blob.random(size, seed=f"{seed}-{i}") for i in range(layers)])


def cycles(served: Served, name: str = "ev") -> float:
    return sum(
        served.metric("regsync_sync_runs_total", rule=name, result=r) or 0
        for r in ("success", "partial", "failed")
    )


def events(served: Served, registry: Registry, outcome: str) -> float:
    return served.metric("regsync_events_total", registry=registry.host, outcome=outcome) or 0


def dest_digest(dst: Registry, repo: str, tag: str) -> Callable[[], str | None]:
    def probe() -> str | None:
        try:
            return dst.manifest_digest(repo, tag)
        except Exception:
            return None

    return probe


def test_a_push_is_mirrored_through_its_event_not_the_cycle(
    tmp_path: Path, registry_factory: RegistryFactory, dest_registry: Registry
) -> None:
    """The registry's own notification copies a pushed tag long before the hourly cycle;
    lag and event counters say so, and the cycle count stays at the first one."""
    port = free_port()
    src = notifying(registry_factory, port)
    first = push(src, "team/app", "1.0", image("one"))
    config = events_config(tmp_path, src, dest_registry, rule(src, dest_registry, "team/*"))
    with Served(config, tmp_path, port=port) as served:
        wait_for(served.ready, "the first cycle")
        assert dest_registry.manifest_digest("mirror/team/app", "1.0") == first.digest
        second = push(src, "team/app", "2.0", image("two"))
        wait_for(
            lambda: dest_digest(dest_registry, "mirror/team/app", "2.0")() == second.digest,
            "the event to copy 2.0",
        )
        wait_for(lambda: events(served, src, "copied") >= 1, "the event to be counted")
        assert cycles(served) == 1  # only the first cycle ran: the event did the copy
        lag = served.metric("regsync_replication_lag_seconds_count", rule="ev")
        assert lag is not None and lag >= 1
        assert events(served, src, "refused") == 0 and events(served, src, "failed") == 0
        status = {r["name"]: r for r in served.status()["registries"]}[src.host]
        assert status["events"]["last_event_at"] is not None
        assert status["events"]["counts"]["copied"] >= 1
        assert served.stop() == 0, served.log()


def post_events(served: Served, registry: str, payload: object, **headers: str) -> int:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    sent = {"Content-Type": EVENTS_TYPE, "Authorization": f"Bearer {TOKEN}", **headers}
    return served.post(f"/v1/notifications/{registry}", body, sent)[0]


def push_event(repo: str, tag: str, digest: str = "sha256:" + "0" * 64) -> dict[str, Any]:
    """One manifest push as distribution 2.8 sends it (fields regsync reads, and the rest)."""
    return {
        "id": "6b5f2f6c-3c0d-4e6a-9d0b-1d2f3e4a5b6c",
        "timestamp": "2026-12-06T17:20:00.123456789Z",
        "action": "push",
        "target": {
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "size": 1234,
            "digest": digest,
            "length": 1234,
            "repository": repo,
            "url": f"http://127.0.0.1/v2/{repo}/manifests/{digest}",
            "tag": tag,
        },
        "request": {"id": "r1", "addr": "127.0.0.1:1", "host": "h", "method": "PUT"},
        "actor": {},
        "source": {"addr": "h:5000", "instanceID": "i"},
    }


def test_the_notification_endpoint_refuses_what_an_attacker_sends(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """404 unconfigured, 401 without the token, 413/415/400 for oversized, mistyped and
    malformed bodies; names off the grammar are refused one by one; nothing is copied."""
    src = source_registry
    pushed = push(src, "team/app", "1.0", image("probe"))
    config = events_config(tmp_path, src, dest_registry, rule(src, dest_registry, "team/*"))
    with Served(config, tmp_path) as served:
        wait_for(served.ready, "the first cycle")
        good = {"events": [push_event("team/app", "1.0", pushed.digest)]}
        assert post_events(served, dest_registry.host, good) == 404  # no token configured
        assert post_events(served, "no.such.registry", good) == 404
        assert post_events(served, src.host, good, Authorization="Bearer wrong") == 401
        assert post_events(served, src.host, good, Authorization=f"Basic {TOKEN}") == 401
        assert post_events(served, src.host, good, Authorization=f"Bearer {TOKEN}x") == 401
        assert post_events(served, src.host, good, Authorization=f"Bearer {TOKEN[:-1]}") == 401
        assert post_events(served, src.host, b"x" * (1024 * 1024 + 1)) == 413
        assert post_events(served, src.host, good, **{"Content-Type": "text/plain"}) == 415
        assert post_events(served, src.host, b"{not json") == 400
        assert post_events(served, src.host, b"[" * 100_000 + b"]" * 100_000) == 400
        assert post_events(served, src.host, {"events": "nope"}) == 400
        assert post_events(served, src.host, {"events": [1]}) == 400
        too_many = {"events": [push_event("team/app", "1.0")] * 1001}
        assert post_events(served, src.host, too_many) == 400
        refused_requests = 11
        assert events(served, src, "refused") == refused_requests
        hostile = [
            push_event("../../etc", "1.0"),
            push_event("team/app", "../x"),
            push_event("team/app", "1.0", digest="sha256:../../x"),
            push_event("Team/App", "1.0"),
            push_event("team/app", "a" * 200),
        ]
        assert post_events(served, src.host, {"events": hostile}) == 202
        assert events(served, src, "refused") == refused_requests + len(hostile)
        assert served.get("/healthz")[0] == 200
        assert cycles(served) == 1
        assert dest_registry.tags("mirror/team/app") == ["1.0"]
        assert TOKEN not in served.log() and TOKEN not in json.dumps(served.status())
        assert served.post("/v1/rules/ev/run")[0] == 404  # no API token: disabled
        assert served.stop() == 0, served.log()
