"""registries.NAME.hostname (one server under another name) and registries.HOST.path_prefix
(repositories below a path at the server), as source, destination and mirror, against real
`docker-registry` instances."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from regsync.backends.pool import BackendPool
from regsync.backends.registry.hub import HUB_API_URL
from regsync.config import parse_config
from regsync.errors import ConfigError
from tests.support import (
    FAST_RETRIES,
    Blob,
    Image,
    Registry,
    RegistryFactory,
    free_port,
    push,
    regsync_json,
    write_config,
)

pytestmark = pytest.mark.integration


def _seed(src: Registry) -> dict[str, str]:
    """Two images under `up/` sharing a layer, and one repository outside the prefix."""
    shared = Blob.random(3000, seed="alias-shared")
    images = {
        repo: Image.oci([shared, Blob.random(900, seed=f"alias-{repo}")])
        for repo in ("team/app", "team/lib")
    }
    push(src, "other/x", "1", Image.oci([Blob.random(500, seed="alias-other")]))
    return {repo: push(src, f"up/{repo}", "1", image).digest for repo, image in images.items()}


def test_a_source_alias_with_a_path_prefix_lists_and_reads_below_the_prefix(
    tmp_path: Path, registry_factory: RegistryFactory
) -> None:
    src, dst = registry_factory(), registry_factory()
    digests = _seed(src)
    config = write_config(
        tmp_path,
        f"""
        version: 1
        registries:
          upstream.test:
            hostname: "{src.host}"
            tls: http
            path_prefix: up
          "{dst.host}": {{tls: http}}
        rules:
          - {{name: r, source: "upstream.test/team/*", destination: "{dst.host}/m"}}
        """,
    )
    once = regsync_json("once", config)
    assert once.code == 0, once.stderr
    assert once.rule["repos"] == 2 and once.rule["tags"]["copied"] == 2, once.rule
    assert {r: dst.manifest_digest(f"m/team/{r.split('/')[1]}", "1") for r in digests} == digests
    assert sorted(dst.catalog()) == ["m/team/app", "m/team/lib"]  # nothing outside up/


def test_a_destination_alias_with_a_path_prefix_writes_and_mounts_below_it(
    tmp_path: Path, registry_factory: RegistryFactory
) -> None:
    src, dst = registry_factory(), registry_factory()
    digests = _seed(src)
    config = write_config(
        tmp_path,
        f"""
        version: 1
        registries:
          "{src.host}": {{tls: http}}
          vault.test:
            hostname: "{dst.host}"
            tls: http
            path_prefix: vault
        rules:
          - {{name: r, source: "{src.host}/up/team/*", destination: "vault.test/m"}}
        """,
    )
    once = regsync_json("once", config)
    assert once.code == 0, once.stderr
    r = once.rule
    assert r["tags"]["copied"] == 2 and r["blobs"]["mounted"] == 1, r  # the shared layer
    for repo, digest in digests.items():
        assert dst.manifest_digest(f"vault/m/up/{repo}", "1") == digest
    assert sorted(dst.catalog()) == ["vault/m/up/team/app", "vault/m/up/team/lib"]
    again = regsync_json("once", config)
    assert again.code == 0 and again.rule["tags"]["up_to_date"] == 2, again.rule


def test_a_mirror_alias_with_a_path_prefix_serves_when_the_primary_is_down(
    tmp_path: Path, registry_factory: RegistryFactory
) -> None:
    src, dst = registry_factory(), registry_factory()
    digests = _seed(src)
    primary = f"127.0.0.1:{free_port()}"
    config = write_config(
        tmp_path,
        f"""
        version: 1
        registries:
          "{primary}": {{tls: http, mirrors: [cache.test]}}
          cache.test: {{hostname: "{src.host}", tls: http, path_prefix: up}}
          "{dst.host}": {{tls: http}}
        rules:
          - {{name: r, source: "{primary}/team/app", destination: "{dst.host}"}}
        """,
    )
    once = regsync_json("once", config, env=FAST_RETRIES)
    assert once.code == 0, once.stderr
    assert dst.manifest_digest("team/app", "1") == digests["team/app"]
    assert "reading from mirror cache.test" in once.stderr


def test_two_names_for_one_server_cannot_both_write_one_repository() -> None:
    text = """
version: 1
registries:
  a.test: {hostname: "real.test:5000", path_prefix: mirror}
  b.test: {hostname: "real.test:5000"}
rules:
  - {name: one, source: docker.io/team/app, destination: a.test}
  - {name: two, source: docker.io/team/app, destination: b.test/mirror}
"""
    with pytest.raises(ConfigError) as info:
        parse_config(text, env={})
    assert "rule 'two' and rule 'one' (line 7) can both write" in str(info.value)


async def test_an_alias_of_docker_hub_keeps_docker_hubs_ways() -> None:
    """`hostname: docker.io` under another name (another login): its requests go to Docker
    Hub's registry, its namespaces are listed through the Hub API, and its GETs count as
    pulls (HEAD first). Nothing is sent: the pool only builds the clients."""
    config = parse_config(
        """
version: 1
registries:
  hub-ci.test: {hostname: docker.io, credentials: {username: ci, password: p}}
rules:
  - {name: r, source: hub-ci.test/team/*, destination: registry.local:5000}
""",
        env={},
    )
    assert config.served_host("hub-ci.test") == "docker.io"
    assert config.served_host("registry.local:5000") == "registry.local:5000"
    async with aiohttp.ClientSession() as session:
        pool = BackendPool(session, config, logins=lambda host, settings: None)
        client = pool.registry("hub-ci.test")
        assert str(client.transport.base_url) == "https://registry-1.docker.io"
        assert client.name == "hub-ci.test"
        hub = pool.hub("hub-ci.test")
        assert hub is not None and str(hub.transport.base_url) == HUB_API_URL
        assert pool.hub("registry.local:5000") is None
