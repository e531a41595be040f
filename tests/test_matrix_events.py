"""The combination matrix, part 3: event-triggered sync. {no auth, htpasswd over TLS, token} x
{one repository, a glob of two} x {prune off, prune on}.

The source registry of each auth kind sends its notifications to one `serve` port; each cell
runs `serve` there with an hourly rule, pushes a new tag (the event copies it), deletes a tag
at the source (its cycle removes it where the rule prunes, and keeps it where not), and checks
digests, blobs, the cycles counted and that `check` then finds nothing to do.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import (
    Blob,
    Image,
    Manifest,
    TlsFiles,
    free_port,
    push,
    regsync_json,
    write_config,
)
from tests.support.matrix import AUTH_KINDS, PASSWORD, USER, Pair, running_pair
from tests.support.observe import Served, wait_for
from tests.support.registry import notifications
from tests.support.servers import TokenServer

pytestmark = pytest.mark.integration

TOKEN = "matrix-events-token-0123456789"


@dataclass(frozen=True)
class EventPair:
    pair: Pair
    serve_port: int  # where the source registry sends its events


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenServer]:
    server = TokenServer(tmp_path_factory.mktemp("tokens"), {USER: PASSWORD})
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module", params=AUTH_KINDS)
def pair(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    tls_ca: TlsFiles,
    tokens: TokenServer,
) -> Iterator[EventPair]:
    serve_port, src_port = free_port(), free_port()
    options = {
        "port": src_port,
        "extra_config": notifications(src_port, ("regsync", serve_port), token=TOKEN),
    }
    workdir = tmp_path_factory.mktemp(f"events-{request.param}")
    with running_pair(request.param, workdir, tls_ca, tokens, options) as started:
        yield EventPair(started, serve_port)


def config_text(pair: Pair, source: str, prune: bool) -> str:
    registries = pair.registries_yaml().replace(
        f'  "{pair.src.host}": {{', f'  "{pair.src.host}": {{notifications: {{token: {TOKEN}}}, '
    )
    src, dst = pair.src.host, pair.dst.host
    rule = (
        f'  - {{name: ev, source: "{src}/{source}", destination: "{dst}/mirror",'
        f" interval: 1h, prune: {str(prune).lower()}}}\n"
    )
    return f"version: 1\n{registries}rules:\n{rule}"


def small(seed: str) -> Manifest:
    return Image.docker([Blob.random(3_000, seed=f"{seed}-a"), Blob.random(2_000, seed=seed)])


def cycles(served: Served) -> float:
    return sum(
        served.metric("regsync_sync_runs_total", rule="ev", result=r) or 0
        for r in ("success", "partial", "failed")
    )


def blobs_in_place(pair: Pair, repo: str, image: Manifest) -> bool:
    return all(pair.dst.blob_exists(repo, b.digest) for m in image.walk() for b in m.blobs)


@pytest.mark.parametrize("prune", [False, True], ids=["keep", "prune"])
@pytest.mark.parametrize("shape", ["one", "glob"])
def test_events_cell(tmp_path: Path, pair: EventPair, shape: str, prune: bool) -> None:
    p = pair.pair
    ns = f"ev-{shape}-{'prune' if prune else 'keep'}"
    repos = [f"{ns}/app"] if shape == "one" else [f"{ns}/a", f"{ns}/b"]
    first = {(r, t): push(p.src, r, t, small(f"{r}:{t}")) for r in repos for t in ("1", "2", "3")}
    source = repos[0] if shape == "one" else f"{ns}/*"
    config = write_config(tmp_path, config_text(p, source, prune))
    with Served(config, tmp_path, port=pair.serve_port) as served:
        wait_for(served.ready, "the first cycle")
        for (repo, tag), pushed in first.items():
            assert p.dst.manifest_digest(f"mirror/{repo}", tag) == pushed.digest
        fresh = {r: small(f"{r}:4") for r in repos}
        pushed4 = {r: push(p.src, r, "4", image) for r, image in fresh.items()}
        for repo, pushed in pushed4.items():
            wait_for(
                lambda r=repo, d=pushed.digest: p.dst.manifest_digest(f"mirror/{r}", "4") == d,
                f"the event to copy {repo}:4",
            )
            assert blobs_in_place(p, f"mirror/{repo}", fresh[repo])
        assert cycles(served) == 1  # the events copied them, not a cycle
        gone = repos[-1]
        path, scope = (
            f"/v2/{gone}/manifests/{first[(gone, '3')].digest}",
            f"repository:{gone}:pull,push,delete",
        )
        p.src.expect("DELETE", path, 202, scope=scope)
        if prune:
            wait_for(lambda: p.dst.tags(f"mirror/{gone}") == ["1", "2", "4"], "the prune")
        else:  # the delete's cycle runs too, and keeps the tag
            wait_for(lambda: cycles(served) == 2, "the delete's cycle")
            assert p.dst.tags(f"mirror/{gone}") == ["1", "2", "3", "4"]
        wait_for(lambda: cycles(served) == 2, "the delete's cycle, once")
        refused = served.metric("regsync_events_total", registry=p.src.host, outcome="refused")
        failed = served.metric("regsync_events_total", registry=p.src.host, outcome="failed")
        assert refused == 0 and failed == 0
        assert served.stop() == 0, served.log()
    summary = regsync_json("check", config)
    assert summary.code == 0, summary
