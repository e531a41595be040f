"""Event-triggered sync against a real `docker-registry` whose `notifications:` point at `serve`.

Each test writes the source registry's config with an endpoint on the daemon's (random) port,
so the events are the registry's own, delivered as in production. The rule interval is an
hour: whatever reaches the destination after the first cycle came through an event.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from regsync.shard import owner
from tests.support import (
    Blob,
    Image,
    Index,
    Registry,
    RegistryFactory,
    free_port,
    push,
    regsync_json,
    run_regsync,
    write_config,
)
from tests.support.cli import HasHost
from tests.support.observe import HoldingProxy, Served, wait_for
from tests.support.registry import notifications

TOKEN = "events-token-0123456789abcdef"
EVENTS_TYPE = "application/vnd.docker.distribution.events.v1+json"


def notifying(
    factory: RegistryFactory, serve_port: int, *, token: str = TOKEN, **opts: Any
) -> Registry:
    """A source registry sending its events to `serve` on ``serve_port`` (as an operator
    would configure it, dropping blob and pull events at the source)."""
    port = free_port()
    extra = notifications(port, ("regsync", serve_port), token=token)
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


def post_chunked(served: Served, registry: str, chunks: list[bytes]) -> int:
    """A body sent chunked (no Content-Length): the size bound must hold while reading."""
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
    headers = {"Content-Type": EVENTS_TYPE, "Authorization": f"Bearer {TOKEN}"}
    try:
        conn.request(
            "POST", f"/v1/notifications/{registry}", iter(chunks), headers, encode_chunked=True
        )
        return conn.getresponse().status
    except ConnectionError:
        return 0  # closed mid-body: also a refusal, but the test wants the 413
    finally:
        conn.close()


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
        assert post_chunked(served, src.host, [b"x" * 65536] * 17) == 413  # no Content-Length
        assert post_events(served, src.host, good, **{"Content-Type": "text/plain"}) == 415
        assert post_events(served, src.host, b"{not json") == 400
        assert post_events(served, src.host, b"[" * 100_000 + b"]" * 100_000) == 400
        assert post_events(served, src.host, {"events": "nope"}) == 400
        assert post_events(served, src.host, {"events": [1]}) == 400
        too_many = {"events": [push_event("team/app", "1.0")] * 1001}
        assert post_events(served, src.host, too_many) == 400
        refused_requests = 12
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
        for _ in range(200):  # a flood of bad tokens: counted, logged at most once a minute
            assert post_events(served, src.host, good, Authorization="Bearer x") == 401
        assert served.log().count("events from") <= 2
        assert served.get("/healthz")[0] == 200
        assert cycles(served) == 1
        assert dest_registry.tags("mirror/team/app") == ["1.0"]
        assert TOKEN not in served.log() and TOKEN not in json.dumps(served.status())
        assert served.post("/v1/rules/ev/run")[0] == 404  # no API token: disabled
        assert served.stop() == 0, served.log()


def test_a_delete_event_runs_a_cycle_that_prunes_and_a_push_while_down_is_caught_up(
    tmp_path: Path, registry_factory: RegistryFactory, dest_registry: Registry
) -> None:
    """A source delete reaches a pruning rule as a full cycle; events missed while `serve`
    was down are covered by the cycle it starts with."""
    port = free_port()
    src = notifying(registry_factory, port)
    tags = {t: push(src, "team/app", t, image(t, layers=1)) for t in ("1", "2", "3", "4")}
    rules = rule(src, dest_registry, "team/*", extra=", prune: true")
    config = events_config(tmp_path, src, dest_registry, rules)
    with Served(config, tmp_path, port=port) as served:
        wait_for(served.ready, "the first cycle")
        assert dest_registry.tags("mirror/team/app") == ["1", "2", "3", "4"]
        src.delete_manifest("team/app", tags["4"].digest)
        wait_for(lambda: dest_registry.tags("mirror/team/app") == ["1", "2", "3"], "the prune")
        wait_for(lambda: cycles(served) == 2, "the delete's cycle to finish")  # not hourly
        wait_for(lambda: events(served, src, "copied") >= 1, "the delete counted")
        assert cycles(served) == 2  # distribution's two delete events: one cycle
        assert served.stop() == 0, served.log()
    late = push(src, "team/app", "5", image("late", layers=1))  # nobody listens now
    with Served(config, tmp_path, port=port) as served:
        wait_for(served.ready, "the first cycle after the restart")
        assert dest_registry.manifest_digest("mirror/team/app", "5") == late.digest
        assert served.stop() == 0, served.log()


def api_config(tmp_path: Path, src: HasHost, dst: Registry) -> Path:
    rules = (
        f'  - {{name: ev, source: "{src.host}/team/app", destination: "{dst.host}",'
        " interval: 1h}\n"
    )
    text = (
        f'version: 1\nregistries:\n  "{src.host}": {{tls: http}}\n  "{dst.host}": {{tls: http}}\n'
    )
    return write_config(tmp_path, text + "rules:\n" + rules)


def test_the_run_endpoint_starts_a_cycle_refuses_a_second_and_needs_its_token(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """202 starts a cycle now; 409 while one runs; 401 without the token; 404 unknown rule."""
    push(source_registry, "team/app", "1", image("held", layers=1, size=64 * 1024))
    token_file = tmp_path / "api-token"
    token_file.write_text("api-token-0123456789\n")
    auth = {"Authorization": "Bearer api-token-0123456789"}
    with HoldingProxy(source_registry.url) as proxy:
        config = api_config(tmp_path, proxy, dest_registry)
        with Served(config, tmp_path, "--api-token-file", str(token_file)) as served:
            proxy.streaming.wait(30)  # the first cycle is mid-copy
            assert served.post("/v1/rules/ev/run", b"", auth)[0] == 409
            assert served.post("/v1/rules/ev/run")[0] == 401
            assert served.post("/v1/rules/ev/run", b"", {"Authorization": "Bearer nope"})[0] == 401
            assert served.post("/v1/rules/nope/run", b"", auth)[0] == 404
            proxy.release()
            wait_for(served.ready, "the first cycle")
            second = push(source_registry, "team/app", "2", image("two", layers=1))
            assert served.post("/v1/rules/ev/run", b"", auth)[0] == 202
            wait_for(lambda: cycles(served) == 2, "the requested cycle")
            assert dest_registry.manifest_digest("team/app", "2") == second.digest
            assert "api-token-0123456789" not in served.log()
            assert served.stop() == 0, served.log()


def test_api_token_from_the_environment_and_bad_token_files_exit_2(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    config = api_config(tmp_path, source_registry, dest_registry)
    env = {"REGSYNC_API_TOKEN": "env-token-0123456789"}
    with Served(config, tmp_path, env=env) as served:
        wait_for(served.ready, "the first cycle")
        auth = {"Authorization": "bearer env-token-0123456789"}  # the scheme is case-insensitive
        assert served.post("/v1/rules/ev/run", b"", auth)[0] == 202
        assert served.stop() == 0, served.log()
    empty = tmp_path / "empty"
    empty.write_text("\n")
    for path, message in ((tmp_path / "missing", "No such file"), (empty, "is empty")):
        proc = run_regsync("serve", "-c", str(config), "--api-token-file", str(path))
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1


def harbor_webhook(kind: str, repo: str, tag: str, digest: str, host: str) -> bytes:
    """A webhook as Harbor documents it (``default`` payload format, v2.x)."""
    namespace, name = repo.rsplit("/", 1)
    return json.dumps(
        {
            "type": kind,
            "occur_at": int(time.time()),
            "operator": "admin",
            "event_data": {
                "resources": [
                    {"digest": digest, "tag": tag, "resource_url": f"{host}/{repo}:{tag}"}
                ],
                "repository": {
                    "date_created": int(time.time()) - 60,
                    "name": name,
                    "namespace": namespace,
                    "repo_full_name": repo,
                    "repo_type": "private",
                },
            },
        }
    ).encode()


def test_harbor_webhooks_copy_a_push_and_prune_a_delete(
    tmp_path: Path, source_registry: Registry, dest_registry: Registry
) -> None:
    """Harbor's PUSH_ARTIFACT copies the tag, DELETE_ARTIFACT runs the pruning cycle, other
    types are ignored; the same token rule as the notifications endpoint."""
    src = source_registry
    keep = push(src, "team/app", "1", image("h1", layers=1))
    doomed = push(src, "team/app", "2", image("h2", layers=1))
    rules = rule(src, dest_registry, "team/*", extra=", prune: true")
    config = events_config(tmp_path, src, dest_registry, rules)
    with Served(config, tmp_path) as served:
        wait_for(served.ready, "the first cycle")

        def hook(body: bytes, token: str = TOKEN, registry: str = src.host) -> int:
            headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
            return served.post(f"/v1/webhooks/harbor/{registry}", body, headers)[0]

        pushed = push(src, "team/app", "3", image("h3", layers=1))
        body = harbor_webhook("PUSH_ARTIFACT", "team/app", "3", pushed.digest, src.host)
        assert hook(body, token="wrong") == 401
        assert hook(body, registry=dest_registry.host) == 404
        assert hook(b'{"type": "PUSH_ARTIFACT"}') == 400
        assert hook(body) == 202
        wait_for(
            lambda: dest_digest(dest_registry, "mirror/team/app", "3")() == pushed.digest,
            "the webhook's copy",
        )
        scan = harbor_webhook("SCANNING_COMPLETED", "team/app", "3", pushed.digest, src.host)
        assert hook(scan) == 202
        src.delete_manifest("team/app", doomed.digest)
        assert (
            hook(harbor_webhook("DELETE_ARTIFACT", "team/app", "2", doomed.digest, src.host)) == 202
        )
        wait_for(lambda: dest_registry.tags("mirror/team/app") == ["1", "3"], "the prune")
        assert dest_registry.manifest_digest("mirror/team/app", "1") == keep.digest
        wait_for(lambda: cycles(served) == 2, "the delete's cycle to finish")
        wait_for(lambda: events(served, src, "copied") == 2, "push and delete counted")
        assert events(served, src, "ignored") == 1 and events(served, src, "refused") == 2
        assert served.stop() == 0, served.log()


def test_each_replica_of_a_sharded_deployment_copies_only_its_own_share(
    tmp_path: Path, registry_factory: RegistryFactory, dest_registry: Registry
) -> None:
    """The registry lists every replica as an endpoint; each copies the repositories its shard
    owns and ignores the rest, so every push is copied exactly once."""
    ports = [free_port(), free_port()]
    port = free_port()
    listeners = [(f"regsync-{i}", p) for i, p in enumerate(ports)]
    src = registry_factory(port=port, extra_config=notifications(port, *listeners, token=TOKEN))
    repos = [f"team/r{n}" for n in range(6)]
    for repo in repos:
        push(src, repo, "1", image(repo, layers=1))
    config = events_config(tmp_path, src, dest_registry, rule(src, dest_registry, "team/*"))
    replicas = [Served(config, tmp_path, "--shard", f"{i}/2", port=p) for i, p in enumerate(ports)]
    try:
        for served in replicas:
            wait_for(served.ready, "the first cycle")
        pushed = {repo: push(src, repo, "2", image(f"{repo}-2", layers=1)) for repo in repos}
        for repo, p in pushed.items():
            wait_for(
                lambda r=repo, p=p: dest_digest(dest_registry, f"mirror/{r}", "2")() == p.digest,
                f"{repo}:2",
            )
        for i, served in enumerate(replicas):
            mine = sum(1 for r in repos if owner("ev", r, 2) == i)
            # (the first pushes' events arrive too, once the replicas are up: >=)
            wait_for(lambda s=served, m=mine: events(s, src, "copied") >= m, f"replica {i}")
            wait_for(
                lambda s=served, m=mine: events(s, src, "ignored") >= len(repos) - m,
                f"replica {i} ignoring the rest",
            )
            assert cycles(served) == 1
            copied = served.metric("regsync_tags_total", rule="ev", outcome="copied")
            assert copied == 2 * mine  # its first cycle, then its events: nothing twice
            assert served.stop() == 0, served.log()
    finally:
        for served in replicas:
            served.__exit__(None, None, None)


def test_an_event_goes_through_the_cycle_s_executor_platform_subsets_included(
    tmp_path: Path, registry_factory: RegistryFactory, dest_registry: Registry
) -> None:
    """A multi-arch push under a `platforms:` rule lands as the same subset a cycle makes
    (only the wanted child copied), and `check` then finds the tag in sync."""
    port = free_port()
    src = notifying(registry_factory, port)
    push(src, "team/app", "0", image("zero", layers=1))
    extra = ", platforms: [linux/arm64]"
    config = events_config(
        tmp_path, src, dest_registry, rule(src, dest_registry, "team/*", extra=extra)
    )
    amd = Image.oci([Blob.random(700, seed="amd")], "linux/amd64")
    arm = Image.oci([Blob.random(800, seed="arm")], "linux/arm64")
    index = Index.oci([amd, arm])
    with Served(config, tmp_path, port=port) as served:
        wait_for(served.ready, "the first cycle")
        push(src, "team/app", "multi", index)
        digest = wait_for(
            dest_digest(dest_registry, "mirror/team/app", "multi"), "the event's copy"
        )
        _, raw = dest_registry.manifest("mirror/team/app", digest)
        children = [m["digest"] for m in json.loads(raw)["manifests"]]
        assert children == [arm.digest] and digest != index.digest  # the subset, as a cycle
        assert not dest_registry.blob_exists("mirror/team/app", amd.blobs[0].digest)
        assert cycles(served) == 1
        assert served.rule("ev")["events"] == {"pending": 0, "cycle_requested": False}
        assert served.stop() == 0, served.log()
    summary = regsync_json("check", config)
    assert summary.code == 0 and summary.rule["tags"]["failed"] == 0, summary
